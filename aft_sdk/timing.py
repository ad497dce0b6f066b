"""Named stages of a long job, printed as they start and timed (recipes, benchmarks)."""

from __future__ import annotations

import time


class Stages:
    """``with stages("2. train"): ...`` prints the stage, then its wall time.

    ``timings`` maps each finished stage to its seconds (one decimal), in order.
    """

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._open: list[tuple[str, float]] = []

    def __call__(self, name: str) -> Stages:
        self._open.append((name, 0.0))
        return self

    def __enter__(self) -> None:
        name, _ = self._open.pop()
        print(f"== {name}", flush=True)
        self._open.append((name, time.perf_counter()))

    def __exit__(self, *exc: object) -> None:
        name, t0 = self._open.pop()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        print(f"   {name}: {self.timings[name]}s", flush=True)
