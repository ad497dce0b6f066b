"""Partial failure, deadlines, checkpoint resume and context budgets, on the fault server."""

from __future__ import annotations

import sqlite3
import time
from typing import Annotated, TypedDict

import pytest
from early import slack
from langchain_core.messages import AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from aft_sdk import (
    AggregateGraph,
    ConfigError,
    GraphError,
    InsufficientProposalsError,
    OpenAIBackend,
    RunContext,
)


class Parent(TypedDict):
    """A user's own graph with the aggregate graph as one of its nodes."""

    messages: Annotated[list[AnyMessage], add_messages]


def api(fault, model: str, **kw) -> OpenAIBackend:
    return fault.backend(model, **kw)


async def test_one_failing_proposer_leaves_the_others_work(fault) -> None:
    fault.script("bad", ["500"])
    graph = AggregateGraph([api(fault, "good"), api(fault, "bad"), api(fault, "good2")],
                           api(fault, "agg"), width=3, depth=1)
    result = await graph.ainvoke("question one")
    failed = result.failures
    assert len(failed) == 1 and failed[0].slot == 1 and failed[0].error["type"] == "ServerError"
    assert result.usage.failures == 1 and result.usage.generations == 3
    agg_prompt = next(r for r in fault.requests if r["model"] == "agg")["messages"][0]["content"]
    assert "1. answer 0 from good " in agg_prompt and "2. answer 0 from good2 " in agg_prompt
    assert "from bad" not in agg_prompt


async def test_hanging_proposer_is_cut_by_the_layer_timeout(fault) -> None:
    fault.script("slow", ["hang:20"])
    graph = AggregateGraph([api(fault, "fast"), api(fault, "slow")], api(fault, "agg"),
                           width=2, depth=1, layer_timeout_s=1.0, deadline_s=10)
    t0 = time.monotonic()
    result = await graph.ainvoke("question two")
    assert time.monotonic() - t0 < slack(8)
    (failed,) = result.failures
    assert failed.backend.startswith("openai:slow@") and failed.error["type"] == "GraphTimeoutError"
    assert result.answer.startswith("answer 0 from agg")


