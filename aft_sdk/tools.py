"""Tool calls and structured output: what a request asks for, and how calls compare.

A request may offer tools and ask for a response format, as in OpenAI's chat API::

    CallOptions(tools=[{"type": "function", "function": {"name": "add", "parameters": {...}}}],
                tool_choice="auto",
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {...}}})

Tool calls travel in OpenAI's format everywhere (a list of
``{"id", "type": "function", "function": {"name", "arguments"}}``, arguments a JSON
string). Two calls are the same when their names and their parsed arguments are equal
(:func:`call_key`: key order and whitespace do not count); the parallel calls of one draft
compare as a set (:func:`calls_key`). Answers given under a JSON schema are checked with
``jsonschema`` (:func:`check_structured`), and a failure names the field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator, model_validator

from aft_sdk.errors import BadRequestError, ConfigError, StructuredOutputError
from aft_sdk.validation import Strict, validate

ToolCall = dict[str, Any]
#: The request fields that make :class:`CallOptions` (OpenAI's names), wherever requests
#: come from: ``aft serve`` bodies, batch rows, LangChain's bound keyword arguments.
CALL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "response_format")
CHOICES = ("none", "auto", "required")
FORMATS = ("text", "json_object", "json_schema")


class CallOptions(Strict):
    """The tool and format fields of one request, validated.

    Attributes:
        tools: Function tools in OpenAI's format.
        tool_choice: ``none``, ``auto``, ``required`` or
            ``{"type": "function", "function": {"name": ...}}``; unset with tools means
            ``auto`` (as OpenAI's API).
        parallel_tool_calls: Whether one answer may hold several calls (the server's
            default when unset).
        response_format: ``{"type": "text" | "json_object" | "json_schema", ...}``.
    """

    tools: list[dict[str, Any]] | None = Field(default=None)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("tools")
    @classmethod
    def _tools(cls, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if tools is None:
            return None
        names = []
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(fn, dict) or \
                    not isinstance(fn.get("name"), str) or not fn["name"]:
                raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': "
                                 "{'name': ..., 'parameters': {...}}}")
            params = fn.get("parameters", {"type": "object", "properties": {}})
            if not isinstance(params, dict):
                raise ValueError(f"tools[{i}].function.parameters must be a JSON schema object")
            names.append(fn["name"])
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        return tools or None

    @field_validator("response_format")
    @classmethod
    def _format(cls, fmt: dict[str, Any] | None) -> dict[str, Any] | None:
        if fmt is None:
            return None
        kind = fmt.get("type")
        if kind not in FORMATS:
            raise ValueError(f"response_format.type must be one of {FORMATS}, got {kind!r}")
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise ValueError("response_format json_schema needs json_schema.schema, an "
                                 "object (and json_schema.name)")
        return None if kind == "text" else fmt

    @model_validator(mode="after")
    def _choice(self) -> CallOptions:
        choice = self.tool_choice
        if choice is None or choice in CHOICES:
            return self
        name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        if not isinstance(name, str):
            raise ValueError(f"tool_choice must be one of {CHOICES} or {{'type': 'function', "
                             f"'function': {{'name': ...}}}}, got {choice!r:.60}")
        if name not in self.tool_names:
            raise ValueError(f"tool_choice names {name!r}, which is not among the tools "
                             f"{self.tool_names}")
        return self

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools or []]

    @property
    def wants_tools(self) -> bool:
        """Tools are offered and calls are allowed."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer must meet (``json_schema``, or a ``json_object``
        format that carries ``schema``), else ``None``."""
        fmt = self.response_format or {}
        if fmt.get("type") == "json_schema":
            return fmt["json_schema"]["schema"]
        return fmt.get("schema") if isinstance(fmt.get("schema"), dict) else None

    @property
    def json_mode(self) -> bool:
        """The answer must be JSON (with or without a schema)."""
        return self.response_format is not None

    @property
    def named_tool(self) -> str | None:
        """The tool ``tool_choice`` forces, if it names one."""
        choice = self.tool_choice
        return choice["function"]["name"] if isinstance(choice, dict) else None

    def forced_name(self, label: str) -> str | None:
        """The tool the call is forced to (named, or ``required`` with one tool); ``None``
        when the model may choose. ``required`` among several tools is refused for
        ``label``: a grammar can force one tool's arguments, not a choice between tools."""
        if not self.wants_tools:
            return None
        if self.effective_choice() == "required":
            if len(self.tool_names) != 1:
                raise BadRequestError(
                    f"{label} cannot force a call among several tools (tool_choice="
                    "'required'): name the tool in tool_choice, or use 'auto'",
                    status_code=400, backend=label)
            return self.tool_names[0]
        return self.named_tool

    def effective_choice(self) -> str | dict[str, Any] | None:
        """``tool_choice`` as OpenAI applies it (``auto`` when tools come without one)."""
        if self.tools and self.tool_choice is None:
            return "auto"
        return self.tool_choice

    def request_fields(self) -> dict[str, Any]:
        """The fields to send with an OpenAI chat request (only those set)."""
        out: dict[str, Any] = {}
        if self.tools:
            out["tools"] = self.tools
            if self.tool_choice is not None:
                out["tool_choice"] = self.tool_choice
            if self.parallel_tool_calls is not None:
                out["parallel_tool_calls"] = self.parallel_tool_calls
        if self.response_format is not None:
            out["response_format"] = self.response_format
        return out

    def without_format(self) -> CallOptions | None:
        """These options with no response format (free-form drafts); ``None`` if empty."""
        rest = self.model_copy(update={"response_format": None})
        return rest if rest.tools else None

    def answering(self) -> CallOptions:
        """These options with calls switched off (``tool_choice="none"``)."""
        return self.model_copy(update={"tool_choice": "none"}) if self.tools else self

    @property
    def empty(self) -> bool:
        return not self.tools and self.response_format is None


