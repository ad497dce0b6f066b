"""Processes that aft-sdk starts end with the process that started them.

An in-process vLLM engine runs in child processes (``EngineCore`` and its workers), a
:class:`~aft_sdk.testing.LocalServer` is a child process with children of its own, and
``ray.init()`` starts a local cluster. Left alone, each outlives an owner that is ended
by SIGTERM (a ``timeout``, a job scheduler, a supervisor) or SIGKILL, and holds gigabytes
until someone kills it by hand. Three layers make sure it does not:

1. ``close()`` / ``aclose()`` / a ``with`` block end an owner's processes on request
   (:meth:`Owned.end`: ask them to stop, wait, then kill what lingers).
2. At a normal exit, or an exit by an uncaught exception or Ctrl-C, an ``atexit`` hook
   ends whatever is still open.
3. For deaths that run no Python at all (SIGTERM's default action, SIGKILL, a crash), a
   small *warden* process (``python -m aft_sdk._warden``), started with the first owned
   process, watches its parent. When the parent is gone it ends every process it was
   told about, children first. It lives in a session of its own, so Ctrl-C in a terminal
   or a signal to the process group does not take it down before it has done so.

Library code marks what it starts with :func:`adopting` (children that appear while a
block runs, for engines that spawn their own processes) or :func:`own` (a known PID).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator

import psutil

logger = logging.getLogger(__name__)


class _Warden:
    """The watcher process of one owner process (started on first use)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the owner it was started for (a forked child needs its own)
        self._lock = threading.Lock()

    def send(self, line: str) -> None:
        with self._lock:
            if self._proc is None or self._pid != os.getpid() or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "aft_sdk._warden", str(os.getpid())],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
                self._pid = os.getpid()
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError) as e:  # never fail the caller's work for it
                logger.warning("the process warden is gone (%s); processes started from "
                               "now on end only with close() or a normal exit", e)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


_WARDEN = _Warden()
_OPEN: weakref.WeakSet[Owned] = weakref.WeakSet()


def warden_pid() -> int | None:
    """The PID of this process's warden, if one was started (for tests)."""
    return _WARDEN.pid


class Owned:
    """Processes (each with its descendants) that one owner started and must end.

    Args:
        label: What they are, for log lines (``"vLLM engine for ./model"``).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.procs: list[psutil.Process] = []
        _OPEN.add(self)

    def add(self, pid: int) -> None:
        """Owns ``pid`` (and, when it ends, whatever descends from it then)."""
        try:
            proc = psutil.Process(pid)
            self.procs.append(proc)
            _WARDEN.send(f"+ {pid} {proc.create_time():.6f}")
        except psutil.NoSuchProcess:
            pass

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> list[psutil.Process]:
        """The owned processes and their descendants that still run."""
        found: dict[int, psutil.Process] = {}
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
        return list(found.values())

    def end(self, grace_s: float = 10.0) -> None:
        """Ends every owned process: SIGTERM, ``grace_s`` to exit, then SIGKILL.

        Safe to call again, and after the processes ended on their own.
        """
        procs = self.alive()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, lingering = psutil.wait_procs(procs, timeout=grace_s)
        for proc in lingering:
            logger.warning("%s: process %d did not stop in %.0fs; killing it",
                           self.label, proc.pid, grace_s)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(lingering, timeout=5)
        self.release()

    def wait(self, timeout_s: float) -> bool:
        """Waits up to ``timeout_s`` for the processes to exit by themselves."""
        _, alive = psutil.wait_procs(self.alive(), timeout=timeout_s)
        return not alive

    def release(self) -> None:
        """Forgets the processes (they ended, or their owner handed them on)."""
        for proc in self.procs:
            _WARDEN.send(f"- {proc.pid}")
        self.procs = []
        _OPEN.discard(self)


def own(pid: int, label: str) -> Owned:
    """Marks process ``pid`` (and its descendants) as ending with this process."""
    owned = Owned(label)
    owned.add(pid)
    return owned


@contextlib.contextmanager
def adopting(label: str) -> Iterator[Owned]:
    """Owns the child processes started while the block runs (for libraries, such as
    vLLM and Ray, that start their own). The warden is told before the block starts, so
    an owner killed mid-start still leaves nothing behind."""
    owned = Owned(label)
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    _WARDEN.send(f"adopt {os.getpid()}")
    try:
        yield owned
    finally:
        for child in me.children():
            if child.pid not in before and child.pid != _WARDEN.pid:
                owned.add(child.pid)
        _WARDEN.send("adopted")


def exit_on_sigterm() -> None:
    """Makes SIGTERM end this process as an exception does (``finally`` blocks and exit
    hooks run, so engines stop cleanly), where SIGTERM still has its default action.

    For command-line programs; a library does not take signals from its host.
    """
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_exit)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


_CLOSERS: list[Callable[[], None]] = []


def close_at_exit(close: Callable[[], None]) -> None:
    """Runs ``close`` (a bound method is held weakly) when the interpreter exits."""
    if hasattr(close, "__self__"):
        ref = weakref.WeakMethod(close)  # type: ignore[arg-type]

        def call() -> None:
            method = ref()
            if method is not None:
                method()

        _CLOSERS.append(call)
    else:
        _CLOSERS.append(close)


@atexit.register
def _at_exit() -> None:
    for close in reversed(_CLOSERS):
        try:
            close()
        except Exception as e:  # noqa: BLE001  (one failed close must not stop the rest)
            logger.warning("closing at exit failed: %s", e)
    for owned in list(_OPEN):
        owned.end(grace_s=5.0)
