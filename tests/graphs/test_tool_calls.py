"""Tool calls and structured output through the graph, on our fault server.

The fault server answers ``call:NAME:ARGS`` with an OpenAI tool call and records every
request, so the tests count aggregation calls exactly and read what each model was sent.
"""

from __future__ import annotations

import json

import pytest

from aft_sdk.backends import OpenAIBackend
from aft_sdk.backends.base import Generation, ToolCallChunk
from aft_sdk.errors import ConfigError, InsufficientProposalsError, MalformedResponseError
from aft_sdk.errors import StructuredOutputError
from aft_sdk.graphs import AggregateGraph

ADD = {"type": "function", "function": {"name": "add", "description": "Adds two numbers.",
                                        "parameters": {"type": "object", "properties": {
                                            "a": {"type": "number"}, "b": {"type": "number"}},
                                            "required": ["a", "b"]}}}
MUL = {"type": "function", "function": {"name": "mul", "parameters": {"type": "object"}}}
TOOLS = {"tools": [ADD, MUL]}
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"]}}}


def graph(fault, **kw) -> AggregateGraph:
    return AggregateGraph(fault.backend("p"), fault.backend("a"), width=3, depth=1, **kw)


def requests_of(fault, model: str) -> list[dict]:
    return [r for r in fault.requests if r.get("model") == model]


async def test_three_drafts_with_the_same_call_vote_to_it_without_an_aggregation(fault) -> None:
    fault.script("p", ['call:add:{"a": 1, "b": 2}'] * 3)
    result = await graph(fault).ainvoke("what is 1 + 2?", call=TOOLS)
    assert fault.count("a") == 0
    assert result.finish_reason == "tool_calls"
    (call,) = result.tool_calls
    assert call["function"]["name"] == "add" and json.loads(call["function"]["arguments"]) == {
        "a": 1, "b": 2}
    decision = result.layers[-1].outputs[0]
    assert decision.derived and decision.decision["rule"] == "tool-vote"
    assert decision.decision["votes"] == {'add({"a":1,"b":2})': 3}
    assert [c["slot"] for c in decision.decision["candidates"]] == [0, 1, 2]
    # Every draft was offered the tools (tool_choice unset: the server's auto).
    assert all(r["tools"] == [ADD, MUL] for r in requests_of(fault, "p"))


async def test_calls_that_differ_in_argument_order_or_whitespace_count_as_one(fault) -> None:
    fault.script("p", ['call:add:{"a": 1, "b": 2}', 'call:add:{ "b":2 ,  "a":1 }',
                       'call:add:{"a": 5, "b": 2}'])
    result = await graph(fault).ainvoke("what is 1 + 2?", call=TOOLS)
    assert fault.count("a") == 0
    assert json.loads(result.tool_calls[0]["function"]["arguments"]) == {"a": 1, "b": 2}
    assert result.layers[-1].outputs[0].decision["votes"] == {
        'add({"a":1,"b":2})': 2, 'add({"a":5,"b":2})': 1}


async def test_parallel_calls_compare_as_a_set(fault) -> None:
    fault.script("p", ['call:add:{"a":1,"b":2}|mul:{"x":3}', 'call:mul:{"x":3}|add:{"b":2,"a":1}',
                       'call:add:{"a":1,"b":2}'])
    result = await graph(fault).ainvoke("1+2 and 3", call=TOOLS)
    assert fault.count("a") == 0
    assert sorted(c["function"]["name"] for c in result.tool_calls) == ["add", "mul"]
    assert result.layers[-1].outputs[0].decision["votes"] == {
        'add({"a":1,"b":2}) & mul({"x":3})': 2, 'add({"a":1,"b":2})': 1}


async def test_a_tie_goes_to_the_aggregator_offered_the_same_tools(fault) -> None:
    fault.script("p", ['call:add:{"a":1,"b":2}', 'call:add:{"a":5,"b":2}'])
    fault.script("a", ['call:add:{"a":5,"b":2}'])
    result = await AggregateGraph(fault.backend("p"), fault.backend("a"), width=2,
                                  depth=1).ainvoke("what is 1 + 2?", call=TOOLS)
    (request,) = requests_of(fault, "a")
    assert request["tools"] == [ADD, MUL]
    prompt = json.dumps(request["messages"])
    assert '[calls tool] add({\\"a\\":1,\\"b\\":2})' in prompt
    assert '[calls tool] add({\\"a\\":5,\\"b\\":2})' in prompt
    assert json.loads(result.tool_calls[0]["function"]["arguments"]) == {"a": 5, "b": 2}
    record = result.layers[-1].outputs[0]
    assert not record.derived and record.decision["rule"] == "tool-aggregate"
    assert record.decision["tie"] is True and record.decision["winner"] == 'add({"a":5,"b":2})'


