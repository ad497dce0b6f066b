"""The LangGraph Server factory: a thread keeps its conversation, each run its own records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from aft_sdk.integrations.langgraph_server import make_graph

ROOT = Path(__file__).resolve().parents[2]


def test_langgraph_json_points_at_the_factory_with_the_aft_run_default(
        gguf_path, monkeypatch, tmp_path) -> None:
    from aft_sdk.backends.factory import default_aggregator
    from aft_sdk.integrations.langgraph_server import build

    spec = json.loads((ROOT / "langgraph.json").read_text())
    module, _, name = spec["graphs"]["aft"].partition(":")
    assert (ROOT / module).is_file() and name == "make_graph"
    assert "AFT_GRAPH_CONFIG" not in spec.get("env", {})  # no config: aft run's default
    monkeypatch.delenv("AFT_GRAPH_CONFIG", raising=False)
    served = build().plan.layers[-1].backend_for(0).label
    assert served == default_aggregator().label
    monkeypatch.chdir(tmp_path)  # a config path relative to the repository still works
    graph = build({"configurable": {"aft_config": "recipes/configs/graph.yaml"}})
    assert graph.width >= 1


async def test_the_public_schemas_and_errors_fit_langgraph_server(fault) -> None:
    import pytest

    from aft_sdk import AggregateGraph, ConfigError, InsufficientProposalsError

    graph = AggregateGraph(fault.backend("p"), fault.backend("a"), width=2, min_proposals=2)
    assert list(graph.graph.get_input_jsonschema()["properties"]) == ["messages"]
    assert sorted(graph.graph.get_output_jsonschema()["properties"]) == [
        "answer", "messages", "outputs"]
    with pytest.raises(ConfigError, match="the input has no messages"):
        await graph.graph.ainvoke({})
    fault.script("p", ["500"])
    with pytest.raises(InsufficientProposalsError) as err:
        await graph.ainvoke("q")
    # The server shows messages of builtin error types only; ours are RuntimeErrors.
    assert isinstance(err.value, RuntimeError) and "only 1 of 2 proposals" in str(err.value)


async def test_a_server_thread_runs_turn_after_turn(fault, tmp_path, monkeypatch) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(
        f"width: 2\ndepth: 1\nproposers:\n  - {{type: openai, model: p, base_url: '{fault.base_url}'}}\n"
        f"aggregator:\n  - {{type: openai, model: a, base_url: '{fault.base_url}'}}\n")
    monkeypatch.setenv("AFT_GRAPH_CONFIG", str(config))
    graph = make_graph()
    # LangGraph Server compiles the factory's graph with its own checkpointer.
    served = graph.builder.compile(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t1"}}
    first = await served.ainvoke({"messages": [("user", "first question")]}, thread)
    second = await served.ainvoke({"messages": [("user", "second question")]}, thread)
    assert [m.type for m in second["messages"]] == ["human", "ai", "human", "ai"]
    assert len(first["outputs"]) == 3 and len(second["outputs"]) == 3  # not 6: fresh records
    assert second["answer"] == second["messages"][-1].content
    last_prompts = [r["messages"] for r in fault.requests if r["model"] == "p"][-1]
    assert last_prompts[-1] == {"role": "user", "content": "second question"}
    assert len(last_prompts) == 3  # the earlier turn is part of the conversation


async def test_the_deadline_holds_when_the_server_calls_the_compiled_graph(fault) -> None:
    # LangGraph Server runs the compiled graph with a run id and no aft context: the
    # graph's own deadline_s must still cut a hanging proposer (before this, the run
    # waited for the backend's own timeout).
    import uuid

    from aft_sdk.errors import GraphTimeoutError
    from aft_sdk.graphs import AggregateGraph

    fault.script("slow", ["hang:5"])
    graph = AggregateGraph([f"{fault.base_url}#p", f"{fault.base_url}#slow"],
                           f"{fault.base_url}#a", width=2, deadline_s=1.0)
    with pytest.raises(GraphTimeoutError, match="within the layer timeout/deadline"):
        await graph.graph.ainvoke({"messages": [{"role": "user", "content": "hi"}]},
                                  {"run_id": uuid.uuid4()})
    # The hanging proposer was cut at the deadline and recorded; the aggregation had no
    # time left. With room for it, the survivor is aggregated.
    fault.script("slow", ["hang:5"])
    roomy = AggregateGraph([f"{fault.base_url}#p", f"{fault.base_url}#slow"],
                           f"{fault.base_url}#a", width=2, deadline_s=3.0, layer_timeout_s=1.0)
    state = await roomy.graph.ainvoke({"messages": [{"role": "user", "content": "hi"}]},
                                      {"run_id": uuid.uuid4()})
    failed = [r for r in state["outputs"] if not r["ok"]]
    assert [(r["slot"], r["error"]["type"]) for r in failed] == [(1, "GraphTimeoutError")]


async def test_answer_tokens_stream_in_messages_mode_once(fault) -> None:
    from aft_sdk.graphs import AggregateGraph

    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=2)
    chunks, whole = [], []
    async for message, meta in graph.graph.astream(
            {"messages": [{"role": "user", "content": "hi"}]}, stream_mode="messages"):
        if meta["langgraph_node"] == "aggregate_1":
            chunks.append(message)
        elif meta["langgraph_node"] == "finish":
            whole.append(message)
    text = "".join(c.content for c in chunks)
    assert text.startswith("answer 0 from a") and len([c for c in chunks if c.content]) > 3
    assert whole == []  # the answer message is not sent again after its tokens
    assert [r for r in fault.requests if r["model"] == "a"][0]["stream"] is True
    state = await graph.graph.ainvoke({"messages": [{"role": "user", "content": "hi"}]})
    assert state["messages"][-1].content == state["answer"] == text


def test_the_compiled_graph_runs_synchronously_too(fault) -> None:
    # graph.graph.invoke / stream, and the graph as a node of a sync parent graph.
    from langgraph.graph import END, START, MessagesState, StateGraph

    from aft_sdk.graphs import AggregateGraph

    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=2)
    state = graph.graph.invoke({"messages": [{"role": "user", "content": "hi"}]})
    assert state["answer"].startswith("answer 0 from a") and len(state["outputs"]) == 3
    tokens = [m.content for m, meta in graph.graph.stream(
        {"messages": [{"role": "user", "content": "hi"}]}, stream_mode="messages")
        if meta["langgraph_node"] == "aggregate_1"]
    assert "".join(tokens) == state["answer"]
    parent = StateGraph(MessagesState)
    parent.add_node("aft", graph.graph)
    parent.add_edge(START, "aft")
    parent.add_edge("aft", END)
    out = parent.compile().invoke({"messages": [{"role": "user", "content": "hi"}]})
    assert out["messages"][-1].content == state["answer"]
