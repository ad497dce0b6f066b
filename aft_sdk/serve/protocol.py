"""The OpenAI chat-completions wire format, as ``aft serve`` reads and writes it.

Every field of a request is honoured, documented as having no effect (:data:`NO_EFFECT`:
``user``, ``metadata``, ...), or refused by name (:data:`REFUSED`, unknown fields):
nothing is accepted and then dropped. ``n`` > 1 runs the graph ``n`` times at once, one
choice each (not with ``stream``). Sampling fields reach the final
aggregation (penalties, ``logit_bias`` and ``reasoning_effort`` where its backend takes
them; refused by name where it does not). Tools, tool choice,
parallel tool calls and response formats go to the graph (``CallOptions``); an answer
that calls tools comes back as ``tool_calls`` with ``finish_reason: "tool_calls"``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aft_sdk.config import EXTRA_SAMPLING
from aft_sdk.errors import ConfigError
from aft_sdk.graphs import AggregateResult
from aft_sdk.plugins import strategy_settings
from aft_sdk.tools import CALL_FIELDS, CallOptions, options_of

#: Per-request graph settings a client may send (``extra_body`` in the openai client);
#: besides these, ``strategy`` and each registered strategy's own section (``rsa``,
#: a plug-in's ``refine``, ...) by its name (see :func:`strategy_sections`).
SHAPE_FIELDS = ("width", "depth", "preset", "shuffle", "min_proposals", "strategy")


#: Graph settings only the served config holds: a request naming one is refused (the
#: vote's extractor and verifier may name code to import; backends, budgets and limits
#: are the operator's).
SERVED_ONLY = frozenset({
    "vote", "adaptive", "budget", "quorum", "proposers", "aggregator", "layers", "prompt",
    "deadline_s", "layer_timeout_s", "plugins", "proposer_sampling", "aggregator_sampling",
    "structured"})


def strategy_sections() -> set[str]:
    """The settings sections of the registered strategies that have settings (built-ins
    and plug-ins that load). Shared sections such as ``vote`` (whose extractor may name
    code to import) are not a request's to set."""
    return {name.replace("-", "_") for name in strategy_settings()}


#: Fields besides the model's own that a request may send: tools and formats (to the
#: graph) and sampling fields sent where the final aggregation's backend takes them
#: (:data:`aft_sdk.config.EXTRA_SAMPLING`).
KNOWN_EXTRA = frozenset({*CALL_FIELDS, *EXTRA_SAMPLING})
#: Accepted, with no effect on the answer (documented).
NO_EFFECT = frozenset({"metadata", "store", "user", "service_tier", "prompt_cache_key",
                       "safety_identifier"})
#: Refused by name (when set to anything but their off value), with the reason.
REFUSED = {
    "functions": "the legacy form: send 'tools' and 'tool_choice'",
    "function_call": "the legacy form: send 'tools' and 'tool_choice'",
    "modalities": "answers are text only (send ['text'] or leave it out)",
    "audio": "answers are text only",
    "prediction": "predicted outputs are not available",
    "web_search_options": "web search is not available: offer your own tool",
    "verbosity": "the served models take no verbosity setting",
}


def refuse_fields(data: dict[str, Any], known: set[str] | frozenset[str],
                  refused: dict[str, str], surface: str,
                  off: Callable[[str, Any], bool] = lambda name, value: False) -> None:
    """The one field rule of every surface: a field in ``refused`` set to anything but an
    off value (``None``, ``False``, empty, or what ``off`` accepts) is refused by name with
    its reason; a field neither known, refused, a graph setting nor a strategy section
    is refused as unknown."""
    sections = strategy_sections()
    for name in sorted(data):
        value = data[name]
        if name in refused and value not in (None, False, [], {}) and not off(name, value):
            raise ConfigError(f"'{name}' is not supported on {surface}: {refused[name]}")
        if name not in known and name not in refused and name not in SHAPE_FIELDS \
                and name not in sections and name not in SERVED_ONLY:
            raise ConfigError(f"unknown field '{name}' for {surface}: check its spelling "
                              "(this server refuses what it cannot honour rather than "
                              "ignore it)")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """A ``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    width: int | None = None
    depth: int | None = None
    preset: str | None = None
    shuffle: bool | None = None
    min_proposals: int | None = None
    strategy: str | None = None
    #: ``false``: this request is not recorded (``aft serve --record``).
    record: bool | None = None

    def refuse_unsupported(self) -> None:
        """Raises :class:`ConfigError` naming the first field this server cannot honour."""
        extra = self.model_extra or {}
        if self.n is not None and self.n < 1:
            raise ConfigError(f"n={self.n}: n is how many answers (choices) to return, at least 1")
        if self.choices > 1 and self.stream:
            raise ConfigError(f"n={self.n} with stream: true is not supported: ask without "
                              "streaming, or send one streamed request per answer")
        refuse_fields(extra, KNOWN_EXTRA | NO_EFFECT, REFUSED, "/v1/chat/completions",
                      off=lambda name, value: name == "modalities" and value == ["text"])
        fixed = sorted(SERVED_ONLY & extra.keys())
        if fixed:
            raise ConfigError(
                f"'{fixed[0]}' is a setting of the served graph that a request cannot change "
                f"(set it in the config); a request may set {', '.join(SHAPE_FIELDS)} and a "
                f"strategy's own section ({', '.join(sorted(strategy_sections())) or 'none'})")
        fmt = extra.get("response_format")
        if fmt is not None and not isinstance(fmt, dict):
            raise ConfigError('response_format must be an object such as {"type": "text"}, '
                              f"got {type(fmt).__name__} {fmt!r:.40}")
        if self.stream_options is not None and not self.stream:
            raise ConfigError("stream_options is only allowed with stream: true")
        self.call()  # a bad tool or format fails here, before a slot is taken

    @property
    def choices(self) -> int:
        """How many answers the request asks for: each is a run of its own."""
        return self.n or 1

    def run_sampling(self, index: int) -> dict[str, Any]:
        """:meth:`final_sampling` for answer ``index`` of ``n``: a seed moves by the index,
        so seeded answers differ (``seed + index``)."""
        sampling = self.final_sampling()
        if index and "seed" in sampling:
            sampling["seed"] += index
        return sampling

    def call(self) -> CallOptions | None:
        """The request's tools and response format, validated (``None``: neither)."""
        return options_of(self.model_extra or {}, source="request")

    def final_sampling(self) -> dict[str, Any]:
        """The request's sampling fields, for the final aggregation."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        extra = self.model_extra or {}
        values = {"temperature": self.temperature, "top_p": self.top_p,
                  "max_tokens": self.max_completion_tokens or self.max_tokens,
                  "seed": self.seed, "stop": stop,
                  **{k: extra.get(k) for k in EXTRA_SAMPLING}}
        return {k: v for k, v in values.items() if v is not None}

    def shape(self) -> dict[str, Any]:
        """The per-request graph overrides that were set: the shape fields, then any
        strategy's own section (an object)."""
        shape = {k: getattr(self, k) for k in SHAPE_FIELDS if getattr(self, k) is not None}
        extra = self.model_extra or {}
        for section in sorted(strategy_sections() & extra.keys()):
            if not isinstance(extra[section], dict):
                raise ConfigError(f"'{section}' must be an object of {section} settings, "
                                  f"got {type(extra[section]).__name__}")
            shape[section] = extra[section]
        return shape