async def test_an_aggregator_that_fails_on_a_tie_leaves_the_vote_in_place(fault) -> None:
    fault.script("p", ['call:add:{"a":1,"b":2}', 'call:add:{"a":5,"b":2}'])
    fault.script("a", ["400"])
    g = AggregateGraph(fault.backend("p"), OpenAIBackend("a", base_url=fault.base_url,
                                                         max_retries=0), width=2, depth=1)
    result = await g.ainvoke("what is 1 + 2?", call=TOOLS)
    record = result.layers[-1].outputs[0]
    assert record.derived and "BadRequestError" in record.decision["fallback"]
    first = result.layers[0].outputs[0].tool_calls  # a tie goes to the first draft's calls
    assert result.tool_calls == first and record.decision["picked"] == 0


async def test_policy_aggregate_always_asks_the_aggregator(fault) -> None:
    fault.script("p", ['call:add:{"a":1,"b":2}'] * 3)
    fault.script("a", ['call:add:{"a":1,"b":2}'])
    result = await graph(fault, tools={"policy": "aggregate"}).ainvoke("1+2?", call=TOOLS)
    assert fault.count("a") == 1 and result.layers[-1].outputs[0].decision["rule"] == "tool-aggregate"


async def test_mixed_drafts_follow_the_majority_kind(fault) -> None:
    # Two text drafts and one call: the text path; the aggregator reads the call as a line.
    fault.script("p", ["say:three", 'call:add:{"a":1,"b":2}', "say:3"])
    fault.script("a", ["say:It is 3."])
    result = await graph(fault).ainvoke("what is 1 + 2?", call=TOOLS)
    assert result.answer == "It is 3." and result.tool_calls is None
    assert result.finish_reason == "stop"
    assert '[calls tool] add' in json.dumps(requests_of(fault, "a")[0]["messages"])
    # Two calls and one text draft: the calls decide.
    fault.reset()
    fault.script("p", ['call:add:{"a":1,"b":2}', "say:3", 'call:add:{"a":1,"b":2}'])
    result = await graph(fault).ainvoke("what is 1 + 2?", call=TOOLS)
    assert fault.count("a") == 0 and result.tool_calls[0]["function"]["name"] == "add"


