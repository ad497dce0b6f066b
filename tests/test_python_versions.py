"""The Python versions the package declares are the ones tested.

The whole suite runs on the interpreter that runs it (3.11 in CI, with every extra). This
test runs the core suite (every test that needs no model engine or training: ``-m "not
slow"``) on each other interpreter ``scripts/install.sh`` prepared an environment for
(``.venv-3.12``, ``.venv-3.13``: pyenv's interpreters, with the extras that install there),
both at once, and checks that the classifiers name exactly the versions tested.
"""

from __future__ import annotations

import subprocess
import time
import tomllib
from pathlib import Path

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


@pytest.mark.slow
def test_the_core_suite_passes_on_the_other_pythons(tmp_path: Path) -> None:
    venvs = {v: ROOT / f".venv-{v}" / "bin" / "python" for v in OTHERS}
    missing = [v for v, py in venvs.items() if not py.exists()]
    if len(missing) == len(venvs):
        pytest.skip("no .venv-3.12 / .venv-3.13: scripts/install.sh makes them where "
                    "pyenv has those interpreters")
    assert not missing, f"scripts/install.sh made environments for some versions only: {missing}"
    runs = {}
    for v, py in venvs.items():
        log = (tmp_path / f"core-{v}.log").open("w")
        runs[v] = (subprocess.Popen(
            [str(py), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
             "not slow and not heavy", "-o", "addopts=-p no:codspeed"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
    deadline = time.monotonic() + 1500
    failed = []
    for v, (proc, log) in runs.items():
        try:
            code = proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
        text = (tmp_path / f"core-{v}.log").read_text()
        if code != 0:
            failed.append(f"Python {v} (exit {code}):\n{text[-3000:]}")
        else:
            assert " passed" in text.splitlines()[-1], text[-500:]
    assert not failed, "\n\n".join(failed)