def check_logprobs(req: ChatRequest, result: AggregateResult) -> None:
    """A run asked for ``logprobs`` whose answer has none is a clear error, not an
    answer without them."""
    if not req.final_sampling().get("logprobs") or result.logprobs is not None:
        return
    final = result.final_output
    rule = (final.decision or {}).get("rule") if final else None
    why = (f"it was chosen among drafts (rule: {rule}), not generated by one call"
           if rule else "the call that wrote it returned none")
    raise ConfigError(f"logprobs: this run's answer has no log-probabilities: {why}; ask "
                      "without logprobs, or use a model whose final step aggregates")


def logprobs_of(result: AggregateResult) -> dict[str, Any] | None:
    """A choice's ``logprobs`` field."""
    return None if result.logprobs is None else {"content": result.logprobs, "refusal": None}


def completion_id() -> str:
    return f"chatcmpl-aft-{uuid.uuid4().hex[:24]}"


def usage_of(*results: AggregateResult) -> dict[str, int]:
    """OpenAI ``usage`` counted over every layer of the run (of every run, for n > 1)."""
    return {key: sum(getattr(r.usage, key) for r in results)
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def trace_of(result: AggregateResult) -> dict[str, Any]:
    """The ``aft`` extension field: per-layer usage and failures."""
    return {
        "width": result.width, "depth": result.depth, "preset": result.preset,
        "strategy": result.strategy, "elapsed_s": round(result.elapsed_s, 4),
        # Dollars of the priced calls; "unpriced" names backends whose cost is unknown.
        "cost": {"usd": round(result.usage.cost_usd, 8), "unpriced": result.usage.unpriced},
        "layers": [{"index": layer.index, "kind": layer.kind,
                    "usage": layer.usage.model_dump(),
                    "failures": [{"slot": r.slot, "backend": r.backend, **(r.error or {})}
                                 for r in layer.outputs if not r.ok]}
                   for layer in result.layers],
    }


def message_of(result: AggregateResult) -> dict[str, Any]:
    """The answer as an assistant message (``content`` null when it only calls tools)."""
    calls = result.tool_calls
    if calls:
        return {"role": "assistant", "content": result.answer or None, "tool_calls": calls}
    return {"role": "assistant", "content": result.answer}


def call_deltas(result: AggregateResult) -> list[dict[str, Any]]:
    """The answer's tool calls as stream deltas, each call whole in one delta."""
    return [{"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                             "function": {"name": c["function"]["name"],
                                          "arguments": c["function"]["arguments"]}}]}
            for i, c in enumerate(result.tool_calls or [])]


def completion(model: str, *results: AggregateResult) -> dict[str, Any]:
    """A ``chat.completion`` body for finished runs: one choice per run (``n``); usage
    sums them; ``aft`` is the first run's trace, with every run's under ``choices``
    when there are several."""
    trace = trace_of(results[0])
    if len(results) > 1:
        trace["choices"] = [trace_of(r) for r in results]
    return {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": message_of(r), "logprobs": logprobs_of(r),
                     "finish_reason": r.finish_reason} for i, r in enumerate(results)],
        "usage": usage_of(*results),
        "aft": trace,
    }


def chunk(cid: str, model: str, created: int, *, delta: dict[str, Any] | None = None,
          finish_reason: str | None = None, usage: dict[str, int] | None = None,
          extra: dict[str, Any] | None = None,
          logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``; a usage chunk has no choices."""
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                            "model": model}
    if usage is not None:
        body.update(choices=[], usage=usage)
    else:
        body["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": logprobs,
                            "finish_reason": finish_reason}]
    body.update(extra or {})
    return body


def error_body(message: str, kind: str, code: str | None = None,
               upstream_status: int | None = None) -> dict[str, Any]:
    """An OpenAI-style error body (with the upstream's HTTP status, when one failed)."""
    body: dict[str, Any] = {"message": message, "type": kind, "param": None, "code": code}
    if upstream_status is not None:
        body["upstream_status"] = upstream_status
    return {"error": body}
