"""A graph as the model inside an agent, on the bundled model with tool calling.

The server is llama.cpp with its ChatML function-calling handler
(:mod:`aft_sdk.testing.llama_tools`). The 135M model's final answers are weak; these
tests check the loop and the wire format, never the answer's wording.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("langchain_openai", reason="needs pip install 'aft-sdk[langchain]'")
pytest.importorskip("fastapi", reason="needs pip install 'aft-sdk[serve]'")

import openai  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from langgraph.prebuilt import create_react_agent  # noqa: E402

from aft_sdk.backends import OpenAIBackend  # noqa: E402
from aft_sdk.graphs import AggregateGraph  # noqa: E402
from aft_sdk.integrations.langchain import AggregateChatModel  # noqa: E402
from aft_sdk.testing import LocalServer  # noqa: E402

pytestmark = pytest.mark.slow

QUESTION = "What is 6 times 7? Use the multiply tool."


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def _completed_loop(messages: list) -> None:
    """Question, a call of multiply, its result, a text answer: the two-step loop."""
    kinds = [type(m) for m in messages]
    assert kinds == [HumanMessage, AIMessage, ToolMessage, AIMessage], kinds
    (call,) = messages[1].tool_calls
    assert call["name"] == "multiply" and set(call["args"]) == {"a", "b"}
    assert float(messages[2].content) == call["args"]["a"] * call["args"]["b"]
    assert not messages[3].tool_calls and messages[3].content.strip()


def _graph(url: str, model: str) -> AggregateGraph:
    backend = OpenAIBackend(model, base_url=url)
    return AggregateGraph(backend, backend, width=3, depth=1,
                          tools={"after_result": "answer"},
                          aggregator_sampling={"max_tokens": 64})


def test_create_react_agent_with_the_graph_completes_a_tool_loop(llama_tools_server) -> None:
    graph = _graph(llama_tools_server.base_url, llama_tools_server.model)
    agent = create_react_agent(AggregateChatModel(graph=graph), [multiply])
    out = agent.invoke({"messages": [("user", QUESTION)]})
    _completed_loop(out["messages"])


async def test_a_hand_written_tool_loop_streams_the_call(llama_tools_server) -> None:
    model = AggregateChatModel(graph=_graph(llama_tools_server.base_url,
                                            llama_tools_server.model)).bind_tools([multiply])
    history: list = [HumanMessage(QUESTION)]
    full = None
    async for chunk in model.astream(history):
        full = chunk if full is None else full + chunk
    (call,) = full.tool_calls
    assert call["name"] == "multiply"
    history += [full, ToolMessage(str(multiply.invoke(call["args"])), tool_call_id=call["id"])]
    answer = await model.ainvoke(history)
    assert not answer.tool_calls and answer.content.strip()


def _serve_config(folder: Path, url: str) -> Path:
    path = folder / "agent.yaml"
    path.write_text(
        "name: agent\nwidth: 3\ndepth: 1\n"
        f"proposers:\n  - {{type: openai, model: smollm2, base_url: '{url}'}}\n"
        f"aggregator:\n  - {{type: openai, model: smollm2, base_url: '{url}'}}\n"
        "aggregator_sampling: {max_tokens: 64}\n"
        "tools: {after_result: answer}\n")
    return path


def test_chat_openai_runs_an_agent_against_aft_serve(llama_tools_server, tmp_path) -> None:
    with LocalServer.aft_serve([_serve_config(tmp_path, llama_tools_server.base_url)]) as srv:
        chat = ChatOpenAI(model="agent", base_url=srv.base_url, api_key="none", max_retries=0)
        out = create_react_agent(chat, [multiply]).invoke({"messages": [("user", QUESTION)]})
        _completed_loop(out["messages"])
        # The official client, streaming: the call arrives as tool_calls deltas.
        client = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0)
        tools = [{"type": "function", "function": {
            "name": "multiply", "description": "Multiply two numbers.",
            "parameters": {"type": "object", "properties": {
                "a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}]
        chunks = list(client.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": QUESTION}], tools=tools,
            stream=True))
        calls = [d for ch in chunks if ch.choices for d in ch.choices[0].delta.tool_calls or []]
        assert calls and calls[0].function.name == "multiply" and calls[0].id
        assert set(json.loads("".join(c.function.arguments for c in calls))) == {"a", "b"}
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
        whole = client.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": QUESTION}], tools=tools)
        assert whole.choices[0].finish_reason == "tool_calls"
        assert whole.choices[0].message.content is None
        assert whole.choices[0].message.tool_calls[0].function.name == "multiply"
