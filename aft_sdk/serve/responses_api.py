"""``POST /v1/responses``: OpenAI's Responses API on the same graphs.

Read: ``input`` (a string, or items: messages with ``input_text``/``input_image``/
``output_text`` parts, ``function_call`` and ``function_call_output``),
``instructions`` (a system message first), function ``tools`` and ``tool_choice`` in
the Responses form, ``parallel_tool_calls``, ``text.format`` (``text``,
``json_object``, ``json_schema``), ``max_output_tokens``, ``temperature``, ``top_p``,
``stream``, ``include: ["message.output_text.logprobs"]`` and ``top_logprobs`` (the
answer's token log-probabilities, as on chat completions) and the graph's per-request
fields. No effect here: ``metadata``, ``user``,
``safety_identifier``, ``prompt_cache_key``, ``service_tier``, ``truncation:
"disabled"``, ``store: false``, ``stream_options``. This server keeps no responses, so
``previous_response_id``, ``store: true`` and ``conversation`` are refused by name, as are
``reasoning``, other ``include`` values, ``background``, built-in tools and other item
types.

Written: a ``response`` object (a ``message`` item with the answer's ``output_text``,
then one ``function_call`` item per call; ``status: "incomplete"`` when the answer hit
its token cap) with ``usage`` over every layer and the ``aft`` trace; streams send the
Responses event sequence (``response.created`` ... ``response.output_text.delta`` ...
``response.completed``), a failure after the start as ``error`` then
``response.failed``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aft_sdk.errors import ConfigError
from aft_sdk.graphs import AggregateResult
import aft_sdk.serve.protocol as protocol
from aft_sdk.serve.protocol import refuse_fields
from aft_sdk.serve.surface import (
    StreamWriter,
    Surface,
    arguments_json,
    function_tool,
    sse,
)

KNOWN = {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
         "text", "max_output_tokens", "temperature", "top_p", "stream", "stream_options",
         "include", "top_logprobs"}
#: What ``include`` may name: the answer's token log-probabilities.
LOGPROBS = "message.output_text.logprobs"
NO_EFFECT = {"metadata", "user", "safety_identifier", "prompt_cache_key", "service_tier",
             "truncation", "store"}
REFUSED = {
    "previous_response_id": "this server keeps no responses: send the whole conversation "
                            "in 'input'",
    "store": "this server keeps no responses (send store: false or leave it out)",
    "conversation": "this server keeps no conversations: send them in 'input'",
    "reasoning": "the served models take no reasoning settings",
    "background": "runs are answered in the request; background mode is not available",
    "max_tool_calls": "the graph makes at most one round of calls per request",
    "prompt": "stored prompt templates are not available: send 'input'",
}


class Responses(Surface):
    path = "/v1/responses"

    def translate(self, data: dict[str, Any]) -> dict[str, Any]:
        refuse_fields(data, KNOWN | NO_EFFECT, REFUSED, self.path)
        if data.get("truncation") not in (None, "disabled"):
            raise ConfigError("'truncation' is not supported on /v1/responses: only "
                              "'disabled' (a prompt over the window is an error)")
        out = {k: v for k, v in data.items()
               if k not in KNOWN and k not in NO_EFFECT and k not in REFUSED}
        messages = []
        if data.get("instructions"):
            messages.append({"role": "system", "content": data["instructions"]})
        messages += _messages(data.get("input"))
        out.update(model=data.get("model"), messages=messages, stream=bool(data.get("stream")),
                   temperature=data.get("temperature"), top_p=data.get("top_p"),
                   max_tokens=data.get("max_output_tokens"))
        if data.get("tools"):
            out["tools"] = [_tool(t, i) for i, t in enumerate(_list(data["tools"], "tools"))]
        if data.get("tool_choice") is not None:
            out["tool_choice"] = _choice(data["tool_choice"])
        if data.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = data["parallel_tool_calls"]
        fmt = _format(data.get("text"))
        if fmt is not None:
            out["response_format"] = fmt
        include = _list(data.get("include") or [], "include")
        for name in include:
            if name != LOGPROBS:
                raise ConfigError(f"include {name!r} is not available on {self.path}: only "
                                  f"{LOGPROBS!r} (no reasoning, search or image output)")
        if include or data.get("top_logprobs") is not None:
            out.update(logprobs=True, top_logprobs=data.get("top_logprobs"))
        return out

    def complete(self, model: str, result: AggregateResult) -> dict[str, Any]:
        rid = f"resp_aft{uuid.uuid4().hex[:24]}"
        output: list[dict[str, Any]] = []
        if result.answer or not result.tool_calls:
            output.append(_message_item(f"msg_{rid[5:]}", result.answer,
                                        logprobs=result.logprobs))
        output += [_call_item(call) for call in result.tool_calls or []]
        return _response(rid, model, int(time.time()), output, result)

    def writer(self, req: protocol.ChatRequest) -> StreamWriter:
        return _Writer(req.model)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"'{where}' must be a list, got {type(value).__name__}")
    return value


def _messages(items: Any) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(_list(items, "input") if items is not None else []):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object (a message or a function call)")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise ConfigError(f"{where}.role must be user, assistant, system or "
                                  f"developer, got {role!r}")
            messages.append({"role": role, "content": _content(item.get("content"), where)})
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id") or f"call_{i}",
                    "type": "function", "function": {
                        "name": item.get("name"), "arguments": arguments_json(item.get("arguments"))}}
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else
                             _content(output, where)})
        else:
            raise ConfigError(f"{where} has type {kind!r}, which this server does not take: "
                              "send message, function_call or function_call_output items")
    if not messages:
        raise ConfigError("'input' is empty: send a string or a list of items")
    return messages


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(_list(content, f"{where}.content")):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and part.get("image_url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise ConfigError(f"{where}.content[{j}] has type {kind!r}: this server takes "
                              "input_text, output_text and input_image (with image_url)")
    return parts


def _tool(tool: Any, i: int) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise ConfigError(f"tools[{i}] has type {kind!r}: only function tools are served "
                          "(built-in tools such as web_search are not available)")
    return function_tool(tool.get("name"), tool.get("description"), tool.get("parameters"),
                         f"tools[{i}]")


def _choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice  # "none" | "auto" | "required"; anything else is refused downstream


def _format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict) or set(text) - {"format", "verbosity"}:
        raise ConfigError("'text' must be an object with 'format' ('verbosity' has no "
                          "effect here)")
    fmt = text.get("format")
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt.get("type")}


def _usage(result: AggregateResult) -> dict[str, Any]:
    u = result.usage
    return {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def _message_item(item_id: str, text: str, status: str = "completed",
                  logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [_text_part(text, logprobs)] if status == "completed" else []}


def _call_item(call: dict[str, Any], arguments: str | None = None) -> dict[str, Any]:
    fn = call["function"]
    return {"type": "function_call", "id": f"fc_{call['id']}", "call_id": call["id"],
            "name": fn["name"], "arguments": fn["arguments"] if arguments is None else arguments,
            "status": "completed" if arguments is None else "in_progress"}


def _response(rid: str, model: str, created: int, output: list[dict[str, Any]],
              result: AggregateResult | None, status: str | None = None,
              error: dict[str, Any] | None = None) -> dict[str, Any]:
    capped = result is not None and result.finish_reason == "length"
    status = status or ("incomplete" if capped else "completed")
    body: dict[str, Any] = {
        "id": rid, "object": "response", "created_at": created, "status": status,
        "model": model, "output": output, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if capped else None,
        "instructions": None, "metadata": {}, "parallel_tool_calls": True,
        "temperature": None, "top_p": None, "tool_choice": "auto", "tools": [],
        "text": {"format": {"type": "text"}}, "usage": None}
    if result is not None:
        body.update(usage=_usage(result), aft=protocol.trace_of(result))
    return body


class _Writer(StreamWriter):
    def __init__(self, model: str) -> None:
        self.model, self.created = model, int(time.time())
        self.rid = self.response_id = f"resp_aft{uuid.uuid4().hex[:24]}"
        self.msg_id = f"msg_{self.rid[5:]}"
        self.seq = 0
        self.text: str | None = None  # the message item's text, once it is open

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return sse(payload, kind)

    def open(self) -> str:
        shell = _response(self.rid, self.model, self.created, [], None, "in_progress")
        return (self._event("response.created", response=shell)
                + self._event("response.in_progress", response=shell))

    def _open_text(self) -> str:
        self.text = ""
        return (self._event("response.output_item.added", output_index=0,
                            item=_message_item(self.msg_id, "", "in_progress"))
                + self._event("response.content_part.added", item_id=self.msg_id,
                              output_index=0, content_index=0, part=_text_part("")))

    def token(self, text: str) -> str:
        head = self._open_text() if self.text is None else ""
        self.text = (self.text or "") + text
        return head + self._event("response.output_text.delta", item_id=self.msg_id,
                                  output_index=0, content_index=0, delta=text, logprobs=[])

    def finish(self, result: AggregateResult) -> str:
        out, output = [], []
        if self.text is None and (result.answer or not result.tool_calls):
            out.append(self._open_text())
            if result.answer:
                out.append(self.token(result.answer))
        if self.text is not None:
            lps = result.logprobs or []  # where asked for: whole, with the text's end
            item = _message_item(self.msg_id, self.text, logprobs=lps)
            out += [self._event("response.output_text.done", item_id=self.msg_id,
                                output_index=0, content_index=0, text=self.text, logprobs=lps),
                    self._event("response.content_part.done", item_id=self.msg_id,
                                output_index=0, content_index=0,
                                part=_text_part(self.text, lps)),
                    self._event("response.output_item.done", output_index=0, item=item)]
            output.append(item)
        for call in result.tool_calls or []:
            index, done = len(output), _call_item(call)
            out += [self._event("response.output_item.added", output_index=index,
                                item=_call_item(call, "")),
                    self._event("response.function_call_arguments.delta", item_id=done["id"],
                                output_index=index, delta=done["arguments"]),
                    self._event("response.function_call_arguments.done", item_id=done["id"],
                                output_index=index, name=done["name"],
                                arguments=done["arguments"]),
                    self._event("response.output_item.done", output_index=index, item=done)]
            output.append(done)
        final = _response(self.rid, self.model, self.created, output, result)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return "".join(out) + self._event(kind, response=final)

    def fail(self, body: dict[str, Any]) -> str:
        error = body["error"]
        failed = _response(self.rid, self.model, self.created, [], None, "failed",
                           {"code": error.get("code") or error.get("type"),
                            "message": error["message"]})
        return (self._event("error", code=error.get("code") or error.get("type"),
                            message=error["message"], param=None)
                + self._event("response.failed", response=failed))


__all__ = ["NO_EFFECT", "REFUSED", "Responses"]
