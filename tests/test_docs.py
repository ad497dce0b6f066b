"""The documentation cannot drift: the site builds strictly, the reference lists every
public name, every Python and shell block of the README and the site runs as a user types
it (or says why it cannot), and the built site renders in a real browser.

Blocks run in a process whose environment holds none of the suite's settings (no
``VLLM_CPU_KVCACHE_SPACE``, no ``AFT_TEST_*``): a user's shell, plus ``OPENAI_BASE_URL``
and ``OPENAI_API_KEY`` naming our scriptable OpenAI-compatible server, so an example with
``OpenAIBackend("gpt-4o-mini")`` runs against it. All runnable blocks of one page run in
order in one interpreter (Python blocks share a namespace, shell blocks run in the same
temporary folder), as a reader working through the page would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import early
from browser import _browser
from suite_report import MARK
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash",
             "shell": "bash"}
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(.+?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    not_run: str | None


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the reason above any not run."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        reason = NOT_RUN.match(lines[start - 1]) if start else None
        code = textwrap.dedent("\n".join(body)) if indent else "\n".join(body)
        found.append(Block(str(path.relative_to(ROOT)), start + 1, lang, code + "\n",
                           reason.group(1) if reason else None))
    return found


def runnable(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang in RUN_LANGS and b.not_run is None]


def test_every_shell_and_python_block_runs_or_says_why_not() -> None:
    unmarked_elsewhere = []
    for path in pages():
        for b in blocks(path):
            if b.lang == "" and b.code.strip():
                unmarked_elsewhere.append(f"{b.page}:{b.line} (a block with no language)")
            if b.not_run is not None and len(b.not_run) < 8:
                unmarked_elsewhere.append(f"{b.page}:{b.line} (a reason that says nothing)")
    assert not unmarked_elsewhere, (
        "give each block a language (```python, ```bash, ```text, ```yaml) and each block "
        "that cannot run here a reason (<!-- not run: ... --> on the line above): "
        + ", ".join(unmarked_elsewhere))
    total = sum(len(runnable(p)) for p in pages())
    assert total >= 10, f"only {total} runnable blocks: the docs' examples are not tested"


DRIVER = r'''
import json, os, subprocess, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for b in blocks:
    where = f"{b['page']}:{b['line']}"
    print(f"--- block {where} ({b['lang']})", flush=True)
    if b["lang"] == "python":
        try:
            exec(compile(b["code"], where, "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"BLOCK FAILED: {where}", flush=True)
            sys.exit(1)
    else:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", b["code"]])
        if r.returncode:
            print(f"BLOCK FAILED: {where} (exit {r.returncode})", flush=True)
            sys.exit(1)
    sys.stdout.flush()
'''


def user_env(base_url: str) -> dict[str, str]:
    """A user's shell: no suite settings; the example API endpoint is our server."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "PYENV_ROOT",
            "PYENV_VERSION", "HF_HOME")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    bindir = str(Path(sys.executable).parent)  # where `aft` is installed
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-docs-test")
    # Not a setting: the mark that tells this run's processes from another run's (the
    # core suites run beside this one and check for leftovers of their own).
    env[MARK] = os.environ.get(MARK, "")
    return env


PAGES_WITH_RUNS = [p for p in pages() if runnable(p)]


def start_page_runs() -> dict[Path, Future]:
    """Every page's examples, three pages at a time (most wait on our server or on a
    process starting, not on the CPU); each page in its own interpreter and folder.
    Started as soon as collection ends, beside the suite (tests/early.py)."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from aft_sdk.testing.fault_server import FaultServer

    api = FaultServer().__enter__()  # the examples' OpenAI-compatible endpoint
    pool = ThreadPoolExecutor(3)
    root = Path(tempfile.mkdtemp(prefix="aft-docs-examples-"))

    def run(page: Path, tmp: Path) -> subprocess.CompletedProcess:
        todo = tmp / "blocks.json"
        todo.write_text(json.dumps([b.__dict__ for b in runnable(page)]))
        work = tmp / "work"
        work.mkdir()
        proc = early.popen([sys.executable, "-c", DRIVER, str(todo)],
                           cwd=work, env=user_env(api.base_url), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    runs = {}
    for i, page in enumerate(PAGES_WITH_RUNS):
        (root / str(i)).mkdir()
        runs[page] = pool.submit(run, page, root / str(i))
    pool.shutdown(wait=False)
    early.CLOSE.append(lambda: api.__exit__(None, None, None))
    early.CLOSE.append(lambda: shutil.rmtree(root, ignore_errors=True))
    return runs


@pytest.fixture(scope="module")
def page_runs() -> dict[Path, Future]:
    return early.take(start_page_runs)


@pytest.mark.slow
@pytest.mark.early("start_page_runs")
@pytest.mark.parametrize("page", PAGES_WITH_RUNS,
                         ids=[str(p.relative_to(ROOT)) for p in PAGES_WITH_RUNS])
def test_the_examples_of_a_page_run_as_a_user_types_them(page: Path, page_runs) -> None:
    r = page_runs[page].result(timeout=900)
    assert r.returncode == 0, (r.stdout[-4000:] + "\n" + r.stderr[-4000:])


@pytest.mark.needs("train")
def test_the_reference_lists_every_public_name_and_is_current() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_reference
    finally:
        sys.path.pop(0)
    missing = []
    for page, names in docs_reference.public_names().items():
        text = (ROOT / "docs" / "reference" / page).read_text()
        missing += [n for n in names if f"## {n.rsplit('.', 1)[1]}\n" not in text]
    assert not missing, f"not in the reference: {missing}; run python scripts/docs_reference.py"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_reference.py"),
                        "--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                       cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, "mkdocs build --strict failed:\n" + r.stderr[-6000:]
    return out


def test_the_site_builds_strictly_with_every_page_in_the_nav(site: Path) -> None:
    import yaml

    def listed(nav) -> list[str]:
        out = []
        for item in nav:
            for value in (item.values() if isinstance(item, dict) else [item]):
                out += listed(value) if isinstance(value, list) else [value]
        return out

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))
    in_nav = set(listed(config["nav"]))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == in_nav, f"pages not in the nav: {on_disk - in_nav}"
    assert (site / "reference" / "aft_sdk" / "index.html").exists()


def test_the_site_renders_and_navigates_in_a_real_browser(site: Path, tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    from selenium.webdriver.common.by import By

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{httpd.server_address[1]}/"
    driver = _browser()
    try:
        driver.get(root)
        assert driver.title.startswith("aft-sdk"), driver.title
        assert "propose" in driver.find_element(By.TAG_NAME, "article").text.lower()
        shot = tmp_path / "home.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        # Through the navigation, as a reader: the reference of the main package.
        link = next(a for a in driver.find_elements(By.CSS_SELECTOR, "nav a")
                    if a.get_attribute("href").rstrip("/").endswith("reference/aft_sdk"))
        driver.get(link.get_attribute("href"))
        article = driver.find_element(By.TAG_NAME, "article")
        assert "AggregateGraph" in article.text and "width" in article.text
        assert driver.find_elements(By.CSS_SELECTOR, "article .doc-signature, article code")
        # Nothing failed to load: the site asks no other host for anything (fonts included).
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
        httpd.shutdown()
        httpd.server_close()
