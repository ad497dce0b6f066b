"""Adaptive concurrency for HTTP backends: no hand-tuned number, no 429 storms.

The limit starts open, so a graph layer of any width goes out at once. When the server
answers 429 the limit drops to half of what was in flight (at most once per cool-down,
since one overload answers many requests at once) and new requests pause for the
server's ``Retry-After``; every success then raises it by about one per full window
(additive increase, multiplicative decrease, as TCP does). ``cap`` is an optional hard
ceiling the limit never exceeds.
"""

from __future__ import annotations

import asyncio
import math
import time
from types import TracebackType


class AdaptiveLimiter:
    """An async context manager that bounds requests in flight, adapting to 429s.

    Args:
        cap: Hard ceiling on requests in flight; ``None`` for none.
        cooldown_s: Shortest time between two cuts of the limit.

    Attributes:
        limit: The adaptive limit; ``None`` while the server has not pushed back.
        in_flight: Requests holding a slot now.
        cuts: How many times the limit was cut.
    """

    def __init__(self, cap: int | None = None, *, cooldown_s: float = 1.0) -> None:
        self.cap = cap
        self.cooldown_s = cooldown_s
        self.limit: float | None = None
        self.in_flight = 0
        self.cuts = 0
        self._paused_until = 0.0
        self._last_cut = -math.inf
        self._cond = asyncio.Condition()

    @property
    def allowed(self) -> int | None:
        """Requests allowed in flight now (``None``: unbounded)."""
        values = [int(v) for v in (self.limit, self.cap) if v is not None]
        return min(values) if values else None

    def _may_start(self) -> bool:
        allowed = self.allowed
        return time.monotonic() >= self._paused_until and (
            allowed is None or self.in_flight < allowed
        )

    async def __aenter__(self) -> AdaptiveLimiter:
        async with self._cond:
            while not self._may_start():
                pause = self._paused_until - time.monotonic()
                try:
                    await asyncio.wait_for(self._cond.wait(), pause if pause > 0 else None)
                except asyncio.TimeoutError:
                    pass  # the pause is over: check again
            self.in_flight += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    async def on_response(self, status: int, retry_after: float | None) -> None:
        """Feeds one HTTP answer (retried attempts included) into the limit."""
        async with self._cond:
            if status == 429:
                self._cut(retry_after)
            elif status < 400 and self.limit is not None:
                self.limit += 1.0 / self.limit
                if self.cap is not None:
                    self.limit = min(self.limit, float(self.cap))
            self._cond.notify_all()

    def _cut(self, retry_after: float | None) -> None:
        now = time.monotonic()
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)
        if now - self._last_cut < self.cooldown_s:
            return
        current = self.in_flight if self.limit is None else min(self.limit, self.in_flight)
        self.limit = max(1.0, current / 2)
        self._last_cut = now
        self.cuts += 1
