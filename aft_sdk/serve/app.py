"""``aft serve``: graph configs exposed as models behind the APIs clients speak.

``POST /v1/chat/completions`` (OpenAI chat completions), ``POST /v1/responses``
(OpenAI's Responses API) and ``POST /v1/messages`` (Anthropic Messages) run
propose-and-aggregate on the same graphs (:mod:`aft_sdk.serve.surface`); ``usage``
counts every layer and the ``aft`` field breaks it down. Streaming sends the final
aggregation as real token chunks in each format (layer progress goes out as SSE
comments). The app protects itself: keys compared in constant time (bearer or
``x-api-key``), a body size limit, a bound on concurrent runs (beyond it: 429 with
``Retry-After``, never an unbounded queue), and a per-request deadline. Every failure
is an error in the route's own format (after the first streamed token: that format's
error event); a client that leaves cancels its run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from aft_sdk import tracing
from aft_sdk.config import GraphConfig
from aft_sdk.errors import ConfigError
from aft_sdk.validation import Strict
from aft_sdk.graphs import AggregateGraph
import aft_sdk.serve.protocol as protocol
from aft_sdk.serve.messages_api import Messages
from aft_sdk.serve.responses_api import Responses
from aft_sdk.serve.run import CHAT, HTTPFailure, Run, RunSlots, Slot, as_failure
from aft_sdk.serve.surface import Surface

#: The wire formats served, by route.
SURFACES: dict[str, Surface] = {s.path: s for s in (CHAT, Responses(), Messages())}

logger = logging.getLogger(__name__)


#: The default body limit: a 15 MB image sent as a base64 data URL (a third larger) fits
#: with room for the conversation; OpenAI takes images up to 20 MB.
DEFAULT_BODY_BYTES = 25_000_000


class ServeSettings(Strict):
    """Operator limits of one ``aft serve`` process.

    Attributes:
        max_width: Largest ``width`` a request may ask for.
        max_depth: Largest ``depth`` a request may ask for.
        max_generations: Most generations a request that changes the graph's settings
            may make it cost (its strategy's estimate, :meth:`GraphConfig.cost`; a
            served config costs what it costs).
        max_concurrent_runs: Runs at once; more get 429 with ``Retry-After``.
        request_timeout_s: Deadline of one request; past it the run is cancelled (504).
        max_body_bytes: Largest request body accepted (413 beyond).
        api_keys: Accepted bearer keys; empty means no authentication.
        debug_ui: Keep the last ``debug_runs`` finished requests and show them as run
            pages under ``/debug/runs`` (behind the API key; :mod:`aft_sdk.serve.debug`).
        record_dir: Record every answered run there (:mod:`aft_sdk.record`), with
            ``record_max_bytes`` the bound on the folder and ``record_file_bytes`` the
            size past which a file is rotated; requests carrying the header
            ``record_skip_header`` are never recorded.
    """

    max_width: int = Field(16, ge=1, strict=True)
    max_depth: int = Field(4, ge=1, strict=True)
    max_generations: int = Field(80, ge=1, strict=True)
    max_concurrent_runs: int = Field(128, ge=1, strict=True)
    request_timeout_s: float = Field(300.0, gt=0)
    max_body_bytes: int = Field(DEFAULT_BODY_BYTES, ge=1, strict=True)
    api_keys: tuple[str, ...] = Field(default=(), repr=False)  # never in a log line
    debug_ui: bool = False
    debug_runs: int = Field(100, ge=1, strict=True)
    record_dir: str | None = None
    record_max_bytes: int | None = Field(None, ge=1, strict=True)
    record_file_bytes: int = Field(64 * 2**20, ge=1, strict=True)
    record_skip_header: str | None = None


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
        self._lock = threading.Lock()  # graphs for new shapes are built in worker threads
        for name in self.configs:  # build each base graph now: bad configs fail at start
            self.graph(name, {})

    def replace(self, configs: Mapping[str, GraphConfig]) -> None:
        """Serves ``configs`` from now on: their graphs are built first (a config that
        fails raises, and the old ones keep serving); runs in flight keep their graph."""
        fresh = Models(configs, self.settings, self._cache_size)
        with self._lock:
            self.configs, self._graphs = fresh.configs, fresh._graphs

    def _key(self, model: str, shape: dict[str, Any]) -> tuple[str, str]:
        if model not in self.configs:
            raise HTTPFailure(404, f"model {model!r} does not exist; GET /v1/models lists "
                              "the served ones", "invalid_request_error", "model_not_found")
        self._check_caps(shape)
        return (model, json.dumps(shape, sort_keys=True))

    def cached(self, model: str, shape: dict[str, Any]) -> AggregateGraph | None:
        """The graph for this shape if it was built before (cheap: on the event loop)."""
        key = self._key(model, shape)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is not None:
                self._graphs.move_to_end(key)
            return graph

    def graph(self, model: str, shape: dict[str, Any]) -> AggregateGraph:
        """The graph for this shape, built if need be (may be slow: call off the loop)."""
        graph = self.cached(model, shape)
        if graph is None:
            base = self.configs[model]
            config = base.with_changes(**{**shape, **base.merged_sections(
                {k: v for k, v in shape.items() if isinstance(v, dict)})})
            most = config.cost().most
            limit = max(self.settings.max_generations, base.cost().most)
            if shape and most > limit:
                raise ConfigError(f"this request's graph costs up to {most} generations, above "
                                  f"this server's limit of {limit}: "
                                  "ask for a smaller width, depth or strategy setting")
            graph = AggregateGraph.from_config(config)
            with self._lock:
                graph = self._graphs.setdefault(self._key(model, shape), graph)
                if len(self._graphs) > self._cache_size:
                    self._graphs.popitem(last=False)
        return graph

    def _check_caps(self, shape: dict[str, Any]) -> None:
        for name, cap in (("width", self.settings.max_width), ("depth", self.settings.max_depth)):
            value = shape.get(name)
            if value is not None and isinstance(value, int) and value > cap:
                raise ConfigError(f"{name}={value} is above this server's limit of {cap}")


def create_app(configs: Mapping[str, GraphConfig], settings: ServeSettings | None = None,
               reload_configs: Callable[[], Mapping[str, GraphConfig]] | None = None
               ) -> FastAPI:
    """The ASGI app serving ``configs`` (model id -> graph config).

    With ``reload_configs`` (``aft serve``: the config files read again), ``SIGHUP`` and
    an authenticated ``POST /admin/reload`` switch to what it returns once its graphs have
    loaded; new requests go to them, runs in flight finish on the old ones, and a config
    that fails to load leaves the old ones serving (the reload's answer and the log say
    why)."""
    settings = settings or ServeSettings()
    models = Models(configs, settings)
    slots = RunSlots(settings.max_concurrent_runs)
    recorder = None
    if settings.record_dir:
        from aft_sdk.record import Recorder

        recorder = Recorder(settings.record_dir, max_bytes=settings.record_max_bytes,
                            max_file_bytes=settings.record_file_bytes)

    async def reload() -> list[str]:
        assert reload_configs is not None
        async with reloading:  # one reload at a time
            try:
                await asyncio.to_thread(lambda: models.replace(reload_configs()))
            except Exception as e:
                logger.error("reload failed, the old configs keep serving: %s", e)
                raise
            identities.update(_identities(models.configs) if recorder is not None else {})
            logger.warning("reloaded: serving %s", ", ".join(models.configs))
            return list(models.configs)

    reloading = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if reload_configs is not None:
            _on_sighup(lambda: asyncio.ensure_future(_logged(reload())))
        yield
        if recorder is not None:  # every queued row is written before the process ends
            await asyncio.to_thread(recorder.close)

    app = FastAPI(title="aft serve", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.recorder = recorder
    app.state.models = models
    app.state.slots = slots
    app.add_middleware(Guard, settings=settings)
    created = int(time.time())
    recent = None
    if settings.debug_ui:
        from aft_sdk.serve.debug import RecentRuns, mount

        recent = RecentRuns(settings.debug_runs)
        mount(app, recent)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        kind = "not_found" if e.status_code == 404 else None
        message = {404: f"no route {request.url.path}; this server has "
                        f"{', '.join(SURFACES)}, /v1/models and /health",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
            e.status_code, str(e.detail))
        failure = HTTPFailure(e.status_code, message, "invalid_request_error", kind,
                              headers=dict(e.headers or {}))
        return failure.response(surface_of(request.url.path))

    @app.exception_handler(Exception)
    async def any_error(request: Request, e: Exception) -> Response:
        return as_failure(e).response(surface_of(request.url.path))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "active_runs": slots.active}

    def model_entry(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "aft-sdk"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_entry(name) for name in models.configs]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> Any:
        if name not in models.configs:
            return HTTPFailure(404, f"no model {name!r}; this server has "
                               f"{sorted(models.configs)}", "invalid_request_error",
                               "model_not_found").response()
        return model_entry(name)

    async def answer(request: Request, surface: Surface) -> Any:
        slot: Slot | None = None
        try:
            req = await _read_request(request, settings, surface)
            shape = req.shape()
            graph = models.cached(req.model, shape)  # unknown model, caps: refused here
            slot = slots.take(req.choices)  # the bound, before a new shape is built
            if graph is None:
                graph = await asyncio.to_thread(models.graph, req.model, shape)
            return Run(graph, req, settings.request_timeout_s, slot, surface,
                       tracing.incoming_context(request.headers), recent,
                       recording(req, request, surface))
        except Exception as e:
            if slot is not None:
                slot.release()
            return as_failure(e).response(surface)
        except BaseException:
            if slot is not None:
                slot.release()
            raise

    def route_of(surface: Surface) -> Any:
        async def route(request: Request) -> Any:
            return await answer(request, surface)
        return route

    for path, surface in SURFACES.items():
        app.add_api_route(path, route_of(surface), methods=["POST"], include_in_schema=False)

    def recording(req: protocol.ChatRequest, request: Request, surface: Surface) -> Any:
        """How this request's runs are recorded (``None``: they are not)."""
        skip = settings.record_skip_header
        if recorder is None or req.record is False or (skip and skip in request.headers):
            return None
        config = identities[req.model]
        return lambda rid, results: recorder.runs(rid, req.model, surface.path, config,
                                                  results)

    identities: dict[str, dict[str, str]] = {}
    if recorder is not None:
        from aft_sdk.serve.feedback import mount_feedback

        identities.update(_identities(models.configs))
        mount_feedback(app, recorder)

    if reload_configs is not None:
        @app.post("/admin/reload", include_in_schema=False)
        async def admin_reload() -> Any:
            try:
                return {"object": "reload", "models": await reload()}
            except Exception as e:
                return HTTPFailure(400, f"reload failed, the old configs keep serving: {e}",
                                   "invalid_request_error", "reload_failed").response()

    return app


