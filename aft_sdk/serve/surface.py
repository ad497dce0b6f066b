"""The wire formats ``aft serve`` speaks, one :class:`Surface` each.

A surface reads its request body into the one request the graphs run
(:class:`~aft_sdk.serve.protocol.ChatRequest`: messages, tools, response format,
sampling, the per-request graph fields) and writes a finished run, a stream and an
error in its own format. Chat completions lives here; the Responses API in
:mod:`aft_sdk.serve.responses_api`, Anthropic Messages in
:mod:`aft_sdk.serve.messages_api`. Whatever a surface cannot honour it refuses by name
(a 400 in its own error shape); fields that change nothing here are listed in its
``NO_EFFECT`` and documented.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from aft_sdk.config import describe_validation_error
from aft_sdk.errors import ConfigError
from aft_sdk.graphs import AggregateResult
import aft_sdk.serve.protocol as protocol

def sse(payload: dict[str, Any], event: str | None = None) -> str:
    """One server-sent event (``event:`` line where the format names its events)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class Surface:
    """One wire format. Subclasses override :meth:`translate` (their body to a chat
    request's fields), :meth:`complete`, :meth:`error` and :meth:`writer`."""

    #: The route, e.g. ``/v1/chat/completions``.
    path = ""

    def read(self, body: bytes) -> protocol.ChatRequest:
        """The body as the request the graph runs; bad input raises :class:`ConfigError`."""
        try:
            data = json.loads(body)
        except ValueError as e:
            raise ConfigError(f"the request body is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"the request body must be a JSON object, got "
                              f"{type(data).__name__}")
        try:
            req = protocol.ChatRequest.model_validate(self.translate(data))
        except ValidationError as e:
            raise ConfigError(describe_validation_error(e, "request")) from e
        req.refuse_unsupported()
        return req

    def translate(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def complete(self, model: str, *results: AggregateResult) -> dict[str, Any]:
        """The response body for finished runs (several only where the format has ``n``)."""
        raise NotImplementedError

    def error(self, message: str, kind: str, code: str | None = None,
              upstream_status: int | None = None, status: int = 400) -> dict[str, Any]:
        """An error body in this format (OpenAI's by default)."""
        return protocol.error_body(message, kind, code, upstream_status)

    def writer(self, req: protocol.ChatRequest) -> StreamWriter:
        raise NotImplementedError


class StreamWriter:
    """Turns a run's stream events into this format's SSE text. ``open`` goes out with
    the first token or the result; ``finish``/``fail`` end the stream."""

    #: The response's id, as the stream's events carry it.
    response_id = ""

    def open(self) -> str:
        return ""

    def progress(self, line: str) -> str:
        return f": {line}\n\n"  # an SSE comment: every client skips it

    def token(self, text: str) -> str:
        raise NotImplementedError

    def finish(self, result: AggregateResult) -> str:
        raise NotImplementedError

    def fail(self, body: dict[str, Any]) -> str:
        raise NotImplementedError


class ChatCompletions(Surface):
    """``POST /v1/chat/completions`` (OpenAI)."""

    path = "/v1/chat/completions"

    def complete(self, model: str, *results: AggregateResult) -> dict[str, Any]:
        return protocol.completion(model, *results)

    def writer(self, req: protocol.ChatRequest) -> StreamWriter:
        return _ChatWriter(req)


class _ChatWriter(StreamWriter):
    def __init__(self, req: protocol.ChatRequest) -> None:
        self.req, self.cid, self.created = req, protocol.completion_id(), int(time.time())
        self.response_id = self.cid

    def _chunk(self, **kw: Any) -> str:
        return sse(protocol.chunk(self.cid, self.req.model, self.created, **kw))

    def open(self) -> str:
        return self._chunk(delta={"role": "assistant", "content": ""})

    def token(self, text: str) -> str:
        return self._chunk(delta={"content": text})

    def finish(self, result: AggregateResult) -> str:
        out = [self._chunk(delta=delta) for delta in protocol.call_deltas(result)]
        # The answer's log-probabilities, where asked for, come whole with the last chunk.
        out.append(self._chunk(finish_reason=result.finish_reason,
                               logprobs=protocol.logprobs_of(result),
                               extra={"aft": protocol.trace_of(result)}))
        if self.req.stream_options and self.req.stream_options.include_usage:
            out.append(self._chunk(usage=protocol.usage_of(result)))
        return "".join(out) + "data: [DONE]\n\n"

    def fail(self, body: dict[str, Any]) -> str:
        return sse(body) + "data: [DONE]\n\n"


def function_tool(name: Any, description: Any, parameters: Any, where: str) -> dict[str, Any]:
    """A tool in chat-completions form."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} needs a 'name'")
    fn: dict[str, Any] = {"name": name, "parameters": parameters or {"type": "object",
                                                                     "properties": {}}}
    if description:
        fn["description"] = description
    return {"type": "function", "function": fn}


def arguments_json(value: Any) -> str:
    """Tool-call arguments as the JSON string chat completions carries."""
    return value if isinstance(value, str) else json.dumps(value if value is not None else {})


__all__ = ["ChatCompletions", "StreamWriter", "Surface", "arguments_json", "function_tool",
           "sse"]
