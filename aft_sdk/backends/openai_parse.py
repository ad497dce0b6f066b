"""Reading an OpenAI-compatible server's answers: every field checked, so a server that
sends something else is a clear :class:`~aft_sdk.errors.MalformedResponseError` that
names the field, never a crash deep in the graph (``OpenAIBackend`` reads through this)."""

from __future__ import annotations

from typing import Any

from aft_sdk import errors
from aft_sdk.backends.base import Generation, ToolCallChunk
from aft_sdk.backends.logprobs import missing_logprobs, openai_logprobs


class OpenAIParsing:
    """The parsing half of ``OpenAIBackend`` (it has ``label`` and ``model``)."""

    label: str
    model: str

    def _malformed(self, what: str) -> errors.MalformedResponseError:
        return errors.MalformedResponseError(
            f"{self.label} sent a malformed chat completion: {what}; check that base_url "
            "points at an OpenAI-compatible /v1 endpoint", backend=self.label)

    def _field(self, obj: Any, name: str, kinds: type | tuple[type, ...], where: str) -> Any:
        """``obj.name`` when it is missing/``None`` or of ``kinds``; else malformed."""
        value = getattr(obj, name, None)
        if value is None or (isinstance(value, kinds) and not isinstance(value, bool)):
            return value
        raise self._malformed(f"{where}{name} is {type(value).__name__} {value!r:.40}")

    def _usage(self, usage: Any) -> tuple[int, int, int]:
        """Prompt, completion and cached prompt tokens (``prompt_tokens_details``)."""
        details = self._field(usage, "prompt_tokens_details", object, "usage.")
        return (self._field(usage, "prompt_tokens", int, "usage.") or 0,
                self._field(usage, "completion_tokens", int, "usage.") or 0,
                self._field(details, "cached_tokens", int, "usage.prompt_tokens_details.") or 0)

    def _parse(self, resp: Any, latency: float, logprobs: bool = False) -> list[Generation]:
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list):
            raise self._malformed(f"the body is not a chat completion ({type(resp).__name__})")
        if not choices:
            raise errors.MalformedResponseError(
                f"{self.label} returned an empty choice list; the server produced no output",
                backend=self.label,
            )
        prompt_tokens, total_completion, cached = self._usage(getattr(resp, "usage", None))
        model = self._field(resp, "model", str, "") or self.model
        out = []
        for i, ch in enumerate(choices):
            message = getattr(ch, "message", None)
            text = self._field(message, "content", str, f"choices[{i}].message.")
            calls = self._calls(message, f"choices[{i}].message.")
            if text is None and calls:
                text = ""
            if text is None:
                raise errors.MalformedResponseError(
                    f"{self.label} returned choice {i} without message content",
                    backend=self.label,
                )
            # Usage is per response; spread completion tokens over choices evenly so
            # that per-generation numbers add up to the server's total.
            share = total_completion // len(choices) + (
                1 if i < total_completion % len(choices) else 0
            )
            lps = openai_logprobs(ch, f"choices[{i}].", self._malformed) if logprobs else None
            if logprobs and lps is None:
                raise missing_logprobs(self.label)
            out.append(Generation(
                text=text, finish_reason=self._field(ch, "finish_reason", str, f"choices[{i}]."),
                prompt_tokens=prompt_tokens if i == 0 else 0, completion_tokens=share,
                cached_tokens=cached if i == 0 else 0, latency_s=latency, model=model,
                backend=self.label, tool_calls=calls, logprobs=lps))
        return out

    def _calls(self, message: Any, where: str) -> list[dict[str, Any]] | None:
        """A message's tool calls in OpenAI's format, checked (arguments are a string)."""
        calls = self._field(message, "tool_calls", list, where)
        if not calls:
            return None
        out = []
        for j, call in enumerate(calls):
            fn = getattr(call, "function", None)
            name = self._field(fn, "name", str, f"{where}tool_calls[{j}].function.")
            if not name:
                raise self._malformed(f"{where}tool_calls[{j}] has no function name")
            out.append({"id": self._field(call, "id", str, f"{where}tool_calls[{j}].") or
                        f"call_{j}", "type": "function",
                        "function": {"name": name, "arguments": self._field(
                            fn, "arguments", str, f"{where}tool_calls[{j}].function.") or "{}"}})
        return out

    def _call_deltas(self, delta: Any, calls: dict[int, dict[str, Any]]
                     ) -> list[ToolCallChunk]:
        """A chunk's tool-call deltas, merged into ``calls`` (by index) and passed on."""
        out = []
        for j, d in enumerate(self._field(delta, "tool_calls", list, "stream chunk delta.") or []):
            index = self._field(d, "index", int, "stream tool call ")
            index = j if index is None else index
            fn = getattr(d, "function", None)
            name = self._field(fn, "name", str, "stream tool call function.")
            args = self._field(fn, "arguments", str, "stream tool call function.") or ""
            call_id = self._field(d, "id", str, "stream tool call ")
            call = calls.setdefault(index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or call_id
            call["name"] = call["name"] or name
            call["arguments"] += args
            if call["name"] is None:
                raise self._malformed(f"tool call {index} streamed without a name")
            out.append(ToolCallChunk(index=index, id=call_id, name=name, arguments=args))
        return out
