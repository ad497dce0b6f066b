"""OpenTelemetry spans of a run, after the GenAI semantic conventions.

With the OpenTelemetry API only (a dependency), every call here is a no-op until the
application installs a tracer provider; the SDK and the exporter stay the user's choice
(``pip install 'aft-sdk[otel]'``; ``aft`` commands set one up from the standard
``OTEL_EXPORTER_OTLP_*`` variables, :func:`configure_from_env`). A run gives:

- ``invoke_agent aft-sdk``: one span per run (``gen_ai.operation.name: invoke_agent``;
  ``aft.strategy``, ``aft.width``, ``aft.depth``; the run's token usage and cost), with
  one ``aft.layer`` event per layer (outputs, failures, tokens) and one ``aft.decision``
  event per answer a rule chose (a vote, an agreement, a budget stop), and one
  ``aft.trim`` event per aggregation whose drafts were cut to fit its window;
- ``aft.layer N``: one span per layer that called models, under the run's, from its
  first request to its last, with the layer's outputs, failures, tokens and cost;
- ``chat {model}``: one client span per request to a model, under its layer's span
  (``gen_ai.provider.name``, ``gen_ai.request.*`` sampling, ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens``, ``gen_ai.response.finish_reasons``,
  ``error.type`` on failure; ``aft.layer`` and ``aft.slots``).

Message text is recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
is ``true`` (``gen_ai.input.messages`` / ``gen_ai.output.messages``); keys never are (a
backend's label carries none). Requests to OpenAI-compatible upstreams carry the W3C
``traceparent`` (:func:`outgoing_headers`), and ``aft serve`` continues an incoming one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, StatusCode

TRACER = trace.get_tracer("aft_sdk")
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def capture_content() -> bool:
    return os.environ.get(CAPTURE, "").strip().lower() == "true"


def _provider(label: str) -> str:
    """``gen_ai.provider.name`` from a backend's label (``openai:...``, ``vllm:...``)."""
    kind = label.split(":", 1)[0].split("(", 1)[0] or "unknown"
    return {"embedded": "llama_cpp", "llama": "llama_cpp"}.get(kind, kind)


def run_span(strategy: str, width: int, depth: int) -> Span:
    """The run's span, started (not current: see :func:`current`)."""
    return TRACER.start_span("invoke_agent aft-sdk", kind=SpanKind.INTERNAL, attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "aft-sdk",
        "aft.strategy": strategy, "aft.width": width, "aft.depth": depth})


@contextmanager
def current(span: Span) -> Iterator[None]:
    """``span`` as the current span (tasks started inside inherit it)."""
    with trace.use_span(span, end_on_exit=False, record_exception=False,
                        set_status_on_exception=False):
        yield


class traced_run:  # noqa: N801 - used as a context manager, like contextlib's
    """``with traced_run(...) as run``: the run's span (``run.span``, made current by
    :func:`current` where its tasks start), ended on exit with ``run.result``'s usage,
    layers and decisions, or with the error that ended the run. Its layers' spans
    (``aft.layer N``, from a layer's first request to its last) are made by
    :func:`generation_span` and ended here."""

    def __init__(self, strategy: str, width: int, depth: int) -> None:
        self.span, self.result = run_span(strategy, width, depth), None
        #: Per layer index: its span and when its latest request ended (ns).
        self.layers: dict[int, list[Any]] = {}
        if self.span.is_recording():
            _RUNS[self.span.get_span_context().span_id] = self

    def __enter__(self) -> traced_run:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        _RUNS.pop(self.span.get_span_context().span_id, None)
        end_run(self.span, self.result if error is None else None, error, self.layers)

    def layer(self, index: int) -> list[Any]:
        """The layer's span (started with its first request) and its latest end."""
        if index not in self.layers:
            self.layers[index] = [TRACER.start_span(
                f"aft.layer {index}", context=trace.set_span_in_context(self.span),
                attributes={"aft.layer.index": index}), 0]
        return self.layers[index]


#: The runs being traced in this process, by their span's id.
_RUNS: dict[int, traced_run] = {}


