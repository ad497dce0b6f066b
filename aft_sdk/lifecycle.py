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
   small *warden* process (``aft_sdk/_warden.py``, run by path with only psutil),
   started with the first owned process, watches its parent. When the parent is gone it
   ends every process it was told about, children first. It lives in a session of its
   own, so Ctrl-C in a terminal or a signal to the process group does not take it down
   before it has done so. (POSIX only; on Windows layers 1 and 2 remain.)

Library code marks what it starts with :func:`adopting` (children that appear while a
block runs, for engines that spawn their own processes) or :func:`own` (a known PID).
A forked child inherits none of this: its parent's processes are not its to end.
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
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

_WARDEN_SCRIPT = Path(__file__).with_name("_warden.py")


class _Warden:
    """The watcher process of one owner process (started on first use)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._failed = False  # a warden that could not run is not started again

    def send(self, line: str) -> None:
        """Tells the warden ``line``; starts it for lines that ask it to watch."""
        if os.name == "nt" or self._failed:
            return
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                if not line.startswith(("+", "adopt ")):
                    return  # nothing to forget or close in a warden that is not running
                if self._proc is not None:
                    logger.warning("the process warden exited (code %s); starting another",
                                   self._proc.returncode)
                if not self._start():
                    return
                for owned in list(_OPEN):  # a new warden learns what is owned already
                    for proc in owned.procs:
                        self._write(f"+ {proc.pid} {_created(proc):.6f}")
            self._write(line)

    def _start(self) -> bool:
        try:  # by path, in isolated mode: it needs psutil only, not this package
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(_WARDEN_SCRIPT), str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
            return True
        except OSError as e:
            self._failed = True
            logger.warning("could not start the process warden (%s): engines end with "
                           "close() or a normal exit only", e)
            return False

    def _write(self, line: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:  # never fail the caller's work for it
            logger.warning("the process warden is gone (%s)", e)

    def forget(self) -> None:
        """In a forked child: the parent's warden is not ours."""
        self._proc, self._lock, self._failed = None, threading.Lock(), False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def _created(proc: psutil.Process) -> float:
    try:
        return proc.create_time()
    except psutil.Error:
        return 0.0


_WARDEN = _Warden()
_OPEN: weakref.WeakSet[Owned] = weakref.WeakSet()
#: One window of adoption at a time: children started meanwhile by another thread (a
#: second engine starting) would otherwise be counted as this owner's.
_ADOPTING = threading.Lock()


def warden_pid() -> int | None:
    """The PID of this process's warden, if one was started (for tests)."""
    return _WARDEN.pid


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


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
        except psutil.NoSuchProcess:
            return
        self.procs.append(proc)
        _WARDEN.send(f"+ {pid} {_created(proc):.6f}")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> list[psutil.Process]:
        """The owned processes and their descendants that still run."""
        found: dict[int, psutil.Process] = {}
        for proc in self.procs:
            if _gone(proc):
                continue
            found[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
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
        lingering = self._wait(procs, grace_s)
        for proc in lingering:
            logger.warning("%s: process %d did not stop in %.0fs; killing it",
                           self.label, proc.pid, grace_s)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self._wait(lingering, 5)
        self.release()

    def wait(self, timeout_s: float) -> bool:
        """Waits up to ``timeout_s`` for the processes to exit by themselves."""
        return not self._wait(self.alive(), timeout_s)

    @staticmethod
    def _wait(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        return [p for p in alive if not _gone(p)]

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


def _shared_helpers() -> set[int]:
    """Process-wide helpers that multiprocessing starts on first use (its resource
    tracker, its forkserver): they belong to no one owner."""
    pids = set()
    with contextlib.suppress(Exception):
        from multiprocessing import resource_tracker

        pids.add(resource_tracker._resource_tracker._pid)  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        from multiprocessing import forkserver

        pids.add(forkserver._forkserver._forkserver_pid)  # type: ignore[attr-defined]
    return {p for p in pids if p}


@contextlib.contextmanager
def adopting(label: str) -> Iterator[Owned]:
    """Owns the child processes started while the block runs (for libraries, such as
    vLLM and Ray, that start their own). The warden is told before the block starts, so
    an owner killed mid-start still leaves nothing behind. Windows are taken one at a
    time, and children another owner already holds are never taken."""
    owned = Owned(label)
    me = psutil.Process()
    with _ADOPTING:
        before = {p.pid for p in me.children()}
        _WARDEN.send(f"adopt {os.getpid()}")
        try:
            yield owned
        finally:
            taken = {p.pid for o in list(_OPEN) for p in o.procs}
            skip = before | taken | _shared_helpers() | {_WARDEN.pid}
            for child in me.children():
                if child.pid not in skip:
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


def _after_fork_in_child() -> None:
    _CLOSERS.clear()
    _OPEN.clear()
    _WARDEN.forget()
    global _ADOPTING
    _ADOPTING = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _at_exit() -> None:
    for close in reversed(_CLOSERS):
        try:
            close()
        except BaseException as e:  # noqa: BLE001  (one failed close, or a second
            logger.warning("closing at exit failed: %r", e)  # signal, must not stop the rest)
    for owned in list(_OPEN):
        try:
            owned.end(grace_s=5.0)
        except BaseException as e:  # noqa: BLE001
            logger.warning("ending %s at exit failed: %r", owned.label, e)
