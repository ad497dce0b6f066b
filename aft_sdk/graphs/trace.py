"""The result of a propose-and-aggregate run and its trace.

One typed record per output, from the backend's :class:`Generation` to the trace:
:class:`OutputRecord`. Graph state holds each as its plain dump (so every LangGraph
checkpointer and LangGraph Server store it as JSON); nodes read them back typed with
:func:`records_of`, and :func:`build_result` turns the final state into the result.
Traces never hold API keys: backends are named by :attr:`Backend.label` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field, computed_field, model_validator

from aft_sdk.backends.base import Generation
from aft_sdk.messages import as_dicts
from aft_sdk.tools import render_calls


class Usage(BaseModel):
    """Token and call accounting."""

    generations: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Of the prompt tokens, those read from a provider's prompt cache.
    cached_tokens: int = 0
    #: Dollars of the priced calls (:mod:`aft_sdk.backends.pricing`); with ``unpriced``
    #: non-empty it is a lower bound: those backends' calls cost an unknown amount.
    cost_usd: float = 0.0
    unpriced: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def known_cost_usd(self) -> float | None:
        """The dollars, or ``None`` where some call's price is unknown (never a partial
        sum passed off as the whole)."""
        return None if self.unpriced else self.cost_usd

    @classmethod
    def of(cls, records: Iterable[OutputRecord]) -> Usage:
        u = cls()
        for r in records:
            if r.derived:  # a vote or an agreed draft: no model was called
                continue
            u.generations += int(r.ok)
            u.failures += int(not r.ok)
            u.prompt_tokens += r.prompt_tokens
            u.completion_tokens += r.completion_tokens
            u.cached_tokens += r.cached_tokens
            if r.cost_usd is not None:
                u.cost_usd += r.cost_usd
            elif (r.prompt_tokens or r.completion_tokens) and r.backend not in u.unpriced:
                u.unpriced.append(r.backend)
        return u


#: Keys of a decision (votes, agreement, budget, verifier scores, a judge's pick, the
#: tool-call vote). Records written before ``decision`` was a field kept them in
#: ``prompt``; they are moved on load.
DECISION_KEYS = frozenset({
    "rule", "extractor", "keys", "votes", "top", "tie", "share", "no_answer", "picked",
    "skipped", "stopped", "scores", "selection", "fallback", "winner", "candidates",
    "latency_s"})


class OutputRecord(Generation):
    """One slot of one layer: a backend's :class:`Generation` with where it sits in the
    run, or the error that took its place.

    Attributes:
        layer: 0 for proposals, 1..depth for aggregation layers.
        slot: Position within the layer.
        ok: Whether the slot produced text.
        text: The output (empty on failure).
        prompt: How the aggregation prompt was built: proposal ``order`` shown, any
            ``trimmed`` proposals (index -> [tokens before, tokens kept]), ``read`` (the
            previous layer's slots it read, when it read a subset), ``developer_as``.
        decision: How the answer was chosen, when a rule chose it: ``rule``
            (``majority``, ``agreement``, ``budget``, ``verifier``, ``tool-vote``,
            ``tool-aggregate``), the drafts' ``keys``, ``votes``, ``top``, ``tie``,
            ``share``, ``picked`` (the slot), ``scores``, a judge's ``selection``.
        derived: Not a model call: the answer chosen by a vote, or the agreed draft that
            took the place of a skipped aggregation (copied from ``decision.picked``).
        message_id: For the answer's own call, the id of the message LangGraph streamed.
        error: ``{"type", "message"}`` on failure.
        cost_usd: What the call cost in dollars (``None``: no price is known for it).
    """

    layer: int
    slot: int
    ok: bool
    text: str = ""
    prompt: dict[str, Any] = Field(default_factory=dict)
    decision: dict[str, Any] | None = None
    derived: bool = False
    message_id: str | None = None
    error: dict[str, str] | None = None
    cost_usd: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _decision_out_of_prompt(cls, data: Any) -> Any:
        """Loads records written before ``decision`` had a field of its own."""
        if isinstance(data, dict) and data.get("decision") is None and \
                isinstance(data.get("prompt"), dict) and DECISION_KEYS & data["prompt"].keys():
            prompt = data["prompt"]
            data = {**data, "prompt": {k: v for k, v in prompt.items() if k not in DECISION_KEYS},
                    "decision": {k: v for k, v in prompt.items() if k in DECISION_KEYS}}
        return data

    @classmethod
    def of(cls, layer: int, slot: int, gen: Generation, prompt: dict[str, Any] | None = None,
           *, message_id: str | None = None, decision: dict[str, Any] | None = None,
           cost_usd: float | None = None) -> OutputRecord:
        """The record of a successful generation."""
        return cls(**gen.model_dump(include=set(Generation.model_fields)), layer=layer,
                   slot=slot, ok=True, prompt=prompt or {},
                   message_id=message_id, decision=decision, cost_usd=cost_usd)

    @classmethod
    def failed(cls, layer: int, slot: int, backend: str, error: BaseException,
               latency_s: float) -> OutputRecord:
        """The record of a failed slot, keeping the error type and message."""
        message = str(error) or type(error).__name__
        return cls(layer=layer, slot=slot, ok=False, backend=backend, latency_s=latency_s,
                   error={"type": type(error).__name__, "message": message})

    @classmethod
    def chosen(cls, layer: int, picked: OutputRecord, decision: dict[str, Any]) -> OutputRecord:
        """The record of an answer chosen without a model call (a vote, an agreement):
        the picked draft's output, none of its cost."""
        return cls(**picked.model_dump(include=set(Generation.model_fields) - _COST),
                   layer=layer, slot=0, ok=True, derived=True,
                   decision={**decision, "picked": picked.slot})

    @property
    def draft(self) -> str:
        """How the record reads to the next layer: its text, then any tool calls."""
        if not self.tool_calls:
            return self.text
        listed = render_calls(self.tool_calls)
        return f"{self.text}\n{listed}" if self.text else listed

    def as_input(self) -> dict[str, Any]:
        """What an aggregation prompt is built from (see :mod:`aft_sdk.prompts`)."""
        return {"text": self.draft, "model": self.model, "slot": self.slot}


_COST = {"prompt_tokens", "cached_tokens", "completion_tokens", "latency_s"}


def records_of(state: Any, layer: int | None = None, *, ok: bool | None = None
               ) -> list[OutputRecord]:
    """The run's records (typed) from graph state, optionally of one ``layer`` and only
    successful (``ok=True``) or failed ones, in slot order within a layer."""
    found = (OutputRecord.model_validate(r) for r in state.get("outputs", []))
    return sorted((r for r in found if (layer is None or r.layer == layer)
                   and (ok is None or r.ok == ok)), key=lambda r: (r.layer, r.slot))


class LayerTrace(BaseModel):
    """All outputs of one layer and their usage."""

    index: int
    kind: str
    outputs: list[OutputRecord]
    usage: Usage


class AggregateResult(BaseModel):
    """Final answer plus the whole trace of a run.

    Attributes:
        answer: The final aggregation's text.
        messages: The conversation that was answered.
        layers: Layer 0 (proposals) then each aggregation layer.
        usage: Totals over every generation of the run.
        width, depth, preset, strategy: The shape that produced it.
        budget: The cap it ran under (``generations``, ``tokens``, ``usd``), beside ``usage``.
        elapsed_s: Wall time of the run.
        record_id: Its row's id where it was recorded (``record=``), for feedback.
    """

    answer: str
    messages: list[dict[str, Any]]
    layers: list[LayerTrace]
    usage: Usage
    width: int
    depth: int
    preset: str
    strategy: str = "propose-aggregate"
    budget: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    record_id: str | None = None

    @property
    def failures(self) -> list[OutputRecord]:
        """Every failed slot, in layer order."""
        return [r for layer in self.layers for r in layer.outputs if not r.ok]

    @property
    def final_output(self) -> OutputRecord | None:
        """The record that holds the answer (see :func:`final_record`)."""
        return next((r for r in self.layers[-1].outputs if r.ok), None)

    @property
    def tool_calls(self) -> list[dict[str, Any]] | None:
        """The answer's tool calls (OpenAI's format), when the answer is a call."""
        final = self.final_output
        return final.tool_calls if final else None

    @property
    def logprobs(self) -> list[dict[str, Any]] | None:
        """The answer's token log-probabilities (OpenAI's format), where the call that
        wrote it was asked for them (``final_sampling={"logprobs": True}``) and its
        backend returned them (a vote's: the picked draft's own); ``None`` otherwise, as for
        drafts that agree standing in for an aggregation that was never made."""
        final = self.final_output
        return final.logprobs if final else None

    @property
    def finish_reason(self) -> str:
        """Why the generation that wrote the answer stopped (``stop``, ``length``, ...;
        ``tool_calls`` when the answer is a call)."""
        if self.tool_calls:
            return "tool_calls"
        final = self.final_output
        return (final.finish_reason if final else None) or "stop"

    @property
    def proposals(self) -> list[str]:
        """Texts of the surviving proposals (layer 0); of a step-level search, the whole
        texts of the paths its answer chose from (:func:`drafts_of`)."""
        return drafts_of([r for layer in self.layers for r in layer.outputs])

    def summary(self) -> str:
        """One line per layer: outputs, failures, tokens, slowest call, who wrote them."""
        lines = []
        for layer in self.layers:
            slowest = max((r.latency_s for r in layer.outputs), default=0.0)
            writers = ", ".join(dict.fromkeys(r.backend for r in layer.outputs if r.backend))
            lines.append(
                f"layer {layer.index} ({layer.kind}): {layer.usage.generations} ok, "
                f"{layer.usage.failures} failed, {layer.usage.prompt_tokens} prompt + "
                f"{layer.usage.completion_tokens} completion tokens, slowest {slowest:.2f}s"
                + (f" [{writers}]" if writers else "")
            )
        u = self.usage
        lines.append(
            f"total: {u.generations} generations, {u.total_tokens} tokens, {self.elapsed_s:.2f}s"
        )
        return "\n".join(lines)


#: ``name`` of the assistant message that carries the final answer in graph state.
ANSWER_NAME = "aft_aggregate"


def final_record(records: Iterable[OutputRecord]) -> OutputRecord | None:
    """The record holding the answer: the first surviving slot of the last layer.

    The one rule for "the answer" (the ``finish`` node, results, streams and servers
    all read it from here or from :attr:`AggregateResult.final_output`)."""
    records = list(records)
    if not records:
        return None
    last = max(r.layer for r in records)
    return next((r for r in sorted(records, key=lambda r: r.slot)
                 if r.layer == last and r.ok), None)


def drafts_of(records: Iterable[OutputRecord]) -> list[str]:
    """The drafts of a run: its surviving layer-0 outputs, or for a step-level search
    (steps are layer-0 records with a ``parent``), the whole text of each path its answer
    record's decision lists as ``candidates`` (steps joined by its ``separator``)."""
    records = list(records)
    firsts = [r for r in records if r.layer == 0 and r.ok]
    answer = next((r for r in records if r.layer > 0 and "candidates" in (r.decision or {})),
                  None)
    if answer is None or not any("parent" in r.prompt for r in firsts):
        return [r.text for r in firsts]
    steps = {r.slot: r for r in firsts if "parent" in r.prompt}  # not a scorer's calls
    texts = []
    for node in answer.decision["candidates"]:  # type: ignore[index]
        path: list[str] = []
        while node is not None and node in steps:
            path.append(steps[node].text)
            node = steps[node].prompt.get("parent")
        texts.append(answer.decision["separator"].join(path[::-1]))  # type: ignore[index]
    return texts


def build_result(
    state: dict[str, Any], *, width: int, depth: int, preset: str, elapsed_s: float,
    strategy: str = "propose-aggregate", budget: dict[str, Any] | None = None,
) -> AggregateResult:
    """Builds the typed result from the graph's final state."""
    records = records_of(state)
    layers = []
    # Up to the last layer that ran: a run a budget or an agreement stopped early lists no
    # empty layers after its decision (whose record is the answer).
    for index in range(max((r.layer for r in records), default=depth) + 1):
        outs = sorted((r for r in records if r.layer == index), key=lambda r: r.slot)
        kind = "propose" if index == 0 else "aggregate"
        if outs and all(r.derived for r in outs):
            kind = (outs[0].decision or {}).get("rule", "derived")
        layers.append(LayerTrace(index=index, kind=kind, outputs=outs, usage=Usage.of(outs)))
    final = final_record(records)
    messages = [m for m in state["messages"] if getattr(m, "name", None) != ANSWER_NAME]
    return AggregateResult(answer=final.text if final else "", messages=as_dicts(messages),
                           layers=layers, usage=Usage.of(records), width=width, depth=depth,
                           preset=preset, strategy=strategy, budget=budget, elapsed_s=elapsed_s)
