"""Tool calls and formats as data: options, call identity, schema checks, messages."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from aft_sdk.errors import ConfigError, StructuredOutputError
from aft_sdk.messages import calls_as_text, for_backend, normalize_messages, tool_view
from aft_sdk.tools import CallOptions, call_key, calls_key, check_structured, langchain_call

CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}}


def test_call_identity_ignores_key_order_and_whitespace_but_not_values() -> None:
    other = {**CALL, "id": "c2", "function": {"name": "add", "arguments": ' { "a" : 1 } '}}
    assert call_key(CALL) == call_key(other) == 'add({"a":1})'
    assert call_key({**CALL, "function": {"name": "add", "arguments": '{"a":2}'}}) != call_key(CALL)
    mul = {**CALL, "function": {"name": "mul", "arguments": "{}"}}
    assert calls_key([CALL, mul]) == calls_key([mul, other])


def test_options_default_to_auto_and_send_only_what_is_set() -> None:
    tool = {"type": "function", "function": {"name": "add"}}
    opts = CallOptions(tools=[tool])
    assert opts.effective_choice() == "auto" and opts.request_fields() == {"tools": [tool]}
    assert opts.answering().tool_choice == "none" and not opts.answering().wants_tools
    assert CallOptions(response_format={"type": "text"}).empty


def test_schema_failures_name_the_field() -> None:
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "integer"}}}, "required": ["items"]}
    assert check_structured('{"items": [1, 2]}', schema) == {"items": [1, 2]}
    with pytest.raises(StructuredOutputError) as err:
        check_structured('{"items": [1, "x"]}', schema)
    assert err.value.field == "items.1"
    with pytest.raises(StructuredOutputError, match="not JSON"):
        check_structured("{", schema)
    with pytest.raises(ConfigError, match="schema is invalid"):
        check_structured("{}", {"type": 12})


def test_tool_histories_from_dicts_and_langchain_messages_are_one_format() -> None:
    as_dicts = normalize_messages([
        {"role": "user", "content": "1+0?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"}])
    as_lc = normalize_messages([HumanMessage("1+0?"), AIMessage("", tool_calls=[
        langchain_call(CALL)]), ToolMessage("1", tool_call_id="c1")])
    assert [m["role"] for m in as_lc] == ["user", "assistant", "tool"]
    assert calls_key(as_lc[1]["tool_calls"]) == calls_key([CALL])
    assert as_lc[1]["tool_calls"][0]["id"] == "c1" and as_lc[2] == as_dicts[2]
    assert as_dicts[1] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert "content" not in for_backend(as_dicts, "x")[1]  # null content is left out
    assert tool_view(as_dicts)[2] == {"role": "user", "content": "Result of add (c1): 1"}
    assert calls_as_text(as_dicts)[1] == {"role": "assistant", "content":
                                          '[calls tool] add({"a":1})'}
    with pytest.raises(ConfigError, match="tool_calls"):
        normalize_messages([{"role": "user", "content": "x"},
                            {"role": "assistant", "tool_calls": [{"function": {}}]},
                            {"role": "user", "content": "y"}])
