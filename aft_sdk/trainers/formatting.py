"""AFT rows -> conversational prompt/completion examples for TRL's SFTTrainer.

The prompt is rendered by the same :class:`~aft_sdk.prompts.PromptTemplate` the graph
uses, so training and inference see identical bytes. TRL then applies the tokenizer's
chat template and masks the loss to the completion (the target).

When a row would exceed ``max_length``, proposal text is trimmed evenly by tokens
before anything else, so the target is never cut while proposals can give way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aft_sdk.graphs.plan import water_fill
from aft_sdk.prompts import PromptTemplate
from aft_sdk.trainers.rows import AftRow

logger = logging.getLogger(__name__)


def row_prompt(row: AftRow, template: PromptTemplate, proposals: list[str] | None = None
               ) -> list[dict[str, str]]:
    """The messages the model sees for a row (aggregation prompt, or the plain chat)."""
    if row.kind == "sft":
        return [dict(m) for m in row.messages]
    return template.render(row.messages, row.proposals if proposals is None else proposals)


def _length(tokenizer: Any, prompt: list[dict[str, str]], target: str) -> int:
    ids = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": target}], tokenize=True
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer versions
        ids = ids["input_ids"]
    return len(ids)


def fit_row(row: AftRow, template: PromptTemplate, tokenizer: Any, max_length: int
            ) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The row's prompt with proposals trimmed so prompt + target fit ``max_length``.

    Returns the prompt and a note (``{}`` when nothing was cut).
    """
    prompt = row_prompt(row, template)
    total = _length(tokenizer, prompt, row.target)
    if total <= max_length or row.kind == "sft":
        return prompt, ({"target_cut": total - max_length} if total > max_length else {})
    encoded = [tokenizer.encode(p, add_special_tokens=False) for p in row.proposals]
    sizes = [len(e) for e in encoded]
    excess = total - max_length
    for _ in range(4):  # re-measure: detokenised text can re-tokenise a little longer
        caps = water_fill(sizes, max(0, sum(sizes) - excess))
        kept = [tokenizer.decode(e[:c]) if c < len(e) else p
                for e, c, p in zip(encoded, caps, row.proposals)]
        prompt = row_prompt(row, template, kept)
        total = _length(tokenizer, prompt, row.target)
        if total <= max_length or sum(caps) == 0:
            break
        excess += total - max_length
    note = {"proposal_tokens": [sizes, caps]}
    if total > max_length:
        note["target_cut"] = total - max_length
        logger.warning("row %s: the target alone exceeds max_length=%d; TRL will cut %d tokens",
                       row.id, max_length, total - max_length)
    return prompt, note


def to_examples(rows: Iterable[AftRow], template: PromptTemplate, tokenizer: Any = None,
                max_length: int | None = None) -> list[dict[str, Any]]:
    """Prompt/completion examples (TRL's conversational format) for ``rows``."""
    out = []
    for row in rows:
        if tokenizer is not None and max_length:
            prompt, _ = fit_row(row, template, tokenizer, max_length)
        else:
            prompt = row_prompt(row, template)
        out.append({
            "prompt": prompt,
            "completion": [{"role": "assistant", "content": row.target}],
        })
    return out