async def test_all_failing_raises_within_the_deadline(fault) -> None:
    fault.script("bad", ["500", "hang:30", "401"])
    graph = AggregateGraph(api(fault, "bad"), api(fault, "agg"), width=3, depth=1,
                           deadline_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(InsufficientProposalsError) as info:
        await graph.ainvoke("question three")
    assert time.monotonic() - t0 < slack(6)
    err = info.value
    assert err.layer == 0 and len(err.failures) == 3
    assert {f["type"] for f in err.failures} == {"ServerError", "GraphTimeoutError",
                                                 "AuthenticationError"}
    assert "only 0 of 3 proposals succeeded, 1 needed" in str(err)
    assert fault.count("agg") == 0


async def test_min_proposals_is_enforced(fault) -> None:
    fault.script("flaky", ["500"])
    graph = AggregateGraph(api(fault, "flaky"), api(fault, "agg"), width=3, min_proposals=3)
    with pytest.raises(InsufficientProposalsError, match="only 2 of 3 proposals succeeded, 3"):
        await graph.ainvoke("q")


async def test_failed_run_resumes_without_redoing_finished_branches(fault) -> None:
    fault.script("agg", ["ok", "ok", "ok", "500"])  # layer 1 succeeds, the final step fails once
    graph = AggregateGraph(api(fault, "prop"), api(fault, "agg"), width=3, depth=2,
                           checkpointer=InMemorySaver())
    with pytest.raises(GraphError, match="resume"):
        await graph.ainvoke("resumable question", thread_id="t1")
    assert fault.count("prop") == 3 and fault.count("agg") == 3 + 1
    result = await graph.aresume("t1")
    assert fault.count("prop") == 3  # proposals were not redone
    assert fault.count("agg") == 3 + 2  # only the final aggregation ran again
    assert result.usage.generations == 7 and result.answer.startswith("answer 0 from agg")


async def test_sqlite_checkpoint_resumes_in_a_new_graph_after_a_crash(fault, tmp_path) -> None:
    db = str(tmp_path / "runs.db")
    fault.script("agg", ["500"])
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        graph = AggregateGraph(api(fault, "prop"), api(fault, "agg"), width=2, depth=1,
                               checkpointer=saver)
        with pytest.raises(GraphError):
            await graph.ainvoke("survives restarts", thread_id="job-7")
    # A new process would build a new graph on the same file.
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        graph = AggregateGraph(api(fault, "prop"), api(fault, "agg"), width=2, depth=1,
                               checkpointer=saver)
        result = await graph.aresume("job-7")
    assert fault.count("prop") == 2 and fault.count("agg") == 2
    assert [r.ok for r in result.layers[0].outputs] == [True, True]


def test_sync_sqlite_saver_is_refused_with_advice(fault, tmp_path) -> None:
    saver = SqliteSaver(sqlite3.connect(tmp_path / "x.db", check_same_thread=False))
    with pytest.raises(ConfigError, match="AsyncSqliteSaver"):
        AggregateGraph(api(fault, "p"), checkpointer=saver)


@pytest.mark.needs("embedded")
def test_resume_needs_a_checkpointer_and_a_known_thread(fault) -> None:
    with pytest.raises(ConfigError, match="checkpointer"):
        AggregateGraph(api(fault, "p")).resume("x")
    graph = AggregateGraph(api(fault, "p"), api(fault, "a"), checkpointer=InMemorySaver())
    with pytest.raises(ConfigError, match="no checkpoint for thread_id='nope'"):
        graph.resume("nope")


async def test_oversized_proposals_are_trimmed_evenly_and_recorded(fault) -> None:
    # The aggregator's window (400 tokens, estimated at 3 chars each) cannot hold
    # three 2,400-character proposals plus 64 output tokens.
    fault.script("prop", ["say:" + "x" * 2400, "say:short answer", "say:" + "y" * 2400])
    agg = api(fault, "agg", context_window=400)
    graph = AggregateGraph(api(fault, "prop", native_n=False), agg, width=3, depth=1,
                           aggregator_sampling={"max_tokens": 64})
    result = await graph.ainvoke("q")
    trimmed = result.layers[1].outputs[0].prompt["trimmed"]
    # Requests ran concurrently, so find which slot drew the short answer.
    short = next(r.slot for r in result.layers[0].outputs if r.text == "short answer")
    long_slots = sorted({0, 1, 2} - {short})
    assert sorted(int(k) for k in trimmed) == long_slots  # the short one is kept whole
    a, b = (trimmed[str(k)] for k in long_slots)
    assert a[0] == b[0] == 800 and a[1] < 800
    assert abs(a[1] - b[1]) <= 2  # even split
    sent = next(r for r in fault.requests if r["model"] == "agg")["messages"]
    assert f"{short + 1}. short answer" in sent[0]["content"]
    assert sum(agg.count_tokens(m["content"]) for m in sent) + 64 <= 400


async def test_prompt_that_cannot_fit_says_what_to_change(fault) -> None:
    graph = AggregateGraph(api(fault, "prop"), api(fault, "agg", context_window=100), width=2,
                           aggregator_sampling={"max_tokens": 90})
    with pytest.raises(ConfigError, match="lower the aggregator's max_tokens"):
        await graph.ainvoke("q")


async def test_traces_never_hold_api_keys(fault) -> None:
    key = "sk-test-very-secret"
    b = OpenAIBackend("p", base_url=fault.base_url, api_key=key)
    result = await AggregateGraph(b, b, width=2).ainvoke("q")
    assert key not in result.model_dump_json()


async def test_streaming_yields_progress_and_tokens_before_the_result(fault) -> None:
    graph = AggregateGraph(api(fault, "p"), api(fault, "agg"), width=2, depth=2)
    events = [e async for e in graph.astream("stream me")]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "result"
    assert kinds.index("token") < len(kinds) - 1
    layers = [e["layer"] for e in events if e["event"] == "layer"]
    assert layers == [0, 1, 2]
    text = "".join(e["text"] for e in events if e["event"] == "token")
    assert text == events[-1]["result"].answer


@pytest.mark.parametrize("shape", [{"depth": 0}, {"preset": "select-v1"}])
async def test_streamed_tokens_are_the_answer_without_a_token_stream(fault, shape) -> None:
    fault.script("p", ["say:first draft", "say:second draft"])
    fault.script("agg", ["say:2"])  # a selecting aggregator answers with an index
    graph = AggregateGraph(api(fault, "p"), api(fault, "agg"), width=2,
                           **{"depth": 1, **shape})
    events = [e async for e in graph.astream("stream me")]
    result = events[-1]["result"]
    tokens = [e["text"] for e in events if e["event"] == "token"]
    assert tokens == [result.answer] and result.answer in ("first draft", "second draft")
    if "preset" in shape:  # the second draft was picked, not the raw "2"
        assert result.answer == result.proposals[1]


async def test_a_malformed_proposer_is_one_failed_branch(fault) -> None:
    fault.script("bad", ["bad-model"])
    graph = AggregateGraph([api(fault, "good"), api(fault, "bad")], api(fault, "agg"),
                           width=2, depth=1)
    result = await graph.ainvoke("q")
    (failed,) = result.failures
    assert failed.error["type"] == "MalformedResponseError" and "bad@" in failed.backend


async def test_seeded_slots_get_distinct_seeds(fault) -> None:
    p = api(fault, "p", native_n=False)
    graph = AggregateGraph(p, api(fault, "agg", native_n=False), width=3, depth=2,
                           proposer_sampling={"seed": 10}, aggregator_sampling={"seed": 50})
    result = await graph.ainvoke("q")
    assert sorted(r["seed"] for r in fault.requests if r["model"] == "p") == [10, 11, 12]
    assert sorted(r["seed"] for r in fault.requests if r["model"] == "agg") == [50, 50, 51, 52]
    assert len({r.text for r in result.layers[0].outputs}) == 3


async def test_deadline_holds_for_the_compiled_graph_run_directly_and_as_a_subgraph(fault) -> None:
    """The deadline's clock is the run's own (the begin node's time in the state), so it
    holds without AggregateGraph's context: compiled graph alone, or inside a parent.
    A hanging proposer (30 s, under a 30 s client timeout) ends the run at about 2 s."""
    fault.script("slow", ["hang:30"] * 4)
    graph = AggregateGraph([api(fault, "fast"), api(fault, "slow", timeout=30)],
                           api(fault, "agg"), width=2, depth=1, deadline_s=2.0)
    question = {"messages": [{"role": "user", "content": "question deadline"}]}

    parent = StateGraph(Parent)
    parent.add_node("aggregate", graph.graph)
    parent.add_edge(START, "aggregate")
    parent.add_edge("aggregate", END)
    for runnable in (graph.graph, parent.compile()):
        t0 = time.monotonic()
        with pytest.raises(GraphError, match="layer timeout/deadline"):
            await runnable.ainvoke(question)
        assert 1.5 < time.monotonic() - t0 < slack(6)


async def test_a_resumed_run_counts_its_deadline_as_documented(fault) -> None:
    """Resumed from a checkpoint, the compiled graph keeps the first run's start (past its
    deadline, the final step is cut at once); a fresh context gives it new time, and
    ``AggregateGraph.aresume`` counts ``deadline_s`` from the resume."""
    fault.script("agg", ["500"])  # the final aggregation fails once
    # Room for the first run's calls on a loaded machine (the core suites run beside the
    # main one), and waits just past it.
    deadline = slack(1.0)
    graph = AggregateGraph(api(fault, "prop"), api(fault, "agg"), width=2, depth=1,
                           deadline_s=deadline, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "late"}}
    question = {"messages": [{"role": "user", "content": "resumed deadline"}]}
    with pytest.raises(GraphError):
        await graph.graph.ainvoke(question, config)
    assert fault.count("agg") == 1  # the first run reached its final step
    time.sleep(deadline + 0.2)  # the first run's deadline has passed
    with pytest.raises(GraphError, match="layer timeout/deadline"):
        await graph.graph.ainvoke(None, config)
    assert fault.count("agg") == 1  # cut before any call
    state = await graph.graph.ainvoke(None, config, context=RunContext.starting_now(10))
    assert state["answer"].startswith("answer") and fault.count("prop") == 2

    fault.script("agg", ["500"])
    with pytest.raises(GraphError):
        await graph.ainvoke("resumed deadline 2", thread_id="late2")
    time.sleep(deadline + 0.2)
    result = await graph.aresume("late2")
    assert result.answer.startswith("answer")
