"""``aft serve`` reloads its configs without a restart: on SIGHUP and on an authenticated
``POST /admin/reload``; a stream in flight finishes on the old graph, the next request
goes to the new one, and a broken config leaves the old one serving."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi", reason="needs pip install 'aft-sdk[serve]'")

import httpx  # noqa: E402

from aft_sdk.testing import LocalServer  # noqa: E402

KEY = "reload-test-key-4"


def _write(path: Path, base_url: str, aggregator: str) -> None:
    path.write_text("\n".join([
        "name: pa", "width: 2", "depth: 1", "proposers:",
        f"  - {{type: openai, model: p, base_url: '{base_url}', max_retries: 0}}",
        "aggregator:",
        f"  - {{type: openai, model: {aggregator}, base_url: '{base_url}', max_retries: 0}}",
    ]) + "\n")


def _answer(c: openai.OpenAI) -> str:
    r = c.chat.completions.create(model="pa", messages=[{"role": "user", "content": "hi"}])
    return r.choices[0].message.content


def _until(check, seconds: float = 15) -> None:
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            raise AssertionError("the server never switched")
        time.sleep(0.05)


def test_sighup_and_the_admin_route_reload_the_configs(fault_server, tmp_path) -> None:
    fault_server.reset()
    config = tmp_path / "pa.yaml"
    _write(config, fault_server.base_url, "old-agg")
    with LocalServer.aft_serve([config], env={"AFT_TEST_KEYS": KEY},
                               extra_args=["--api-key-env", "AFT_TEST_KEYS"]) as served:
        c = openai.OpenAI(base_url=served.base_url, api_key=KEY, max_retries=0)
        assert "from old-agg" in _answer(c)
        # A stream in flight when the configs change finishes on the graph it started on.
        fault_server.delay_s = 0.8
        pieces: list[str] = []

        def stream() -> None:
            for chunk in c.chat.completions.create(
                    model="pa", stream=True, messages=[{"role": "user", "content": "slow"}]):
                pieces.extend(ch.delta.content or "" for ch in chunk.choices)

        sent = fault_server.count("p")
        t = threading.Thread(target=stream)
        t.start()
        # Its drafts reached the upstream: it runs on the graph it started on.
        _until(lambda: fault_server.count("p") >= sent + 2)
        _write(config, fault_server.base_url, "new-agg")
        os.kill(served.proc.pid, signal.SIGHUP)
        t.join(timeout=20)
        fault_server.delay_s = 0.0
        assert "from old-agg" in "".join(pieces)
        _until(lambda: "from new-agg" in _answer(c))
        # A broken config: the reload says why, and the new-agg graph keeps serving.
        config.write_text("name: pa\nwidth: 0\n")
        admin = served.base_url.removesuffix("/v1") + "/admin/reload"
        assert httpx.post(admin).status_code == 401
        failed = httpx.post(admin, headers={"Authorization": f"Bearer {KEY}"})
        assert failed.status_code == 400
        message = failed.json()["error"]["message"]
        assert "old configs keep serving" in message and "width" in message
        os.kill(served.proc.pid, signal.SIGHUP)  # the same by signal: logged, still serving
        _until(lambda: Path(served.log_path).read_text().count("reload failed") >= 2)
        assert served.proc.poll() is None and "from new-agg" in _answer(c)
        _write(config, fault_server.base_url, "third-agg")
        ok = httpx.post(admin, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["models"] == ["pa"]
        assert "from third-agg" in _answer(c)
    fault_server.reset()
