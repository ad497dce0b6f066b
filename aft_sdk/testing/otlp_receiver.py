"""An OTLP/HTTP trace receiver on 127.0.0.1, for tests of what a run exports.

It takes what an ``OTLPSpanExporter`` (``opentelemetry-exporter-otlp-proto-http``) posts
to ``/v1/traces`` (protobuf, optionally gzip) and keeps each span as a dict::

    with OTLPReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint}
        ...
        spans = otlp.wait_for(lambda spans: len(spans) >= 5)

A span: ``name``, ``trace_id`` / ``span_id`` / ``parent_span_id`` (hex; ``""`` for a
root), ``kind`` (``INTERNAL``, ``CLIENT``, ...), ``attributes`` (plain values),
``events`` (``[{"name", "attributes"}]``), ``status`` (``UNSET``, ``OK``, ``ERROR``),
``start_ns`` / ``end_ns`` and ``service`` (the resource's ``service.name``). Needs the
``otel`` extra.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def _attrs(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


class OTLPReceiver:
    """Collects exported spans in :attr:`spans` (thread-safe reads via :meth:`wait_for`)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """What ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes (the exporter adds ``/v1/traces``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for rs in request.resource_spans:
            service = _attrs(rs.resource.attributes).get("service.name", "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    found.append({
                        "name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "start_ns": s.start_time_unix_nano, "end_ns": s.end_time_unix_nano,
                        "kind": Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                        "attributes": _attrs(s.attributes), "service": service,
                        "events": [{"name": e.name, "attributes": _attrs(e.attributes)}
                                   for e in s.events],
                        "status": Status.StatusCode.Name(s.status.code).removeprefix(
                            "STATUS_CODE_")})
        with self._lock:
            self.spans += found

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool],
                 timeout_s: float = 30) -> list[dict[str, Any]]:
        """The spans once ``done(spans)`` holds; fails with what arrived after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while True:
            with self._lock:
                spans = list(self.spans)
            if done(spans):
                return spans
            if time.monotonic() > end:
                raise AssertionError(f"spans never met the condition; got "
                                     f"{[s['name'] for s in spans]}")
            time.sleep(0.05)


def _handler(receiver: OTLPReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            receiver.take(body)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

    return Handler
