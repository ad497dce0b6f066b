"""Checks that are one long subprocess start when collection ends, in the background.

The suite keeps about a third of the machine's two cores idle (tests wait on engines
starting, on servers, on subprocesses). A test marked ``@pytest.mark.early("starter")``
has its module's ``starter()`` called as soon as collection ends (only where the test
was selected; once for all the tests that name it); the starter launches its processes through :func:`popen`, at the lowest
CPU priority (``nice 19``), so they use the idle share and barely slow the tests in
front. The test then takes what was started (:func:`take`), the processes are raised
to normal priority while it waits (where the system allows), and it reads their
results as it would have after starting them itself; run alone, it starts them then.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

import psutil

#: (module, starter) -> what the starter returned (several tests may share one start).
STARTED: dict[tuple[str, str], Any] = {}
#: Every process started here, by starter name, so a test's wait can raise their priority.
PROCS: dict[str, list[subprocess.Popen]] = {}
#: Starters whose tests have taken what they started: later processes start at normal priority.
TAKEN: set[str] = set()
#: What to close at the end of the session (servers a starter opened).
CLOSE: list[Callable[[], Any]] = []


def popen(starter: Callable[..., Any], argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` for ``starter`` at the lowest CPU priority (its children
    inherit it)."""
    low = starter.__name__ not in TAKEN
    proc = subprocess.Popen(argv, preexec_fn=(lambda: os.nice(19)) if low else None, **kwargs)
    PROCS.setdefault(starter.__name__, []).append(proc)
    return proc


def start_marked(items: list) -> None:
    for item in items:
        mark = item.get_closest_marker("early")
        if mark is None or item.get_closest_marker("skip") is not None:
            continue
        starter = getattr(item.module, mark.args[0])
        key = (starter.__module__, starter.__name__)
        if key not in STARTED:
            STARTED[key] = starter()


def take(starter: Callable[[], Any]) -> Any:
    """What ``starter`` started (at normal priority from now on), or a fresh start."""
    TAKEN.add(starter.__name__)
    started = STARTED.pop((starter.__module__, starter.__name__), None)
    if started is None:
        return starter()
    for proc in PROCS.get(starter.__name__, []):
        try:
            parent = psutil.Process(proc.pid)
            for p in [parent, *parent.children(recursive=True)]:
                p.nice(0)
        except (psutil.Error, OSError):  # ended, or not allowed: it runs on at nice 19
            continue
    return started


def stop_all() -> None:
    """Ends what no test took (a run stopped early, or deselected after starting)."""
    for proc in (p for procs in PROCS.values() for p in procs):
        if proc.poll() is None:
            try:
                for p in psutil.Process(proc.pid).children(recursive=True):
                    p.kill()
            except psutil.Error:
                pass
            proc.kill()
            proc.wait()
    while CLOSE:
        CLOSE.pop()()
