"""The Python versions the package declares are the ones tested.

The whole suite runs on the interpreter that runs it (3.11 in CI, with every extra). This
test runs the core suite (every test that needs no model engine or training: ``-m "not
slow"``) on each other interpreter ``scripts/install.sh`` prepared an environment for
(``.venv-3.12``, ``.venv-3.13``: pyenv's interpreters, with the extras that install there),
both at once, and checks that the classifiers name exactly the versions tested. The two
runs start as soon as collection ends, beside the rest of the suite (``tests/early.py``,
with the wall-clock limits of their tests widened threefold: ``AFT_TEST_TIME_SCALE``),
so they use the share of the cores the rest of the suite leaves idle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import early
from suite_report import NESTED
import pytest

ROOT = Path(__file__).resolve().parents[1]
OTHERS = ("3.12", "3.13")


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: "
    return {c[len(prefix):] for c in project.get("classifiers", [])
            if c.startswith(prefix) and c[len(prefix):].count(".") == 1}


def test_the_classifiers_name_the_tested_versions() -> None:
    assert _declared() == {"3.11", *OTHERS}, _declared()  # 3.11: the whole suite
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"


def start_core_suites() -> dict[str, tuple[subprocess.Popen, Path]] | None:
    """Both interpreters' core suites, at once (started early: tests/early.py)."""
    venvs = {v: ROOT / f".venv-{v}" / "bin" / "python" for v in OTHERS}
    if not any(py.exists() for py in venvs.values()):
        return None
    logs = Path(tempfile.mkdtemp(prefix="aft-core-suites-"))
    early.CLOSE.append(lambda: shutil.rmtree(logs, ignore_errors=True))
    runs = {}
    for v, py in venvs.items():
        if not py.exists():
            continue
        log = logs / f"core-{v}.log"
        with log.open("w") as out:
            runs[v] = (early.popen(
                [str(py), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
                 "not slow and not heavy", "-o", "addopts=-p no:codspeed"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "AFT_TEST_TIME_SCALE": "3", NESTED: "1"}), log)
    return runs


@pytest.mark.slow
@pytest.mark.early("start_core_suites")
def test_the_core_suite_passes_on_the_other_pythons() -> None:
    runs = early.take(start_core_suites)
    if runs is None:
        pytest.skip("no .venv-3.12 / .venv-3.13: scripts/install.sh makes them where "
                    "pyenv has those interpreters")
    missing = sorted(set(OTHERS) - set(runs))
    assert not missing, f"scripts/install.sh made environments for some versions only: {missing}"
    deadline = time.monotonic() + 1500
    failed = []
    for v, (proc, log) in runs.items():
        try:
            code = proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        text = log.read_text()
        if code != 0:
            failed.append(f"Python {v} (exit {code}):\n{text[-3000:]}")
        else:
            assert " passed" in text.splitlines()[-1], text[-500:]
    assert not failed, "\n\n".join(failed)
