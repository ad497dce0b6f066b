"""One run of ``aft serve``: its slot, its response, and the one error boundary.

:class:`RunSlots` bounds concurrent runs; a taken :class:`Slot` belongs to a :class:`Run`,
the ASGI response that executes the run and releases the slot however it ends.
:func:`as_failure` turns any exception into an OpenAI-style error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi.responses import JSONResponse, Response

from aft_sdk.errors import (
    AftError,
    BackendStatusError,
    ConfigError,
    GraphTimeoutError,
    InsufficientProposalsError,
)
from aft_sdk import tracing
from aft_sdk.graphs import AggregateGraph
import aft_sdk.serve.protocol as protocol
from aft_sdk.serve.surface import ChatCompletions, Surface

CHAT = ChatCompletions()

logger = logging.getLogger(__name__)


class HTTPFailure(Exception):
    """An error answer: status, OpenAI-style body, extra headers."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None,
                 headers: dict[str, str] | None = None,
                 upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.headers = status, kind, code, headers or {}
        self.upstream_status = upstream_status

    def body(self, surface: Surface = CHAT) -> dict[str, Any]:
        """The error in ``surface``'s format (OpenAI's by default)."""
        return surface.error(str(self), self.kind, self.code, self.upstream_status,
                             status=self.status)

    def response(self, surface: Surface = CHAT) -> JSONResponse:
        return JSONResponse(self.body(surface), status_code=self.status, headers=self.headers)


def _upstream_status(e: BaseException) -> int | None:
    """The HTTP status an upstream answered, found along the cause chain."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, BackendStatusError):
            return seen.status_code
        seen = seen.__cause__
    return None


def as_failure(e: BaseException) -> HTTPFailure:
    """The HTTP answer for any error of a request: the one error boundary."""
    if isinstance(e, HTTPFailure):
        return e
    if isinstance(e, ConfigError):
        return HTTPFailure(400, str(e), "invalid_request_error")
    if isinstance(e, InsufficientProposalsError):
        return HTTPFailure(502, str(e), "upstream_error", "insufficient_proposals")
    if isinstance(e, (GraphTimeoutError, TimeoutError)):
        return HTTPFailure(504, str(e) or "the request passed its deadline", "timeout")
    if isinstance(e, AftError):
        return HTTPFailure(502, str(e), "upstream_error", upstream_status=_upstream_status(e))
    logger.error("unexpected error in a request", exc_info=e)
    return HTTPFailure(500, "internal error (see the server log)", "server_error")


class RunSlots:
    """The bound on concurrent runs. A slot is taken before a run and released once,
    by the response that owns it, however the response ends."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self, count: int = 1) -> Slot:
        """``count`` slots at once (a request for ``n`` answers is ``n`` runs)."""
        if count > self.limit:
            raise HTTPFailure(400, f"n={count} is above this server's limit of {self.limit} "
                              "runs at once (--max-concurrent-runs): ask for fewer answers",
                              "invalid_request_error")
        if self.active + count > self.limit:
            raise HTTPFailure(429, f"{self.active} runs are in progress, the most this "
                              "server takes; retry shortly", "rate_limit_error",
                              headers={"Retry-After": "1"})
        self.active += count
        return Slot(self, count)


class Slot:
    """Taken run slots (one per run of a request); :meth:`release` is idempotent."""

    def __init__(self, slots: RunSlots, count: int = 1) -> None:
        self._slots: RunSlots | None = slots
        self.count = count

    def release(self) -> None:
        if self._slots is not None:
            self._slots.active -= self.count
            self._slots = None


