"""What the test run cost: peak memory, wall time per test file, processes left behind.

The suite shares 2 cores and 24 GiB with every engine it starts; this report, printed
at the end of every run (CI included), shows whether it still fits:

- peak memory of the whole process tree (pytest, its servers, engines, recipe runs),
  as the sum of proportional set sizes (shared pages counted once), and the peak of the
  machine's memory in use (what the kernel's OOM killer looks at), sampled every second;
- wall time per test file (setup, call and teardown of its tests);
- every process the suite started that still runs when it ends (a failure).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import defaultdict

import psutil
import pytest

MARK = "AFT_SUITE_RUN"
#: Set for a run started by another run (beside it): see ``SuiteReport._ours``.
NESTED = "AFT_SUITE_NESTED"

# What an engine, a server or a cluster of ours looks like in a process list.
OURS = ("vllm", "VLLM", "EngineCore", "llama_cpp", "aft_sdk", "ray::", "raylet", "gcs_server",
        "langgraph", "recipes/")


def _pss(proc: psutil.Process) -> int:
    """Proportional set size from smaps_rollup (cheap), else RSS."""
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


def still_running(procs: list[psutil.Process], wait_s: float) -> list[str]:
    """Waits up to ``wait_s`` for ``procs`` to exit; those still running (zombies are
    not), described."""
    _, alive = psutil.wait_procs(procs, timeout=wait_s)
    found = []
    for proc in alive:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append(f"{proc.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline()[:5])}")
        except psutil.Error:
            continue
    return found


class SuiteReport:
    """Samples memory in a thread; sums test durations per file."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.per_file: dict[str, float] = defaultdict(float)
        self.peak_tree = 0
        self.peak_used = 0
        self.peak_at = ""
        self.base_used = 0
        self.t0 = 0.0
        self.current = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._before: set[int] = set()
        self.mark = uuid.uuid4().hex
        self.nested = bool(os.environ.get(NESTED))

    def start(self) -> None:
        os.environ[MARK] = self.mark  # every process the suite starts inherits it
        self.t0 = time.time()
        self._before = set(psutil.pids())
        mem = psutil.virtual_memory()
        self.base_used = mem.total - mem.available
        self._thread = threading.Thread(target=self._sample, name="suite-memory", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.interval_s):
            tree = _pss(me) + sum(_pss(p) for p in me.children(recursive=True))
            mem = psutil.virtual_memory()
            if tree > self.peak_tree:
                self.peak_tree, self.peak_at = tree, self.current
            self.peak_used = max(self.peak_used, mem.total - mem.available)

    def add(self, report: pytest.TestReport) -> None:
        path = report.nodeid.split("::")[0]
        self.per_file[path] += report.duration
        self.current = report.nodeid

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def leftovers(self, wait_s: float = 20.0) -> list[str]:
        """Processes of ours started during the run and still running (after giving
        closing engines ``wait_s`` to exit). This process's own warden is not one."""
        from aft_sdk.lifecycle import warden_pid

        mine = {os.getpid(), warden_pid()}
        suspects = []
        for proc in psutil.process_iter(["pid", "cmdline", "name", "create_time"]):
            if proc.pid in self._before or proc.pid in mine:
                continue
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
            if (proc.info["create_time"] or 0) >= self.t0 - 1 and any(k in text for k in OURS) \
                    and self._ours(proc):
                suspects.append(proc)
        return still_running(suspects, wait_s)

    def _ours(self, proc: psutil.Process) -> bool:
        """Started by this run (its environment carries the run's mark), not by another
        run on the same machine; a process whose environment is unreadable, or carries no
        mark, counts, except in a run nested in another (the core suites beside the whole
        suite: :data:`NESTED`), which counts only its own marked processes."""
        try:
            mark = proc.environ().get(MARK)
        except psutil.Error:
            return not self.nested
        return mark == self.mark or (mark is None and not self.nested)

    def summary(self) -> list[str]:
        gib = 1024 ** 3
        lines = [
            "", "== suite cost " + "=" * 60,
            f"peak memory, process tree (PSS): {self.peak_tree / gib:.1f} GiB "
            f"(during {self.peak_at or 'setup'})",
            f"peak memory in use on the machine: {self.peak_used / gib:.1f} GiB "
            f"({self.base_used / gib:.1f} GiB in use before the run)",
            f"wall time: {(time.time() - self.t0) / 60:.1f} min; per test file:",
        ]
        for path, secs in sorted(self.per_file.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {secs:8.1f} s  {path}")
        return lines
