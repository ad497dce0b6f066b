"""Adaptive concurrency for HTTP backends: no hand-tuned number, no 429 storms.

The limit gates each HTTP *attempt* (so the openai client's own retries, which honour
``Retry-After``, wait for a slot too) and starts open: a graph layer of any width goes
out at once. When the server answers 429, the limit drops to half of what was in flight
and new attempts pause for the server's ``Retry-After``; one overload answers many
requests at once, so only a 429 to an attempt started after the last cut cuts again.
Every success raises the limit by about one per full window (additive increase,
multiplicative decrease, as TCP does). ``cap`` is an optional hard ceiling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

try:  # openai >= 3 sends through httpx2; older releases through httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx  # type: ignore[no-redef]


class AdaptiveLimiter:
    """Bounds attempts in flight, adapting to 429 answers.

    Args:
        cap: Hard ceiling on attempts in flight; ``None`` for none.

    Attributes:
        limit: The adaptive limit; ``None`` while the server has not pushed back.
        in_flight: Attempts holding a slot now.
        cuts: How many times the limit was cut.
    """

    def __init__(self, cap: int | None = None) -> None:
        self.cap = cap
        self.limit: float | None = None
        self.in_flight = 0
        self.cuts = 0
        self._paused_until = 0.0
        self._last_cut = 0.0
        self._cond = asyncio.Condition()

    @property
    def allowed(self) -> int | None:
        """Attempts allowed in flight now (``None``: unbounded)."""
        values = [int(v) for v in (self.limit, self.cap) if v is not None]
        return min(values) if values else None

    def _may_start(self) -> bool:
        allowed = self.allowed
        return time.monotonic() >= self._paused_until and (
            allowed is None or self.in_flight < allowed
        )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Holds one slot; yields the monotonic time the attempt started."""
        async with self._cond:
            while not self._may_start():
                pause = self._paused_until - time.monotonic()
                try:
                    await asyncio.wait_for(self._cond.wait(), pause if pause > 0 else None)
                except asyncio.TimeoutError:
                    pass  # the pause is over: check again
            self.in_flight += 1
        try:
            yield time.monotonic()
        finally:
            async with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    async def observe(self, status: int, retry_after: float | None, started: float) -> None:
        """Feeds one answer into the limit (called while its slot is still held)."""
        async with self._cond:
            if status == 429:
                self._cut(retry_after, started)
            elif status < 400 and self.limit is not None:
                self.limit += 1.0 / self.limit
                if self.cap is not None:
                    self.limit = min(self.limit, float(self.cap))
            self._cond.notify_all()

    def _cut(self, retry_after: float | None, started: float) -> None:
        now = time.monotonic()
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)
        if self.limit is not None and started < self._last_cut:
            return  # sent before the last cut: that cut already answered this overload
        current = self.in_flight if self.limit is None else min(self.limit, self.in_flight)
        self.limit = max(1.0, current / 2)
        self._last_cut = now
        self.cuts += 1


class LimitedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every attempt goes through an :class:`AdaptiveLimiter`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limiter: AdaptiveLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self.limiter.slot() as started:
            response = await self.inner.handle_async_request(request)
            await self.limiter.observe(
                response.status_code, _seconds(response.headers.get("retry-after")), started
            )
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: the client's own retry logic handles those
        return None