class Run(Response):
    """The ASGI response of one run; it owns the run's slot.

    The run executes inside the response, in the response's own task, next to a watcher
    of the client's connection: when the client leaves (streaming or not) the run is
    cancelled, which aborts its upstream requests, and the slot is released in this
    object's ``finally``, the one place every path goes through. A streamed answer
    holds its headers until the first token, so earlier failures get their status code;
    after it a failure is an SSE error event, and every stream ends with ``[DONE]``.
    """

    def __init__(self, graph: AggregateGraph, req: protocol.ChatRequest, timeout_s: float,
                 slot: Slot, surface: Surface = CHAT, trace_context: Any = None,
                 recent: Any = None, record: Any = None) -> None:
        self.graph, self.req, self.timeout_s, self.slot = graph, req, timeout_s, slot
        self.surface, self.trace_context = surface, trace_context  # an incoming traceparent
        self.recent = recent  # --debug-ui: where finished runs are kept
        self.record = record  # --record: (response id, results) -> None, off the request path
        self.background = None
        # One final sampling per answer (n > 1: seeds moved by the answer's index).
        self.samplings = [req.run_sampling(i) or None for i in range(req.choices)]
        self.call = req.call()
        self.client_left = False
        self.started = False  # the response's headers went out

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, task))
        try:
            with tracing.continued(self.trace_context):
                await (self._stream(send) if self.req.stream else self._complete(send))
        except asyncio.CancelledError:
            if not self.client_left:
                raise  # the server is stopping (its own cancel): let it finish
            task.uncancel()
            logger.info("client left; its run was cancelled")
        finally:
            watcher.cancel()
            self.slot.release()

    async def _watch(self, receive: Any, task: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.client_left = True
        task.cancel()

    async def _complete(self, send: Any) -> None:
        try:
            async with asyncio.timeout(self.timeout_s), asyncio.TaskGroup() as runs:
                # n answers: n runs at once; the first failure cancels the rest.
                tasks = [runs.create_task(self.graph.ainvoke(
                    self.req.messages, final_sampling=sampling, call=self.call))
                    for sampling in self.samplings]
            results = [t.result() for t in tasks]
            for result in results:
                protocol.check_logprobs(self.req, result)
            self._keep(results)
            body = self.surface.complete(self.req.model, *results)
            if self.record is not None:
                self.record(str(body.get("id", "")), results)
            response: Response = JSONResponse(body)
        except Exception as e:
            if isinstance(e, ExceptionGroup):
                e = e.exceptions[0]
            response = self._failure(e).response(self.surface)
        await response({"type": "http"}, _nothing, send)

    def _keep(self, results: list[Any]) -> None:
        if self.recent is not None:
            self.recent.answered(self.req.model, self.surface.path, results)

    def _failure(self, e: BaseException) -> HTTPFailure:
        """The error answer for ``e``, kept among the recent runs (``--debug-ui``)."""
        failure = as_failure(e)
        if self.recent is not None:
            self.recent.failed(self.req.model, self.surface.path, failure.status, str(failure))
        return failure

    async def _stream(self, send: Any) -> None:
        req, writer = self.req, self.surface.writer(self.req)
        events = self.graph.astream(req.messages, final_sampling=self.samplings[0], call=self.call)
        held: list[str] = []  # layer progress before the first token

        async def emit(text: str, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": more})

        try:
            async with asyncio.timeout(self.timeout_s):
                async for event in events:
                    if event["event"] == "layer":
                        line = writer.progress(f"layer {event['layer']}: {event['ok']} ok, "
                                               f"{event['failed']} failed")
                        if self.started:
                            await emit(line)
                        else:
                            held.append(line)
                        continue
                    if not self.started:
                        await self._start(send)
                        await emit(writer.open() + "".join(held))
                    if event["event"] == "token":
                        await emit(writer.token(event["text"]))
                    elif event["event"] == "result":
                        protocol.check_logprobs(req, event["result"])
                        self._keep([event["result"]])
                        if self.record is not None:
                            self.record(writer.response_id, [event["result"]])
                        await emit(writer.finish(event["result"]), more=False)
                        return
        except Exception as e:
            failure = self._failure(e)
            if not self.started:
                return await failure.response(self.surface)({"type": "http"}, _nothing, send)
            await emit(writer.fail(failure.body(self.surface)), more=False)
            return
        except asyncio.CancelledError:
            if self.started and not self.client_left:  # server shutdown: say so, then end
                await emit(writer.fail(self.surface.error(
                    "the server is shutting down; the answer was cut off, retry it",
                    "server_error", "shutdown", status=503)), more=False)
            raise
        finally:
            await asyncio.shield(events.aclose())
        # A run always ends in a result or an error; a stream that ends without one is
        # told so in its format.
        if not self.started:
            await self._start(send)
            await emit(writer.open())
        await emit(writer.fail(self.surface.error("the run ended without an answer",
                                                  "server_error", status=500)), more=False)

    async def _start(self, send: Any) -> None:
        self.started = True
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache")]})


async def _nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}

