"""The warden: ends an owner's processes when the owner dies (see :mod:`aft_sdk.lifecycle`).

Run as ``python -m aft_sdk._warden OWNER_PID`` with a pipe on stdin, one command a line:

- ``+ PID CREATE_TIME``: watch PID (the create time guards against PID reuse);
- ``- PID``: stop watching PID;
- ``adopt OWNER_PID`` / ``adopted``: open / close a window in which every new child of
  the owner is watched too (an engine starting its processes).

Every second the descendants of watched processes are noted too, so that a grandchild
whose parent died first (Ray's agents, when its raylet shares its owner's fate) is still
found. When the owner is gone (its PID is no longer our parent: we were re-parented) or
the pipe closes, every watched process still running ends with its descendants:
SIGTERM, a few seconds, then SIGKILL. SIGINT and SIGTERM are ignored so that a Ctrl-C or a signal
to a whole group cannot stop the warden before it has done its work.
"""

from __future__ import annotations

import os
import select
import signal
import sys

import psutil

TICK_S = 0.25


def main(owner: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watched: dict[int, float] = {}
    windows = 0
    known: set[int] = set()
    buffer = b""
    stdin = sys.stdin.fileno()
    ticks = 0
    while os.getppid() == owner:
        ready, _, _ = select.select([stdin], [], [], TICK_S)
        if ready:
            chunk = os.read(stdin, 65536)
            if not chunk:
                break  # the owner exited (or closed us): end what is left
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                windows, known = apply(line.decode().split(), watched, windows, known, owner)
        if windows:
            adopt_new(owner, watched, known)
        ticks += 1
        if ticks % int(1 / TICK_S) == 0:
            note_descendants(watched)
    end_all(watched)


def apply(words: list[str], watched: dict[int, float], windows: int, known: set[int],
          owner: int) -> tuple[int, set[int]]:
    if words[:1] == ["+"] and len(words) == 3:
        watched[int(words[1])] = float(words[2])
    elif words[:1] == ["-"] and len(words) == 2:
        watched.pop(int(words[1]), None)
    elif words[:1] == ["adopt"]:
        if not windows:
            known = {p.pid for p in children(owner)}
        windows += 1
    elif words == ["adopted"]:
        windows = max(0, windows - 1)
    return windows, known


def children(owner: int) -> list[psutil.Process]:
    try:
        return psutil.Process(owner).children()
    except psutil.Error:
        return []


def adopt_new(owner: int, watched: dict[int, float], known: set[int]) -> None:
    for child in children(owner):
        if child.pid not in known and child.pid != os.getpid():
            known.add(child.pid)
            try:
                watched.setdefault(child.pid, child.create_time())
            except psutil.Error:
                pass


def note_descendants(watched: dict[int, float]) -> None:
    """Adds the descendants of watched processes; forgets watched ones that ended."""
    for pid in list(watched):
        try:
            for child in psutil.Process(pid).children(recursive=True):
                watched.setdefault(child.pid, child.create_time())
        except psutil.Error:
            watched.pop(pid, None)


def end_all(watched: dict[int, float]) -> None:
    procs: dict[int, psutil.Process] = {}
    for pid, created in watched.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) > 0.01:
                continue  # the PID was reused by an unrelated process
            for p in [*proc.children(recursive=True), proc]:
                procs[p.pid] = p
        except psutil.Error:
            continue
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, lingering = psutil.wait_procs(list(procs.values()), timeout=5)
    for proc in lingering:
        try:
            proc.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    main(int(sys.argv[1]))
