"""Runs that used to return wrong results silently, on the fault server."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from aft_sdk import (
    AftError,
    AggregateGraph,
    ConfigError,
    GraphConfig,
    GraphTimeoutError,
    OpenAIBackend,
    PartialGenerationError,
    get_template,
)
from aft_sdk.config import load_yaml


def api(fault, model: str, **kw) -> OpenAIBackend:
    return fault.backend(model, **kw)


async def test_a_reused_thread_id_is_refused_not_mixed(fault) -> None:
    graph = AggregateGraph(api(fault, "p"), api(fault, "a"), width=3, depth=1,
                           checkpointer=InMemorySaver())
    first = await graph.ainvoke("question one", thread_id="t")
    assert len(first.layers[0].outputs) == 3 and len(first.layers[1].outputs) == 1
    with pytest.raises(ConfigError, match="already holds a finished run.*resume"):
        await graph.ainvoke("question two", thread_id="t")
    again = await graph.ainvoke("question two", thread_id="t2")
    assert len(again.layers[0].outputs) == 3
    assert all("question two" in r.text for r in again.layers[0].outputs)


async def test_model_text_is_never_template_substituted(fault) -> None:
    draft = "use {question} literally, all {num_proposals} of {proposals}"
    fault.script("p", [f"say:{draft}"] * 2)
    graph = AggregateGraph(api(fault, "p"), api(fault, "a"), width=2, depth=1,
                           preset="select-v1")
    await graph.ainvoke("What is 2+2?")
    prompt = next(r for r in fault.requests if r["model"] == "a")["messages"][-1]["content"]
    assert prompt.count(draft) == 2  # both drafts verbatim, placeholders untouched
    assert prompt.startswith("Question:\nWhat is 2+2?")
    rendered = get_template("aft-v1").render([{"role": "user", "content": "{proposals}"}],
                                             ["{index} {text} {model}"])
    assert "1. {index} {text} {model}" in rendered[0]["content"]
    assert rendered[1]["content"] == "{proposals}"


async def test_a_custom_item_format_separator_and_placement_render_byte_for_byte(fault) -> None:
    graph = AggregateGraph(api(fault, "p"), api(fault, "a"), width=2, depth=1,
                           template="DRAFTS<{proposals}>", item_format="<d n={index}>{text}</d>",
                           separator="|", placement="user")
    await graph.ainvoke("q?")
    messages = next(r for r in fault.requests if r["model"] == "a")["messages"]
    texts = [r["messages"][-1]["content"] for r in fault.requests if r["model"] == "p"]
    assert messages == [{"role": "user", "content": "DRAFTS<<d n=1>answer 0 from p (seed None) "
                         "to: q?</d>|<d n=2>answer 0 from p (seed None) to: q?</d>>"}]
    assert texts == ["q?", "q?"]
    with pytest.raises(ConfigError, match=r"item_format must contain \{text\}"):
        AggregateGraph(api(fault, "p"), api(fault, "a"), prompt={"item_format": "{index}"})
    # The flat keyword still works, with a warning that says what to write instead.
    with pytest.warns(DeprecationWarning, match=r"prompt=\{'item_format': \.\.\.\}"), \
            pytest.raises(ConfigError, match=r"item_format must contain \{text\}"):
        AggregateGraph(api(fault, "p"), api(fault, "a"), item_format="{index}")


def test_partial_sampling_merges_onto_the_role_default_everywhere(tmp_path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("aggregator_sampling: {temperature: 0.2}\n"
                    "layers:\n  1: {sampling: {top_p: 0.5}}\n  0: {sampling: {seed: 7}}\n")
    from_yaml = load_yaml(path, GraphConfig)
    graph = AggregateGraph("http://127.0.0.1:9/v1#p", "http://127.0.0.1:9/v1#a",
                           aggregator_sampling={"temperature": 0.2},
                           layers={1: {"sampling": {"top_p": 0.5}}, 0: {"sampling": {"seed": 7}}})
    for cfg in (from_yaml, graph.config):
        agg = cfg.layer_sampling(1)
        assert (agg.temperature, agg.top_p, agg.max_tokens) == (0.2, 0.5, 1024)
        prop = cfg.layer_sampling(0)
        assert (prop.seed, prop.max_tokens, prop.temperature) == (7, 512, 0.7)
    assert graph.plan.layers[1].sampling == from_yaml.layer_sampling(1)


async def test_merged_sampling_reaches_the_server(fault) -> None:
    graph = AggregateGraph(api(fault, "p"), api(fault, "a"), width=2, depth=1,
                           aggregator_sampling={"temperature": 0.2})
    await graph.ainvoke("q")
    agg = next(r for r in fault.requests if r["model"] == "a")
    assert (agg["temperature"], agg["max_tokens"]) == (0.2, 1024)


async def test_n_emulation_keeps_the_outputs_that_succeeded(fault) -> None:
    fault.honour_n = False
    backend = api(fault, "n", native_n=False)
    fault.script("n", ["ok", "500", "ok"])
    with pytest.raises(PartialGenerationError, match="only 2 of 3 outputs") as err:
        await backend.generate([{"role": "user", "content": "q"}], n=3)
    assert len(err.value.generations) == 2 and err.value.wanted == 3
    # Detected-n path: the server ignores n, the top-up calls partly fail.
    detect = api(fault, "d")
    fault.script("d", ["ok", "ok", "500"])
    with pytest.raises(PartialGenerationError, match="only 2 of 3"):
        await detect.generate([{"role": "user", "content": "q"}], n=3)


async def test_a_partial_n_request_keeps_its_successes_in_the_graph(fault) -> None:
    # Native n grouped into one request; the server returns fewer choices and the
    # top-up call fails: the branch records the choices it got and one failure.
    fault.honour_n = False
    backend = api(fault, "g", native_n=True)
    fault.script("g", ["ok", "500"])
    graph = AggregateGraph(backend, api(fault, "a"), width=2, depth=1)
    result = await graph.ainvoke("q")
    assert [r.ok for r in result.layers[0].outputs] == [True, False]
    assert result.layers[0].outputs[1].error["type"] == "PartialGenerationError"


async def test_depth_zero_stream_reports_each_layer_once(fault) -> None:
    graph = AggregateGraph(api(fault, "p"), width=3, depth=0)
    events = [e async for e in graph.astream("q")]
    layers = [e for e in events if e["event"] == "layer"]
    assert layers == [{"event": "layer", "layer": 0, "ok": 3, "failed": 0}]
    assert events[-1]["event"] == "result"


async def test_a_deadline_in_the_final_step_is_a_graph_timeout(fault) -> None:
    fault.script("a", ["hang:5"])
    graph = AggregateGraph(api(fault, "p"), api(fault, "a"), width=2, depth=1, deadline_s=1.0)
    with pytest.raises(GraphTimeoutError):
        [e async for e in graph.astream("q")]
    fault.script("a", ["hang:5"])
    with pytest.raises(GraphTimeoutError):
        await graph.ainvoke("q")


def test_load_40_graphs_with_random_server_errors(fault) -> None:
    fault.fail_rate = 0.2  # a random fifth of requests answer 500
    graph = AggregateGraph(OpenAIBackend("p", base_url=fault.base_url),
                           OpenAIBackend("a", base_url=fault.base_url), width=3, depth=1)
    questions = [f"question {i}" for i in range(40)]
    results = graph.batch(questions, max_concurrency=20, return_exceptions=True)
    assert len(results) == 40
    assert all(isinstance(r, AftError) or r.answer for r in results)
    ok = [r for r in results if not isinstance(r, AftError)]
    for q, r in zip(questions, results):
        if not isinstance(r, AftError):
            assert r.messages[-1]["content"] == q
    # The client's retries absorbed most failures: far more than 80% of runs finish.
    assert len(ok) >= 36
    assert fault.count() > sum(r.usage.generations for r in ok)