HISTORY = [
    {"role": "user", "content": "what is 1 + 2?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add",
                                                          "arguments": '{"a": 1, "b": 2}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "3"},
]


async def test_a_tool_result_turn_gets_a_text_answer(fault) -> None:
    fault.script("a", ["say:1 + 2 = 3."])
    g = graph(fault, tools={"after_result": "answer"})
    result = await g.ainvoke(HISTORY, call=TOOLS)
    assert result.answer == "1 + 2 = 3." and result.tool_calls is None
    for r in fault.requests:  # tools offered, calls off; the history passes unchanged
        assert r["tool_choice"] == "none" and r["tools"] == [ADD, MUL]
        assert r["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "3"}
        assert {"role": "assistant", "tool_calls": HISTORY[1]["tool_calls"]} in r["messages"]
    assert result.messages[1]["tool_calls"] == HISTORY[1]["tool_calls"]


async def test_the_answer_message_in_state_carries_the_calls(fault) -> None:
    fault.script("p", ['call:add:{"a":1,"b":2}'] * 3)
    g = graph(fault)
    state = await g.graph.ainvoke({"messages": [("user", "1+2?")]},
                                  context={"call": TOOLS})
    (call,) = state["messages"][-1].tool_calls
    assert call["name"] == "add" and call["args"] == {"a": 1, "b": 2}


async def test_streamed_tool_calls_arrive_as_deltas_and_whole(fault) -> None:
    backend = fault.backend("p")
    from aft_sdk.tools import CallOptions

    fault.script("p", ['call:add:{"a": 10, "b": 20}'])
    pieces = [p async for p in backend.stream([{"role": "user", "content": "x"}],
                                              options=CallOptions(tools=[ADD]))]
    chunks = [p for p in pieces if isinstance(p, ToolCallChunk)]
    assert [c.name for c in chunks] == ["add", None]
    assert "".join(c.arguments for c in chunks) == '{"a": 10, "b": 20}'
    final = pieces[-1]
    assert isinstance(final, Generation) and final.finish_reason == "tool_calls"
    assert final.tool_calls[0]["function"]["arguments"] == '{"a": 10, "b": 20}'
    fault.script("p", ["bad-call"])
    with pytest.raises(MalformedResponseError, match="without a name"):
        [p async for p in backend.stream([{"role": "user", "content": "x"}],
                                         options=CallOptions(tools=[ADD]))]
    fault.script("p", ["bad-call"])
    with pytest.raises(MalformedResponseError, match="no function name"):
        await backend.generate([{"role": "user", "content": "x"}], options=CallOptions(tools=[ADD]))


async def test_structured_answers_are_checked_retried_and_named(fault) -> None:
    good, bad = '{"name": "Ann", "age": 30}', '{"name": "Ann", "age": "thirty"}'
    fault.script("p", [f"say:{good}"] * 3)
    fault.script("a", [f"say:{bad}", f"say:{good}"])
    result = await graph(fault).ainvoke("Ann is 30", call={"response_format": PERSON})
    assert json.loads(result.answer) == {"name": "Ann", "age": 30} and fault.count("a") == 2
    assert all(r["response_format"] == PERSON for r in fault.requests)  # drafts constrained
    fault.reset()
    fault.script("p", [f"say:{good}"] * 3)
    fault.script("a", [f"say:{bad}", f"say:{bad}"])
    with pytest.raises(StructuredOutputError, match="at age: 'thirty' is not of type") as err:
        await graph(fault).ainvoke("Ann is 30", call={"response_format": PERSON})
    assert err.value.field == "age" and fault.count("a") == 2


async def test_free_drafts_leave_the_format_to_the_final_layer(fault) -> None:
    fault.script("a", ['say:{"name": "Ann", "age": 30}'])
    await graph(fault, structured={"drafts": "free"}).ainvoke(
        "Ann is 30", call={"response_format": PERSON})
    assert ["response_format" in r for r in fault.requests] == [False, False, False, True]


async def test_a_vote_winner_is_checked_against_the_schema(fault) -> None:
    fault.script("p", ["say:not json"] * 3)
    g = AggregateGraph(fault.backend("p"), width=3, strategy="vote")
    with pytest.raises(StructuredOutputError, match="not JSON"):
        await g.ainvoke("x", call={"response_format": PERSON})


async def test_a_backend_that_cannot_honour_tools_says_so(fault) -> None:
    class TextOnly(OpenAIBackend):
        handles = frozenset()

    g = AggregateGraph(TextOnly("p", base_url=fault.base_url), fault.backend("a"))
    with pytest.raises(InsufficientProposalsError, match="cannot honour tools"):
        await g.ainvoke("x", call=TOOLS)
    assert fault.count() == 0


@pytest.mark.parametrize("call, message", [
    ({"tools": [{"type": "function"}]}, "tools.0"),
    ({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "sub"}}},
     "not among the tools"),
    ({"response_format": {"type": "json_schema"}}, "json_schema.schema"),
    ({"tools": [ADD, ADD]}, "unique"),
    ({"tool": [ADD]}, "tool"),
])
async def test_bad_tool_options_fail_before_any_call(fault, call, message) -> None:
    with pytest.raises(ConfigError, match=message):
        await graph(fault).ainvoke("x", call=call)
    assert fault.count() == 0


async def test_a_streamed_structured_answer_is_sent_once_it_passed(fault) -> None:
    good, bad = '{"name": "Ann", "age": 30}', '{"name": "Ann"}'
    fault.script("a", [f"say:{bad}", f"say:{good}"])
    events = [e async for e in graph(fault).astream("Ann is 30",
                                                    call={"response_format": PERSON})]
    tokens = "".join(e["text"] for e in events if e["event"] == "token")
    assert tokens == good == events[-1]["result"].answer


async def test_a_resumed_run_takes_its_call_options_again(fault) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from aft_sdk.errors import GraphError

    g = AggregateGraph(fault.backend("p"), OpenAIBackend("a", base_url=fault.base_url,
                                                         max_retries=0),
                       width=3, depth=1, checkpointer=InMemorySaver())
    fault.script("a", ["500"])
    call = {"response_format": PERSON}
    with pytest.raises(GraphError, match="resume"):
        await g.ainvoke("Ann is 30", thread_id="t", call=call)
    fault.script("a", ['say:{"name": "Ann", "age": 30}'])
    result = await g.aresume("t", call=call)
    assert json.loads(result.answer) == {"name": "Ann", "age": 30}
    assert requests_of(fault, "a")[-1]["response_format"] == PERSON
    assert fault.count("p") == 3  # the drafts were not made again