def end_run(span: Span, result: Any = None, error: BaseException | None = None,
            layers: Mapping[int, list[Any]] | None = None) -> None:
    """Usage, layer and decision events from ``result`` (or the error), then the end;
    each of ``layers``' spans ends when its latest request did, with its layer's usage."""
    for index, (layer_span, ended) in (layers or {}).items():
        done = next((la for la in result.layers if la.index == index), None) if result else None
        if done is not None:
            layer_span.set_attributes(_layer_attributes(done))
        if error is not None:  # the run failed: its layers' totals were never made
            layer_span.set_status(StatusCode.ERROR, "the run failed")
        layer_span.end(end_time=ended or None)
    if not span.is_recording():
        return span.end()
    if result is not None:
        u = result.usage
        span.set_attributes({"gen_ai.usage.input_tokens": u.prompt_tokens,
                             "gen_ai.usage.output_tokens": u.completion_tokens,
                             "aft.generations": u.generations, "aft.cost_usd": u.cost_usd,
                             "aft.unpriced": list(u.unpriced)})
        for layer in result.layers:
            span.add_event("aft.layer", _layer_attributes(layer))
            for r in layer.outputs:
                if r.decision:
                    span.add_event("aft.decision", {
                        "aft.layer.index": layer.index, "aft.rule": str(r.decision.get("rule")),
                        "aft.decision": json.dumps(r.decision, default=str)[:4000]})
                if r.prompt.get("trimmed"):  # drafts cut to fit the aggregator's window
                    span.add_event("aft.trim", {
                        "aft.layer.index": layer.index, "aft.slot": r.slot,
                        "aft.trimmed": json.dumps(r.prompt["trimmed"])[:4000]})
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(StatusCode.ERROR, str(error)[:500])
    span.end()


def _layer_attributes(layer: Any) -> dict[str, Any]:
    return {"aft.layer.index": layer.index, "aft.layer.kind": layer.kind,
            "aft.layer.ok": layer.usage.generations, "aft.layer.failed": layer.usage.failures,
            "aft.layer.input_tokens": layer.usage.prompt_tokens,
            "aft.layer.output_tokens": layer.usage.completion_tokens,
            "aft.layer.cost_usd": layer.usage.cost_usd,
            "aft.layer.unpriced": list(layer.usage.unpriced)}


@contextmanager
def generation_span(label: str, model: str, layer: int, slots: Sequence[int], sampling: Any,
                    messages: Sequence[Mapping[str, Any]]) -> Iterator[Span]:
    """One request to a model, under its layer's span where the run is traced here;
    :func:`record` adds what came back."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": _provider(label),
        "gen_ai.request.model": model or label, "aft.backend": label, "aft.layer": layer,
        "aft.slots": list(slots), "gen_ai.request.choice.count": len(slots)}
    for name in ("temperature", "top_p", "max_tokens", "seed", "frequency_penalty",
                 "presence_penalty"):
        value = getattr(sampling, name, None)
        if value is not None:
            attrs[f"gen_ai.request.{name}"] = value
    if capture_content():
        attrs["gen_ai.input.messages"] = json.dumps(list(messages), default=str)
    run = _RUNS.get(trace.get_current_span().get_span_context().span_id)
    entry = run.layer(layer) if run is not None else None
    parent = trace.set_span_in_context(entry[0]) if entry is not None else None
    try:
        with TRACER.start_as_current_span(f"chat {model or label}", context=parent,
                                          kind=SpanKind.CLIENT, attributes=attrs,
                                          record_exception=False,
                                          set_status_on_exception=False) as span:
            yield span
    finally:
        if entry is not None:
            entry[1] = max(entry[1], time.time_ns())


def record(span: Span, gens: Sequence[Any], error: BaseException | None = None,
           costs: Sequence[float | None] = ()) -> None:
    """What came back: model, tokens (cached ones too), finish reasons, dollars
    (``aft.cost_usd``, left out where a price is unknown), the error."""
    if not span.is_recording():
        return
    if gens:
        span.set_attributes({
            "gen_ai.response.model": gens[0].model or "",
            "gen_ai.usage.input_tokens": sum(g.prompt_tokens for g in gens),
            "gen_ai.usage.output_tokens": sum(g.completion_tokens for g in gens),
            "gen_ai.usage.cache_read.input_tokens": sum(g.cached_tokens for g in gens),
            "gen_ai.response.finish_reasons": [g.finish_reason or "" for g in gens]})
        if costs and all(c is not None for c in costs):
            span.set_attribute("aft.cost_usd", float(sum(costs)))  # type: ignore[arg-type]
        if capture_content():
            span.set_attribute("gen_ai.output.messages", json.dumps(
                [{"role": "assistant", "content": g.text, "tool_calls": g.tool_calls}
                 for g in gens], default=str))
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(StatusCode.ERROR, str(error)[:500])


def outgoing_headers() -> dict[str, str]:
    """The W3C trace headers of the current span (empty when nothing is traced)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def incoming_context(headers: Mapping[str, str]) -> Any:
    """The trace context a request's headers carry (``traceparent``), to continue."""
    return propagate.extract(dict(headers))


@contextmanager
def continued(ctx: Any) -> Iterator[None]:
    """Runs the block in the trace context ``ctx`` (from :func:`incoming_context`)."""
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def configure_from_env() -> Any:
    """A tracer provider exporting OTLP over HTTP, when ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (or ``..._TRACES_ENDPOINT``) is set and the SDK is installed; ``None`` otherwise. The
    caller shuts it down at exit (it flushes what is queued)."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise ImportError("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is "
                          "not installed: pip install 'aft-sdk[otel]'") from e
    service = os.environ.get("OTEL_SERVICE_NAME", "aft-sdk")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
