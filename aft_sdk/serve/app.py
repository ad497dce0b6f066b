"""``aft serve``: graph configs exposed as models behind an OpenAI-compatible API.

``POST /v1/chat/completions`` runs propose-and-aggregate; ``usage`` counts every layer
and the ``aft`` field breaks it down. Streaming sends the final aggregation as real
token chunks (layer progress goes out as SSE comments). The app protects itself: bearer
keys compared in constant time, a body size limit, a bound on concurrent runs (beyond
it: 429 with ``Retry-After``, never an unbounded queue), and a per-request deadline.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from aft_sdk.config import GraphConfig, describe_validation_error
from aft_sdk.errors import (
    AftError,
    ConfigError,
    GraphTimeoutError,
    InsufficientProposalsError,
)
from aft_sdk.graphs import AggregateGraph
import aft_sdk.serve.protocol as protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Operator limits of one ``aft serve`` process.

    Attributes:
        max_width: Largest ``width`` a request may ask for.
        max_depth: Largest ``depth`` a request may ask for.
        max_concurrent_runs: Runs at once; more get 429 with ``Retry-After``.
        request_timeout_s: Deadline of one request; past it the run is cancelled (504).
        max_body_bytes: Largest request body accepted (413 beyond).
        api_keys: Accepted bearer keys; empty means no authentication.
    """

    max_width: int = 16
    max_depth: int = 4
    max_concurrent_runs: int = 128
    request_timeout_s: float = 300.0
    max_body_bytes: int = 1_000_000
    api_keys: tuple[str, ...] = ()


