"""Spans of a served run, as an OpenTelemetry backend receives them: ``aft serve`` with
the standard ``OTEL_EXPORTER_OTLP_*`` settings exports over OTLP/HTTP to a receiver of
ours on 127.0.0.1; the client's ``traceparent`` is continued, and the upstream requests
carry it on."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="needs pip install 'aft-sdk[serve]'")
pytest.importorskip("opentelemetry.sdk", reason="needs pip install 'aft-sdk[otel]'")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http",
                    reason="needs pip install 'aft-sdk[otel]'")

import httpx  # noqa: E402
import openai  # noqa: E402

from aft_sdk import AggregateGraph, OpenAIBackend  # noqa: E402
from aft_sdk.testing import LocalServer  # noqa: E402
from aft_sdk.testing.otlp_receiver import OTLPReceiver  # noqa: E402

KEY = "tracing-test-key-5"
UPSTREAM_KEY = "upstream-secret-key-7"
TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
QUESTION = "Which river runs through the quiet town?"


def _done(spans: list[dict]) -> bool:
    return any(s["name"] == "invoke_agent aft-sdk" for s in spans)


def test_a_served_run_is_one_trace_from_the_clients_span_to_the_upstream(
        fault, tmp_path) -> None:
    config = tmp_path / "pa.yaml"
    backend = f"{{type: openai, model: MODEL, base_url: '{fault.base_url}', max_retries: 0, " \
              f"api_key: {UPSTREAM_KEY}}}"
    config.write_text("\n".join(["name: pa", "width: 3", "depth: 1", "proposers:",
                                 "  - " + backend.replace("MODEL", "p"), "aggregator:",
                                 "  - " + backend.replace("MODEL", "a")[:-1]
                                 + ", price: {input: 1.0, output: 2.0}}"]) + "\n")
    with OTLPReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
               "OTEL_SERVICE_NAME": "aft-serve-test", "AFT_TEST_KEYS": KEY}
        with LocalServer.aft_serve([config], env=env,
                                   extra_args=["--api-key-env", "AFT_TEST_KEYS",
                                               "--debug-ui"]) as served:
            client = openai.OpenAI(base_url=served.base_url, api_key=KEY, max_retries=0,
                                   default_headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
            r = client.chat.completions.create(
                model="pa", messages=[{"role": "user", "content": QUESTION}])
            spans = otlp.wait_for(_done)
            # The recent runs' pages sit behind the same key, and carry no key either.
            pages = served.base_url.removesuffix("/v1") + "/debug/runs"
            assert httpx.get(pages).status_code == 401
            listed = httpx.get(pages, headers={"Authorization": f"Bearer {KEY}"})
            assert listed.status_code == 200 and QUESTION in listed.text
            assert KEY not in listed.text and UPSTREAM_KEY not in listed.text
    (run,) = [s for s in spans if s["name"] == "invoke_agent aft-sdk"]
    assert (run["trace_id"], run["parent_span_id"]) == (TRACE, PARENT)  # continued
    assert run["service"] == "aft-serve-test"
    assert run["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert (run["attributes"]["aft.width"], run["attributes"]["aft.depth"]) == (3, 1)
    chats = [s for s in spans if s["name"].startswith("chat ")]
    # Run > layer > request: each layer's span holds its requests, and sums them.
    layer_spans = {s["span_id"]: s for s in spans if s["name"].startswith("aft.layer ")}
    assert sorted(s["attributes"]["aft.layer.index"] for s in layer_spans.values()) == [0, 1]
    assert all(s["parent_span_id"] == run["span_id"] for s in layer_spans.values())
    assert all(c["trace_id"] == TRACE and c["kind"] == "CLIENT"
               and layer_spans[c["parent_span_id"]]["attributes"]["aft.layer.index"]
               == c["attributes"]["aft.layer"] for c in chats)
    for span_id, layer in layer_spans.items():
        mine = [c["attributes"] for c in chats if c["parent_span_id"] == span_id]
        assert layer["attributes"]["aft.layer.input_tokens"] == sum(
            a["gen_ai.usage.input_tokens"] for a in mine)
        assert layer["start_ns"] <= min(c["start_ns"] for c in chats
                                        if c["parent_span_id"] == span_id)
        assert layer["end_ns"] >= max(c["end_ns"] for c in chats
                                      if c["parent_span_id"] == span_id)
    per_layer = {0: 0, 1: 0}
    for c in chats:
        per_layer[c["attributes"]["aft.layer"]] += c["attributes"]["gen_ai.request.choice.count"]
        assert c["attributes"]["gen_ai.provider.name"] == "openai"
    assert per_layer == {0: 3, 1: 1}  # three drafts (one request or three), one aggregation
    # The generations' token attributes add up to what the response reported.
    attrs = [c["attributes"] for c in chats]
    assert sum(a["gen_ai.usage.input_tokens"] for a in attrs) == r.usage.prompt_tokens
    assert sum(a["gen_ai.usage.output_tokens"] for a in attrs) == r.usage.completion_tokens
    assert run["attributes"]["gen_ai.usage.input_tokens"] == r.usage.prompt_tokens
    # Dollars where a price is known (the aggregator's own), none where it is not.
    (agg,) = [a for a in attrs if a["aft.layer"] == 1]
    assert agg["aft.cost_usd"] == pytest.approx(
        (agg["gen_ai.usage.input_tokens"] + 2 * agg["gen_ai.usage.output_tokens"]) / 1e6)
    assert not any("aft.cost_usd" in a for a in attrs if a["aft.layer"] == 0)
    assert run["attributes"]["aft.cost_usd"] == pytest.approx(agg["aft.cost_usd"])
    assert run["attributes"]["aft.unpriced"] == [f"openai:p@{fault.base_url}"]
    layers = [e["attributes"] for e in run["events"] if e["name"] == "aft.layer"]
    assert [(e["aft.layer.index"], e["aft.layer.ok"]) for e in layers] == [(0, 3), (1, 1)]
    # Every upstream request carried the trace on.
    assert fault.headers and all(h.get("traceparent", "").split("-")[1] == TRACE
                                 for h in fault.headers)
    # No key, and (by default) no message text, in any span.
    dump = json.dumps(spans)
    assert UPSTREAM_KEY not in dump and KEY not in dump and QUESTION not in dump


def test_a_vote_records_its_decision_and_content_only_when_asked(fault, monkeypatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import aft_sdk.tracing as tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "TRACER", provider.get_tracer("aft_sdk"))
    fault.script("p", ["say:The answer is 4.", "say:The answer is 4.", "say:The answer is 5."])
    p = OpenAIBackend("p", base_url=fault.base_url, native_n=False)
    graph = AggregateGraph(p, strategy="vote", width=3)
    with provider.get_tracer("app").start_as_current_span("handle request") as outer:
        graph.invoke(QUESTION)  # a blocking call: the run is under the caller's span
    (run,) = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent aft-sdk"]
    assert run.parent is not None and run.parent.span_id == outer.get_span_context().span_id
    assert run.context.trace_id == outer.get_span_context().trace_id
    (decision,) = [e for e in run.events if e.name == "aft.decision"]
    assert decision.attributes["aft.rule"] == "majority"
    assert QUESTION not in json.dumps([dict(s.attributes) for s in exporter.get_finished_spans()])
    exporter.clear()
    monkeypatch.setenv(tracing.CAPTURE, "true")
    fault.script("p", ["say:four"] * 3)
    graph.invoke(QUESTION)
    chat = next(s for s in exporter.get_finished_spans() if s.name == "chat p")
    assert QUESTION in chat.attributes["gen_ai.input.messages"]
    assert "four" in chat.attributes["gen_ai.output.messages"]


def test_drafts_cut_to_fit_the_window_are_a_span_event(fault, monkeypatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import aft_sdk.tracing as tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "TRACER", provider.get_tracer("aft_sdk"))
    fault.script("prop", ["say:" + "x" * 2400, "say:" + "y" * 2400])
    agg = OpenAIBackend("agg", base_url=fault.base_url, context_window=400)
    result = AggregateGraph(OpenAIBackend("prop", base_url=fault.base_url, native_n=False), agg,
                            width=2, aggregator_sampling={"max_tokens": 64}).invoke("q")
    (run,) = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent aft-sdk"]
    (trim,) = [e for e in run.events if e.name == "aft.trim"]
    assert trim.attributes["aft.layer.index"] == 1
    assert json.loads(trim.attributes["aft.trimmed"]) == result.layers[1].outputs[0].prompt["trimmed"]
