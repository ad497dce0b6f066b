"""No engine outlives its owner: each kind, ended each way, checked from outside.

A real owner process (tests/lifecycle_owner.py) starts an engine or server, makes a call
and is then ended: ``close()`` while it lives on, a normal exit, an uncaught exception,
SIGINT, SIGTERM (default action: no Python runs) and SIGKILL. Every process that
descended from it must be gone (the warden included), and the memory they held back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from suite_report import still_running

OWNER = Path(__file__).with_name("lifecycle_owner.py")
ROOT = OWNER.parent.parent
ALL_WAYS = ["close", "exit", "raise", "sigint", "sigterm", "sigkill"]


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _anonymous(procs: list[psutil.Process]) -> int:
    """Anonymous memory (heap, KV cache, weights read into RAM): what comes back to
    ``available`` when a process ends (file pages stay cached, available either way)."""
    total = 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/smaps_rollup", "rb") as f:
                total += sum(int(line.split()[1]) * 1024 for line in f
                             if line.startswith(b"Anonymous:"))
        except OSError:
            continue
    return total


def _shared_memory() -> int:
    """Bytes in POSIX shared memory (``/dev/shm``): what an engine's processes can leave
    behind once they have all ended (their own memory the kernel frees with them)."""
    total = 0
    for f in Path("/dev/shm").glob("*"):
        with contextlib.suppress(OSError):
            total += f.stat().st_size if f.is_file() else 0
    return total


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _wait_line(proc: subprocess.Popen[str], want: str, deadline_s: float) -> None:
    assert proc.stdout is not None
    end = time.monotonic() + deadline_s
    seen = []
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.strip() == want:
            return
    proc.kill()
    out = "".join(seen)[-3000:]
    raise AssertionError(f"the owner never printed {want}; it said:\n{out}")


def end_owner(kind: str, way: str, model: str, *, start_s: float, end_s: float = 45) -> None:
    """Runs one owner of ``kind`` and ends it ``way``; fails if anything it started lives
    on, or leaves shared memory behind."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    shm_before = _shared_memory()
    proc = subprocess.Popen(
        [sys.executable, str(OWNER), kind, "close" if way == "close" else
         way if way in ("exit", "raise") else "wait", model],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, start_new_session=True)  # our own signals only, never the suite's
    started: list[psutil.Process] = []
    try:
        _wait_line(proc, "READY", start_s)
        started = _tree(proc.pid)
        # The warden, and multiprocessing's resource tracker (the owner's own helper, not
        # the engine's), end with the owner, not with close().
        wardens = {p.pid for p in started if "_warden.py" in _cmdline(p)
                   or "multiprocessing.resource_tracker" in _cmdline(p)}
        assert started or kind == "llama", f"{kind}: the owner started no process"
        held = _anonymous([*started, psutil.Process(proc.pid)])
        if way == "close":
            _wait_line(proc, "CLOSED", end_s)
            engines = [p for p in started if p.pid not in wardens]
            left = still_running(engines, end_s)
            assert not left, f"{kind}: close() returned with these still running: {left}"
            assert proc.poll() is None  # the owner itself lives on
            assert proc.stdin is not None
            proc.stdin.close()
        elif way in ("sigint", "sigterm", "sigkill"):
            os.kill(proc.pid, {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM,
                               "sigkill": signal.SIGKILL}[way])
        proc.wait(timeout=end_s)
        left = still_running(started, end_s)
        assert not left, f"{kind} ended by {way}: still running afterwards: {left}"
        # Every process ended, so the kernel has their memory back; what could outlive
        # them is shared memory they made. (The machine's available memory, compared
        # before and after, moved with the suites running beside this one.)
        grown = _shared_memory() - shm_before
        assert grown < 64 << 20, (kind, way, "shared memory grew by MiB", grown >> 20,
                                  "the owner's tree held MiB", held >> 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in started:  # whatever a failed check left (psutil guards PID reuse)
            with contextlib.suppress(psutil.Error):
                p.kill()


@pytest.mark.slow
@pytest.mark.parametrize("way", ALL_WAYS)
def test_llama_cpp_in_process_ends_with_its_owner(way: str, gguf_path: Path) -> None:
    end_owner("llama", way, str(gguf_path), start_s=120)


@pytest.mark.slow
@pytest.mark.parametrize("way", ALL_WAYS)
def test_llama_cpp_server_ends_with_its_owner(way: str, gguf_path: Path) -> None:
    end_owner("llama-server", way, str(gguf_path), start_s=120)


# vLLM engines take about a minute to start here, so these take the two ends: close(),
# and a death that runs no Python (SIGKILL; SIGTERM's default action is the same path).
# The exits that run Python (normal, exception, SIGINT) share the exit hook that the
# llama.cpp tests above check every way.
@pytest.mark.slow
@pytest.mark.parametrize("way", ["close", "sigkill"])
def test_vllm_engine_ends_with_its_owner(way: str, hf_model_dir: Path) -> None:
    pytest.importorskip("vllm")
    end_owner("vllm", way, str(hf_model_dir), start_s=300, end_s=60)


@pytest.mark.slow
@pytest.mark.parametrize("way", ["sigterm"])
def test_vllm_server_ends_with_its_owner(way: str, hf_model_dir: Path) -> None:
    pytest.importorskip("vllm")
    end_owner("vllm-server", way, str(hf_model_dir), start_s=400, end_s=60)


@pytest.mark.slow
@pytest.mark.parametrize("way", ["close", "sigkill"])
def test_ray_cluster_ends_with_its_owner(way: str, fault) -> None:
    pytest.importorskip("ray")
    end_owner("ray", way, fault.base_url, start_s=180, end_s=60)