class HTTPFailure(Exception):
    """An error answer: status, OpenAI-style body, extra headers."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.headers = status, kind, code, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(protocol.error_body(str(self), self.kind, self.code),
                            status_code=self.status, headers=self.headers)


def as_failure(e: BaseException) -> HTTPFailure:
    """The HTTP answer for an error of a run."""
    if isinstance(e, HTTPFailure):
        return e
    if isinstance(e, ConfigError):
        return HTTPFailure(400, str(e), "invalid_request_error")
    if isinstance(e, InsufficientProposalsError):
        return HTTPFailure(502, str(e), "upstream_error", "insufficient_proposals")
    if isinstance(e, (GraphTimeoutError, asyncio.TimeoutError)):
        return HTTPFailure(504, str(e) or "the request passed its deadline", "timeout")
    if isinstance(e, AftError):
        return HTTPFailure(502, str(e), "upstream_error")
    logger.exception("unexpected error in a run")
    return HTTPFailure(500, "internal error (see the server log)", "server_error")


class Models:
    """The served graphs, with per-request shape variants built once and cached."""

    def __init__(self, configs: Mapping[str, GraphConfig], settings: ServeSettings,
                 cache_size: int = 64) -> None:
        if not configs:
            raise ConfigError("aft serve needs at least one graph config")
        self.configs = dict(configs)
        self.settings = settings
        self._graphs: OrderedDict[tuple[str, str], AggregateGraph] = OrderedDict()
        self._cache_size = cache_size
        for name in self.configs:  # build each base graph now: bad configs fail at start
            self.graph(name, {})

    def graph(self, model: str, shape: dict[str, Any]) -> AggregateGraph:
        if model not in self.configs:
            raise HTTPFailure(404, f"model {model!r} does not exist; GET /v1/models lists "
                              "the served ones", "invalid_request_error", "model_not_found")
        self._check_caps(shape)
        key = (model, json.dumps(shape, sort_keys=True))
        graph = self._graphs.get(key)
        if graph is None:
            graph = AggregateGraph.from_config(self.configs[model], **shape)
            self._graphs[key] = graph
            if len(self._graphs) > self._cache_size:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return graph

    def _check_caps(self, shape: dict[str, Any]) -> None:
        for name, cap in (("width", self.settings.max_width), ("depth", self.settings.max_depth)):
            value = shape.get(name)
            if value is not None and isinstance(value, int) and value > cap:
                raise ConfigError(f"{name}={value} is above this server's limit of {cap}")


def create_app(configs: Mapping[str, GraphConfig], settings: ServeSettings | None = None
               ) -> FastAPI:
    """The ASGI app serving ``configs`` (model id -> graph config)."""
    settings = settings or ServeSettings()
    models = Models(configs, settings)
    app = FastAPI(title="aft serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.models = models
    app.state.active = 0
    created = int(time.time())

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        try:
            _check_auth(request, settings)
            _check_size(request, settings)
            response = await call_next(request)
        except HTTPFailure as e:
            response = e.response()
        logger.info("%s %s -> %d in %.3fs", request.method, request.url.path,
                    response.status_code, time.perf_counter() - t0)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "active_runs": app.state.active}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "aft-sdk"}
            for name in models.configs]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        try:
            req = await _read_request(request, settings)
            graph = models.graph(req.model, req.shape())
            sampling = req.final_sampling()
            if app.state.active >= settings.max_concurrent_runs:
                raise HTTPFailure(429, f"{app.state.active} runs are in progress, the most "
                                  "this server takes; retry shortly", "rate_limit_error",
                                  headers={"Retry-After": "1"})
        except (AftError, HTTPFailure) as e:
            return as_failure(e).response()
        app.state.active += 1
        if req.stream:
            return await _stream(app, graph, req, sampling, settings)
        try:
            result = await asyncio.wait_for(
                graph.ainvoke(req.messages, final_sampling=sampling or None),
                settings.request_timeout_s)
        except (AftError, asyncio.TimeoutError) as e:
            return as_failure(e).response()
        finally:
            app.state.active -= 1
        return JSONResponse(protocol.completion(req.model, result))

    return app


def _check_auth(request: Request, settings: ServeSettings) -> None:
    if not settings.api_keys or request.url.path == "/health":
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and any(
        hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys)
    if not ok:
        raise HTTPFailure(401, "missing or wrong API key: send Authorization: Bearer <key>",
                          "authentication_error", "invalid_api_key")


def _check_size(request: Request, settings: ServeSettings) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
        raise HTTPFailure(413, f"request body over {settings.max_body_bytes} bytes",
                          "invalid_request_error", "request_too_large")


async def _read_request(request: Request, settings: ServeSettings) -> protocol.ChatRequest:
    body = b""
    async for part in request.stream():  # bounded even without a content-length
        body += part
        if len(body) > settings.max_body_bytes:
            raise HTTPFailure(413, f"request body over {settings.max_body_bytes} bytes",
                              "invalid_request_error", "request_too_large")
    try:
        req = protocol.ChatRequest.model_validate_json(body)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, "request")) from e
    req.refuse_unsupported()
    return req


async def _stream(app: FastAPI, graph: AggregateGraph, req: protocol.ChatRequest,
                  sampling: dict[str, Any], settings: ServeSettings) -> Response:
    """Streams the final aggregation; errors before its first token get a status code."""
    deadline = time.monotonic() + settings.request_timeout_s
    events = graph.astream(req.messages, final_sampling=sampling or None)
    head: list[dict[str, Any]] = []
    try:  # hold the answer's headers until the first token: earlier errors map cleanly
        while not head or head[-1]["event"] == "layer":
            head.append(await _next(events, deadline))
    except StopAsyncIteration:
        pass
    except (AftError, asyncio.TimeoutError) as e:
        await events.aclose()
        app.state.active -= 1
        return as_failure(e).response()

    async def body() -> AsyncIterator[str]:
        cid, created = protocol.completion_id(), int(time.time())
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        try:
            yield _sse(protocol.chunk(cid, req.model, created,
                                      delta={"role": "assistant", "content": ""}))
            pending = list(head)
            while True:
                event = pending.pop(0) if pending else await _next(events, deadline)
                if event["event"] == "layer":
                    yield f": layer {event['layer']}: {event['ok']} ok, {event['failed']} failed\n\n"
                elif event["event"] == "token":
                    yield _sse(protocol.chunk(cid, req.model, created,
                                              delta={"content": event["text"]}))
                elif event["event"] == "result":
                    result = event["result"]
                    yield _sse(protocol.chunk(cid, req.model, created, finish_reason="stop",
                                              extra={"aft": protocol.trace_of(result)}))
                    if include_usage:
                        yield _sse(protocol.chunk(cid, req.model, created,
                                                  usage=protocol.usage_of(result)))
                    break
        except StopAsyncIteration:
            pass
        except (AftError, asyncio.TimeoutError) as e:
            failure = as_failure(e)
            yield _sse(protocol.error_body(str(failure), failure.kind, failure.code))
        finally:
            await events.aclose()
            app.state.active -= 1
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})


async def _next(events: AsyncIterator[dict[str, Any]], deadline: float) -> dict[str, Any]:
    left = deadline - time.monotonic()
    if left <= 0:
        raise asyncio.TimeoutError
    return await asyncio.wait_for(events.__anext__(), left)


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
