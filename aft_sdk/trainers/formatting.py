"""AFT rows -> conversational prompt/completion examples for TRL's SFTTrainer.

The prompt is rendered by the same :class:`~aft_sdk.prompts.PromptTemplate` the graph
uses, and proposals that overflow ``max_length`` are cut by the same function the graph
uses (:func:`aft_sdk.budget.fit_proposals`, with the target's length as the reserve), so
a row the graph would trim looks byte for byte the same in training. TRL then applies
the tokenizer's chat template and masks the loss to the completion (the target).
Every cut is counted (:class:`FitReport`) and reported by the trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aft_sdk.budget import MESSAGE_OVERHEAD, TEMPLATE_MARGIN, fit_proposals, messages_tokens
from aft_sdk.errors import ConfigError
from aft_sdk.prompts import PromptTemplate
from aft_sdk.trainers.rows import AftRow

logger = logging.getLogger(__name__)

Counter = Callable[[str], int]


@dataclass
class FitReport:
    """What fitting rows into ``max_length`` cut.

    Attributes:
        proposals_trimmed: Rows whose proposals were shortened.
        targets_cut: Rows whose target alone overflows (TRL cuts its tail).
        examples: A few row ids per kind of cut, for the log.
    """

    proposals_trimmed: int = 0
    targets_cut: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, row_id: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        ids = self.examples.setdefault(kind, [])
        if len(ids) < 5:
            ids.append(row_id)

    def log(self, total: int) -> None:
        if self.proposals_trimmed:
            logger.warning("%d of %d rows had proposals trimmed to fit max_length (e.g. %s)",
                           self.proposals_trimmed, total, self.examples["proposals_trimmed"])
        if self.targets_cut:
            logger.warning("%d of %d rows have a target longer than max_length allows; TRL "
                           "cuts their tails (e.g. %s): raise max_length or drop them",
                           self.targets_cut, total, self.examples["targets_cut"])


def token_counter(tokenizer: Any) -> Counter:
    """Counts tokens of plain text with a Hugging Face tokenizer."""
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def row_prompt(row: AftRow, template: PromptTemplate, proposals: list[str] | None = None
               ) -> list[dict[str, str]]:
    """The messages the model sees for a row (aggregation prompt, or the plain chat)."""
    if row.kind == "sft":
        return [dict(m) for m in row.messages]
    return template.render(row.messages, row.proposals if proposals is None else proposals)


def target_reserve(target: str, count: Counter) -> int:
    """Tokens a target takes in the window: its text plus its turn's framing."""
    return count(target) + MESSAGE_OVERHEAD


def fit_row(row: AftRow, template: PromptTemplate, count: Counter, max_length: int
            ) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The row's prompt with proposals trimmed so prompt + target fit ``max_length``.

    Returns the prompt and a note: ``trimmed`` (``{index: [tokens, kept]}``) when
    proposals were cut, ``target_cut`` when the target alone overflows.
    """
    reserve = target_reserve(row.target, count)
    if row.kind == "sft":
        _check_room(row, messages_tokens(row.messages, count), max_length)
        total = messages_tokens(row.messages, count) + reserve + TEMPLATE_MARGIN
        return row_prompt(row, template), (
            {"target_cut": total - max_length} if total > max_length else {})
    try:
        texts, trims = fit_proposals(template, row.messages, row.proposals, count,
                                     limit=max_length, reserve=reserve)
    except ConfigError:
        # Not even empty proposals fit next to this target: keep a marker per
        # proposal and let TRL cut the target's tail (counted and reported).
        texts, trims = ["[...]"] * len(row.proposals), {}
        prompt = row_prompt(row, template, texts)
        _check_room(row, messages_tokens(prompt, count), max_length)
        return prompt, {"target_cut": True}
    note: dict[str, Any] = {"trimmed": trims} if trims else {}
    return row_prompt(row, template, texts), note


def _check_room(row: AftRow, prompt_tokens: int, max_length: int) -> None:
    """Refuses a row whose prompt alone leaves no room for any target token."""
    if prompt_tokens + TEMPLATE_MARGIN >= max_length:
        raise ConfigError(
            f"row {row.id}: its prompt alone is about {prompt_tokens + TEMPLATE_MARGIN} "
            f"tokens (with every proposal cut), not below max_length={max_length}, so no "
            "target token would be trained: raise max_length")


def to_examples(rows: Iterable[AftRow], template: PromptTemplate, tokenizer: Any = None,
                max_length: int | None = None, report: FitReport | None = None
                ) -> list[dict[str, Any]]:
    """Prompt/completion examples (TRL's conversational format) for ``rows``.

    With a tokenizer and ``max_length``, rows are fitted (see :func:`fit_row`) and each
    cut is counted in ``report`` (and logged once, as a summary).
    """
    report = report if report is not None else FitReport()
    count = token_counter(tokenizer) if tokenizer is not None and max_length else None
    out = []
    for row in rows:
        if count is not None:
            prompt, note = fit_row(row, template, count, max_length)  # type: ignore[arg-type]
            if note.get("trimmed"):
                report.add("proposals_trimmed", row.id)
            if note.get("target_cut"):
                report.add("targets_cut", row.id)
        else:
            prompt = row_prompt(row, template)
        out.append({
            "prompt": prompt,
            "completion": [{"role": "assistant", "content": row.target}],
        })
    report.log(len(out))
    return out