def call_options(value: CallOptions | dict[str, Any] | None, source: str = "call") -> CallOptions | None:
    """Validated options from a dict or options (``None`` when nothing is asked for)."""
    if value is None:
        return None
    opts = value if isinstance(value, CallOptions) else validate(CallOptions, dict(value),
                                                                   source=source)
    return None if opts.empty and opts.tool_choice is None else opts


def options_of(fields: dict[str, Any], source: str) -> CallOptions | None:
    """The :data:`CALL_FIELDS` of a request or row, validated (``None``: none set)."""
    found = {k: fields[k] for k in CALL_FIELDS if fields.get(k) is not None}
    return call_options(found, source=source) if found else None


def check_tool_calls(calls: Any, where: str) -> list[ToolCall]:
    """Validates OpenAI-format tool calls (``arguments`` must be a JSON string)."""
    if not isinstance(calls, list):
        raise ConfigError(f"{where} must be a list of tool calls")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or \
                not isinstance(call.get("id"), str):
            raise ConfigError(f"{where}[{i}] must be {{'id': ..., 'type': 'function', "
                              "'function': {'name': ..., 'arguments': '<json>'}}")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            args = json.dumps(args)
        out.append({"id": call["id"], "type": "function",
                    "function": {"name": fn["name"], "arguments": args}})
    return out


def openai_call(call: dict[str, Any]) -> ToolCall:
    """A LangChain tool call (``name``, ``args``, ``id``) in OpenAI's format."""
    return {"id": call.get("id") or "", "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("args", {}))}}


def langchain_call(call: ToolCall) -> dict[str, Any]:
    """An OpenAI-format call as LangChain's ``ToolCall`` dict (arguments parsed)."""
    args = arguments_of(call)
    return {"name": call["function"]["name"], "args": args if isinstance(args, dict) else
            {"arguments": args}, "id": call["id"], "type": "tool_call"}


def arguments_of(call: ToolCall) -> Any:
    """A call's parsed arguments (the raw string when it is not JSON)."""
    raw = call["function"].get("arguments") or "{}"
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def call_key(call: ToolCall) -> str:
    """The identity of one call: its name and canonical JSON arguments."""
    args = arguments_of(call)
    canon = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False) \
        if not isinstance(args, str) else " ".join(args.split())
    return f"{call['function']['name']}({canon})"


def calls_key(calls: Sequence[ToolCall]) -> str:
    """The identity of a draft's calls, compared as a set (order does not count)."""
    return " & ".join(sorted(call_key(c) for c in calls))


def render_calls(calls: Sequence[ToolCall]) -> str:
    """How a draft that calls tools reads in an aggregation prompt."""
    return "\n".join(f"[calls tool] {call_key(c)}" for c in calls)


def check_structured(text: str, schema: dict[str, Any] | None) -> Any:
    """The answer parsed as JSON and checked against ``schema``.

    Raises:
        StructuredOutputError: Not JSON, or the first schema violation (its field path).
    """
    import jsonschema

    try:
        value = json.loads(text)
    except ValueError as e:
        raise StructuredOutputError(f"the answer is not JSON ({e}): {text[:120]!r}",
                                    field=None) from e
    if schema is None:
        return value
    try:
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
        error = jsonschema.exceptions.best_match(validator(schema).iter_errors(value))
    except jsonschema.exceptions.SchemaError as e:
        raise ConfigError(f"the response_format schema is invalid: {e.message}") from e
    if error is not None:
        field = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise StructuredOutputError(f"the answer does not meet the schema at {field}: "
                                    f"{error.message}", field=field)
    return value
