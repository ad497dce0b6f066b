"""Tools and response formats on the in-process vLLM engine.

vLLM has no chat layer below its server, so the backend does what the server would:

- a response format becomes structured-output decoding (``StructuredOutputsParams``:
  the JSON schema, or any JSON object);
- a tool the request forces (``tool_choice`` naming it, or ``required`` with one tool)
  is decoded under its parameters' schema and returned as that call;
- ``tool_choice="auto"`` needs to know how the model writes calls: the backend's
  ``tool_parser`` names one of vLLM's parsers (``hermes``, ``llama3_json``, ...), which
  reads the calls out of the generated text, as ``vllm serve --tool-call-parser`` does.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aft_sdk import errors
from aft_sdk.tools import CallOptions


def forced_tool(options: CallOptions | None, label: str) -> dict[str, Any] | None:
    """The tool whose call the request forces, or ``None``."""
    name = None if options is None else options.forced_name(label)
    if name is None:
        return None
    return next(t for t in options.tools or [] if t["function"]["name"] == name)


def structured(options: CallOptions | None, label: str, parser: str | None) -> Any:
    """The engine's structured-output parameters for the request (``None``: free text).

    Raises:
        BadRequestError: ``auto`` tool choice without a ``tool_parser``.
    """
    from vllm.sampling_params import StructuredOutputsParams

    tool = forced_tool(options, label)
    if tool is not None:
        params = tool["function"].get("parameters") or {"type": "object"}
        return StructuredOutputsParams(json=params)
    if options is not None and options.wants_tools and parser is None:
        raise errors.BadRequestError(
            f"{label} needs tool_parser (the format the model writes calls in: 'hermes', "
            "'llama3_json', ...) for tool_choice='auto'; or name the tool in tool_choice",
            status_code=400, backend=label)
    if options is not None and options.json_mode:
        schema = options.schema
        return StructuredOutputsParams(json=schema) if schema is not None else \
            StructuredOutputsParams(json_object=True)
    return None


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as Hugging Face chat templates take tool calls (arguments as objects)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {**m, "content": m.get("content") or "", "tool_calls": [
                {**c, "function": {"name": c["function"]["name"],
                                   "arguments": _loads(c["function"]["arguments"])}}
                for c in m["tool_calls"]]}
        out.append(m)
    return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def calls_of(text: str, options: CallOptions | None, tokenizer: Any, parser: str | None,
             label: str) -> tuple[str, list[dict[str, Any]] | None]:
    """The answer's text and tool calls."""
    tool = forced_tool(options, label)
    if tool is not None:
        return "", [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                     "function": {"name": tool["function"]["name"], "arguments": text}}]
    if options is None or not options.wants_tools or parser is None:
        return text, None
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    request = ChatCompletionRequest(messages=[], model="x", tools=options.tools,
                                    tool_choice=options.effective_choice())
    info = ToolParserManager.get_tool_parser(parser)(tokenizer, request.tools) \
        .extract_tool_calls(text, request)
    if not info.tools_called:
        return text, None
    calls = [{"id": c.id or f"call_{i}", "type": "function",
              "function": {"name": c.function.name, "arguments": c.function.arguments}}
             for i, c in enumerate(info.tool_calls)]
    return info.content or "", calls
