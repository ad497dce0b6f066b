"""Writes ``docs/assets/viewer.png``: the page ``aft view`` makes of a 3x2 run.

    python scripts/view_screenshot.py

The run is real: three priced proposers and a priced aggregator on our scriptable
OpenAI-compatible server (one proposer fails, the others write different drafts), width 3,
depth 2. The page is opened from disk in headless Chromium (Debian's chromium and
chromium-driver) with the word differences shown.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "assets" / "viewer.png"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' browser helper


def main() -> None:
    from aft_sdk import AggregateGraph
    from aft_sdk.testing import FaultServer
    from aft_sdk.view import view
    from browser import _browser

    with FaultServer() as srv, tempfile.TemporaryDirectory() as tmp:
        price = {"input": 0.15, "output": 0.60}
        proposers = [srv.backend(m, price=price) for m in ("gpt-4o-mini", "llama-3-8b", "qwen-7b")]
        srv.script("gpt-4o-mini", ["say:Paris is the capital of France. It sits on the Seine."])
        srv.script("llama-3-8b", ["500"])
        srv.script("qwen-7b", ["say:The capital of France is Paris, its largest city."])
        aggregator = srv.backend("aft-8b", price={"input": 0.05, "output": 0.10})
        srv.script("aft-8b", ["say:Paris is the capital of France, on the Seine.",
                              "say:The capital of France is Paris, its largest city.",
                              "say:The capital of France is Paris, on the Seine.",
                              "say:The capital of France is Paris, on the Seine."])
        result = AggregateGraph(proposers, aggregator, width=3, depth=2).invoke(
            "What is the capital of France? Answer in one sentence.")
        run = Path(tmp) / "run.json"
        run.write_text(json.dumps(result.model_dump(mode="json"), indent=2))
        page = view(run)
        driver = _browser(1200, 900)
        try:
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            driver.get(page.resolve().as_uri())
            driver.find_element("id", "show-diff").click()
            shot = Path(tmp) / "viewer.png"
            driver.save_screenshot(str(shot))
        finally:
            driver.quit()
        OUT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, OUT)
    print(f"{OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