def _identities(configs: Mapping[str, GraphConfig]) -> dict[str, dict[str, str]]:
    from aft_sdk.record import config_identity

    return {name: config_identity(name, c) for name, c in configs.items()}


def _on_sighup(handler: Callable[[], Any]) -> None:
    """Calls ``handler`` on SIGHUP, where this loop can take signals (POSIX, main thread)."""
    import signal

    if not hasattr(signal, "SIGHUP"):
        return
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handler)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        logger.info("SIGHUP cannot reload here; use POST /admin/reload")


async def _logged(aw: Any) -> None:
    with contextlib.suppress(Exception):  # the reload logged why it failed
        await aw


class Guard:
    """ASGI middleware: bearer keys, the body size bound, one log line per request."""

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [0]

        async def tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        request = Request(scope)
        try:
            _check_auth(request, self.settings)
            _check_size(request, self.settings)
        except HTTPFailure as e:
            await e.response(surface_of(request.url.path))(scope, receive, tracked)
        else:
            await self.app(scope, receive, tracked)
        finally:
            logger.info("%s %s -> %d in %.3fs", scope.get("method"), scope.get("path"),
                        status[0], time.perf_counter() - t0)


def _check_auth(request: Request, settings: ServeSettings) -> None:
    if not settings.api_keys or request.url.path == "/health":
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":  # Anthropic's clients send their key as x-api-key
        given = request.headers.get("x-api-key", "")
    ok = bool(given) and any(
        hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys)
    if not ok:
        raise HTTPFailure(401, "missing or wrong API key: send Authorization: Bearer <key> "
                          "(or x-api-key: <key>)", "authentication_error", "invalid_api_key")


def _check_size(request: Request, settings: ServeSettings) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
        raise HTTPFailure(413, _too_large(settings),
                          "invalid_request_error", "request_too_large")


def _too_large(settings: ServeSettings) -> str:
    return (f"request body over {settings.max_body_bytes} bytes, this server's limit "
            "(aft serve --max-body-bytes)")


def surface_of(path: str) -> Surface:
    """The wire format of a route (OpenAI's for any other path)."""
    return SURFACES.get(path, SURFACES["/v1/chat/completions"])


async def _read_request(request: Request, settings: ServeSettings,
                        surface: Surface) -> protocol.ChatRequest:
    body = bytearray()  # appended in place: a large body is not copied per chunk
    async for part in request.stream():  # bounded even without a content-length
        body += part
        if len(body) > settings.max_body_bytes:
            raise HTTPFailure(413, _too_large(settings),
                              "invalid_request_error", "request_too_large")
    return surface.read(bytes(body))
