"""The warden: ends an owner's processes when the owner dies (see :mod:`aft_sdk.lifecycle`).

Run as ``python -I path/to/_warden.py OWNER_PID`` (it needs psutil only) with a pipe on
stdin, one command a line:

- ``+ PID CREATE_TIME``: watch PID (the create time guards against PID reuse);
- ``- PID``: stop watching PID;
- ``adopt OWNER_PID`` / ``adopted``: open / close a window in which every new child of
  the owner is watched too (an engine starting its processes).

Every second the descendants of watched processes are noted too (from one snapshot of
the process table), so that a grandchild whose parent died first (Ray's agents, when
its raylet shares its owner's fate) is still found. When the owner is gone (its PID is
no longer our parent: we were re-parented) or the pipe closes, the last commands are
read, and every watched process still running ends with its descendants: SIGTERM, a
few seconds, then SIGKILL. SIGINT and SIGTERM are ignored so that a Ctrl-C or a signal
to a whole group cannot stop the warden before it has done its work.
"""

from __future__ import annotations

import os
import select
import signal
import sys

import psutil

TICK_S = 0.25


class Watch:
    """What the warden watches, and the owner's children known before a window."""

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.watched: dict[int, float] = {}  # pid -> create time
        self.windows = 0
        self.known: set[int] = set()
        self.buffer = b""

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.apply(line.decode(errors="replace").split())

    def apply(self, words: list[str]) -> None:
        if words[:1] == ["+"] and len(words) == 3:
            self.watched[int(words[1])] = float(words[2])
        elif words[:1] == ["-"] and len(words) == 2:
            self.watched.pop(int(words[1]), None)
        elif words[:1] == ["adopt"]:
            if not self.windows:
                self.known = {p.pid for p in children(self.owner)}
            self.windows += 1
        elif words == ["adopted"]:
            self.windows = max(0, self.windows - 1)

    def adopt_new(self) -> None:
        for child in children(self.owner):
            if child.pid not in self.known and child.pid != os.getpid():
                self.known.add(child.pid)
                try:
                    self.watched.setdefault(child.pid, child.create_time())
                except psutil.Error:
                    pass

    def note_descendants(self) -> None:
        """Adds descendants of watched processes; forgets watched ones that ended or
        whose PID now names another process."""
        table: dict[int, list[tuple[int, float]]] = {}
        for proc in psutil.process_iter(["ppid", "create_time"]):
            info = proc.info
            table.setdefault(info["ppid"] or 0, []).append((proc.pid, info["create_time"] or 0))
        created = {pid: t for kids in table.values() for pid, t in kids}
        for pid, t in list(self.watched.items()):
            if pid not in created or not same_time(created[pid], t):
                del self.watched[pid]
        stack = list(self.watched)
        while stack:
            for child, t in table.get(stack.pop(), []):
                if child not in self.watched:
                    self.watched[child] = t
                    stack.append(child)


def same_time(a: float, b: float) -> bool:
    return abs(a - b) < 0.02


def children(owner: int) -> list[psutil.Process]:
    try:
        return psutil.Process(owner).children()
    except psutil.Error:
        return []


def main(owner: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch = Watch(owner)
    stdin = sys.stdin.fileno()
    ticks = 0
    while os.getppid() == owner:
        ready, _, _ = select.select([stdin], [], [], TICK_S)
        if ready:
            chunk = os.read(stdin, 65536)
            if not chunk:
                break  # the owner exited (or closed us): end what is left
            watch.feed(chunk)
        if watch.windows:
            watch.adopt_new()
        ticks += 1
        if ticks % int(1 / TICK_S) == 0:
            watch.note_descendants()
    drain(stdin, watch)  # what the owner wrote just before it died
    end_all(watch.watched)


def drain(stdin: int, watch: Watch) -> None:
    os.set_blocking(stdin, False)
    try:
        while chunk := os.read(stdin, 65536):
            watch.feed(chunk)
    except (BlockingIOError, OSError):
        pass


def end_all(watched: dict[int, float]) -> None:
    procs: dict[int, psutil.Process] = {}
    for pid, created in watched.items():
        try:
            proc = psutil.Process(pid)
            if not same_time(proc.create_time(), created):
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
