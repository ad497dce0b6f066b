"""The result of a propose-and-aggregate run and its trace, as plain data.

Inside the graph every output is a plain dict (so LangGraph checkpointers can store
it); :func:`build_result` turns the final state into typed, JSON-serialisable models.
Traces never hold API keys: backends are named by :attr:`Backend.label` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field, computed_field

from aft_sdk.backends.base import Generation
from aft_sdk.messages import as_dicts
from aft_sdk.tools import render_calls


class Usage(BaseModel):
    """Token and call accounting."""

    generations: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

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
        return u


class OutputRecord(BaseModel):
    """One slot of one layer: a generation, or the error that took its place.

    Attributes:
        layer: 0 for proposals, 1..depth for aggregation layers.
        slot: Position within the layer.
        ok: Whether the slot produced text.
        text: The output (empty on failure).
        prompt: How the aggregation prompt was built: proposal ``order`` shown, any
            ``trimmed`` proposals (index -> [tokens before, tokens kept]), and ``read``
            (the previous layer's slots it read, when it read a subset). For a derived
            record, the decision: ``rule`` (``majority`` or ``agreement``), the drafts'
            ``keys``, ``votes``, ``top``, ``tie``, ``share``, ``picked`` (the slot).
        derived: Not a model call: the answer chosen by a vote, or the agreed draft that
            took the place of a skipped aggregation (copied from ``picked``).
        message_id: For the answer's own call, the id of the message LangGraph streamed.
        tool_calls: The tool calls the output made, in OpenAI's format.
        error: ``{"type", "message"}`` on failure.
    """

    layer: int
    slot: int
    ok: bool
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model: str = ""
    backend: str = ""
    prompt: dict[str, Any] = Field(default_factory=dict)
    derived: bool = False
    message_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    error: dict[str, str] | None = None


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
        budget: The cap it ran under (``generations``, ``tokens``), beside ``usage``.
        elapsed_s: Wall time of the run.
    """

    answer: str
    messages: list[dict[str, Any]]
    layers: list[LayerTrace]
    usage: Usage
    width: int
    depth: int
    preset: str
    strategy: str = "propose-aggregate"
    budget: dict[str, int | None] | None = None
    elapsed_s: float = 0.0

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
    def finish_reason(self) -> str:
        """Why the generation that wrote the answer stopped (``stop``, ``length``, ...;
        ``tool_calls`` when the answer is a call)."""
        if self.tool_calls:
            return "tool_calls"
        final = self.final_output
        return (final.finish_reason if final else None) or "stop"

    @property
    def proposals(self) -> list[str]:
        """Texts of the surviving proposals (layer 0)."""
        return [r.text for r in self.layers[0].outputs if r.ok]

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


def ok_record(layer: int, slot: int, gen: Generation, prompt: dict[str, Any],
              message_id: str | None = None) -> dict[str, Any]:
    """Plain-dict record of a successful generation."""
    return OutputRecord(
        layer=layer, slot=slot, ok=True, text=gen.text, finish_reason=gen.finish_reason,
        prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
        latency_s=gen.latency_s, model=gen.model, backend=gen.backend, prompt=prompt,
        message_id=message_id, tool_calls=gen.tool_calls,
    ).model_dump()


def failure_record(
    layer: int, slot: int, backend: str, error: BaseException, latency_s: float
) -> dict[str, Any]:
    """Plain-dict record of a failed slot, keeping the error type and message."""
    message = str(error) or type(error).__name__
    return OutputRecord(
        layer=layer, slot=slot, ok=False, backend=backend, latency_s=latency_s,
        error={"type": type(error).__name__, "message": message},
    ).model_dump()


#: ``name`` of the assistant message that carries the final answer in graph state.
ANSWER_NAME = "aft_aggregate"


def final_record(outputs: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The record holding the answer: the first surviving slot of the last layer.

    The one rule for "the answer" (the ``finish`` node, results, streams and servers
    all read it from here or from :attr:`AggregateResult.final_output`)."""
    records = list(outputs)
    if not records:
        return None
    last = max(r["layer"] for r in records)
    return next((r for r in sorted(records, key=lambda r: r["slot"])
                 if r["layer"] == last and r["ok"]), None)


def derived_record(layer: int, picked: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """The record of an answer chosen without a model call (a vote, an agreement)."""
    return OutputRecord(
        layer=layer, slot=0, ok=True, text=picked["text"], finish_reason=picked["finish_reason"],
        model=picked["model"], backend=picked["backend"], derived=True,
        prompt={**decision, "picked": picked["slot"]}, tool_calls=picked.get("tool_calls"),
    ).model_dump()


def draft_text(record: dict[str, Any]) -> str:
    """How a record reads to the next layer: its text, then any tool calls it made."""
    calls = record.get("tool_calls")
    if not calls:
        return record["text"]
    listed = render_calls(calls)
    return f"{record['text']}\n{listed}" if record["text"] else listed


def build_result(
    state: dict[str, Any], *, width: int, depth: int, preset: str, elapsed_s: float,
    strategy: str = "propose-aggregate", budget: dict[str, int | None] | None = None,
) -> AggregateResult:
    """Builds the typed result from the graph's final state."""
    records = [OutputRecord.model_validate(r) for r in state.get("outputs", [])]
    layers = []
    for index in range(max([depth, *(r.layer for r in records)]) + 1):
        outs = sorted((r for r in records if r.layer == index), key=lambda r: r.slot)
        kind = "propose" if index == 0 else "aggregate"
        if outs and all(r.derived for r in outs):
            kind = outs[0].prompt.get("rule", "derived")
        layers.append(LayerTrace(index=index, kind=kind, outputs=outs, usage=Usage.of(outs)))
    final = final_record(state.get("outputs", []))
    messages = [m for m in state["messages"] if getattr(m, "name", None) != ANSWER_NAME]
    return AggregateResult(
        answer=final["text"] if final else "",
        messages=as_dicts(messages),
        layers=layers,
        usage=Usage.of(records),
        width=width,
        depth=depth,
        preset=preset,
        strategy=strategy,
        budget=budget,
        elapsed_s=elapsed_s,
    )
