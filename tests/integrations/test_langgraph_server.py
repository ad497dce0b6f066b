"""The LangGraph Server factory: a thread keeps its conversation, each run its own records."""

from __future__ import annotations

import json
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver

from aft_sdk.integrations.langgraph_server import make_graph

ROOT = Path(__file__).resolve().parents[2]


def test_langgraph_json_points_at_the_factory() -> None:
    spec = json.loads((ROOT / "langgraph.json").read_text())
    module, _, name = spec["graphs"]["aft"].partition(":")
    assert (ROOT / module).is_file() and name == "make_graph"
    assert (ROOT / spec["env"]["AFT_GRAPH_CONFIG"]).is_file()


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
