"""Checks that are one long subprocess start when collection ends, beside the suite.

The suite keeps about a third of the machine's two cores idle (tests wait on engines
starting, on servers, on subprocesses). A test marked ``@pytest.mark.early("starter")``
has its module's ``starter()`` called as soon as collection ends (only where the test
was selected; once for all the tests that name it); the starter launches its processes
through :func:`popen` and returns handles. The test takes them (:func:`take`) and reads
their results as it would have after starting them itself; run alone, it starts them
then. They run at normal priority: at the lowest (``nice 19``) a busy stretch of the
suite (a training on both cores) would starve a server start in them past its own wait.
Wall-clock limits in tests that such a run executes are widened by
``AFT_TEST_TIME_SCALE`` (:func:`slack`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

import psutil

#: How much wider this run's wall-clock limits are (``AFT_TEST_TIME_SCALE``; a check run
#: beside the whole suite sets it).
TIME_SCALE = float(os.environ.get("AFT_TEST_TIME_SCALE", "1"))

#: (module, starter) -> what the starter returned (several tests may share one start).
STARTED: dict[tuple[str, str], Any] = {}
#: Every process started here.
PROCS: list[subprocess.Popen] = []
#: What to close at the end of the session (servers a starter opened, folders).
CLOSE: list[Callable[[], Any]] = []


def slack(seconds: float) -> float:
    """A test's wall-clock limit, widened by :data:`TIME_SCALE`."""
    return seconds * TIME_SCALE


def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen``, ended with the session if no test waited for it."""
    proc = subprocess.Popen(argv, **kwargs)
    PROCS.append(proc)
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
    """What ``starter`` started when collection ended, or a fresh start."""
    started = STARTED.pop((starter.__module__, starter.__name__), None)
    return starter() if started is None else started


def stop_all() -> None:
    """Ends what no test took (a run stopped early, or deselected after starting)."""
    for proc in PROCS:
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
