"""``POST /v1/messages``: the Anthropic Messages API on the same graphs.

Read: ``system`` (a string or text blocks), ``messages`` with string or block content
(``text``, ``image`` from base64 or a URL, an assistant's ``tool_use``, a user's
``tool_result``; ``thinking`` blocks of an earlier turn are left out), ``tools``
(``name``, ``description``, ``input_schema``), ``tool_choice`` (``auto``, ``any``,
``tool``, ``none``; ``disable_parallel_tool_use``), ``max_tokens``, ``temperature``,
``top_p``, ``stop_sequences``, ``stream`` and the graph's per-request fields. No
effect here: ``metadata``, ``service_tier``. Refused by name: ``top_k`` (no backend
takes it), ``thinking``, ``mcp_servers``, ``container``. Keys come as ``x-api-key``
(the Anthropic clients' header) or a bearer token.

Written: a ``message`` (``text`` and ``tool_use`` blocks, ``stop_reason`` ``end_turn``,
``max_tokens`` or ``tool_use``) with ``usage`` over every layer and the ``aft`` trace;
streams send ``message_start``, ``content_block_start``/``_delta``/``_stop``,
``message_delta`` and ``message_stop``; errors are ``{"type": "error", "error": ...}``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aft_sdk.errors import ConfigError
from aft_sdk.graphs import AggregateResult
import aft_sdk.serve.protocol as protocol
from aft_sdk.serve.protocol import refuse_fields
from aft_sdk.serve.surface import StreamWriter, Surface, function_tool, sse

KNOWN = {"model", "messages", "system", "max_tokens", "temperature", "top_p",
         "stop_sequences", "tools", "tool_choice", "stream"}
NO_EFFECT = {"metadata", "service_tier"}
REFUSED = {
    "top_k": "no served backend takes top_k: use temperature or top_p",
    "thinking": "the served models have no extended thinking",
    "mcp_servers": "MCP servers are not available here: send tools",
    "container": "code execution containers are not available here",
}
#: Anthropic's error types by HTTP status.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 502: "api_error", 504: "api_error",
               500: "api_error"}
STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class Messages(Surface):
    path = "/v1/messages"

    def translate(self, data: dict[str, Any]) -> dict[str, Any]:
        refuse_fields(data, KNOWN | NO_EFFECT, REFUSED, self.path)
        out = {k: v for k, v in data.items()
               if k not in KNOWN and k not in NO_EFFECT and k not in REFUSED}
        if not isinstance(data.get("max_tokens"), int):
            raise ConfigError("'max_tokens' is required on /v1/messages (an integer)")
        messages = []
        system = data.get("system")
        if system:
            text = system if isinstance(system, str) else "\n".join(
                b.get("text", "") for b in system if isinstance(b, dict))
            messages.append({"role": "system", "content": text})
        turns = data.get("messages")
        if not isinstance(turns, list) or not turns:
            raise ConfigError("'messages' must be a non-empty list of turns")
        for i, turn in enumerate(turns):
            messages += _turn(turn, f"messages[{i}]")
        out.update(model=data.get("model"), messages=messages, stream=bool(data.get("stream")),
                   max_tokens=data["max_tokens"], temperature=data.get("temperature"),
                   top_p=data.get("top_p"), stop=data.get("stop_sequences"))
        if data.get("tools"):
            out["tools"] = [function_tool(t.get("name"), t.get("description"),
                                          t.get("input_schema"), f"tools[{i}]")
                            for i, t in enumerate(data["tools"])]
        choice = data.get("tool_choice")
        if choice is not None:
            out.update(_choice(choice))
        return out

    def complete(self, model: str, result: AggregateResult) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if result.answer or not result.tool_calls:
            content.append({"type": "text", "text": result.answer})
        content += [_tool_use(call) for call in result.tool_calls or []]
        return {"id": _message_id(), "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": STOP.get(result.finish_reason, "end_turn"),
                "stop_sequence": None, "usage": _usage(result),
                "aft": protocol.trace_of(result)}

    def error(self, message: str, kind: str, code: str | None = None,
              upstream_status: int | None = None, status: int = 400) -> dict[str, Any]:
        body: dict[str, Any] = {"type": ERROR_TYPES.get(status, "api_error"), "message": message}
        if upstream_status is not None:
            body["upstream_status"] = upstream_status
        return {"type": "error", "error": body}

    def writer(self, req: protocol.ChatRequest) -> StreamWriter:
        return _Writer(req.model)


def _message_id() -> str:
    return f"msg_aft{uuid.uuid4().hex[:24]}"


def _turn(turn: Any, where: str) -> list[dict[str, Any]]:
    """A turn as the graph takes it: its blocks (``tool_use``, ``tool_result``, images,
    an earlier turn's ``thinking``) are mapped by :func:`aft_sdk.messages.normalize_messages`,
    the one place every entry point's messages go through."""
    if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
        raise ConfigError(f"{where} must be a turn with role 'user' or 'assistant'")
    return [{"role": turn["role"], "content": turn.get("content")}]


def _choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    mapped = {"auto": "auto", "any": "required", "none": "none"}.get(kind)
    if kind == "tool":
        mapped = {"type": "function", "function": {"name": choice.get("name")}}
    if mapped is None:
        raise ConfigError("tool_choice must be {'type': 'auto' | 'any' | 'tool' | 'none'}, "
                          f"got {choice!r:.60}")
    out: dict[str, Any] = {"tool_choice": mapped}
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    try:
        arguments = json.loads(call["function"]["arguments"] or "{}")
    except ValueError:
        arguments = {"_raw": call["function"]["arguments"]}
    return {"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
            "input": arguments}


def _usage(result: AggregateResult) -> dict[str, int]:
    return {"input_tokens": result.usage.prompt_tokens,
            "output_tokens": result.usage.completion_tokens}


class _Writer(StreamWriter):
    def __init__(self, model: str) -> None:
        self.model, self.index, self.text_open = model, 0, False
        self.response_id = _message_id()

    def open(self) -> str:
        message = {"id": self.response_id, "type": "message", "role": "assistant", "content": [],
                   "model": self.model, "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return sse({"type": "message_start", "message": message}, "message_start")

    def _block(self, block: dict[str, Any]) -> str:
        return sse({"type": "content_block_start", "index": self.index,
                    "content_block": block}, "content_block_start")

    def _delta(self, delta: dict[str, Any]) -> str:
        return sse({"type": "content_block_delta", "index": self.index, "delta": delta},
                   "content_block_delta")

    def _stop(self) -> str:
        out = sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")
        self.index += 1
        return out

    def token(self, text: str) -> str:
        head = "" if self.text_open else self._block({"type": "text", "text": ""})
        self.text_open = True
        return head + self._delta({"type": "text_delta", "text": text})

    def finish(self, result: AggregateResult) -> str:
        out = []
        if not self.text_open and (result.answer or not result.tool_calls):
            out.append(self.token(result.answer))
        if self.text_open:
            out.append(self._stop())
        for call in result.tool_calls or []:
            block = _tool_use(call)
            out += [self._block({**block, "input": {}}),
                    self._delta({"type": "input_json_delta",
                                 "partial_json": json.dumps(block["input"])}),
                    self._stop()]
        out.append(sse({"type": "message_delta", "delta": {
            "stop_reason": STOP.get(result.finish_reason, "end_turn"), "stop_sequence": None},
            "usage": _usage(result), "aft": protocol.trace_of(result)}, "message_delta"))
        return "".join(out) + sse({"type": "message_stop"}, "message_stop")

    def fail(self, body: dict[str, Any]) -> str:
        return sse(body, "error")


__all__ = ["NO_EFFECT", "REFUSED", "Messages"]
