"""Aggregation prompts: versioned presets and user-supplied templates.

An aggregation prompt turns (conversation, proposals) into the messages the aggregator
sees. The same code renders prompts for inference (the graph) and for training data
(the trainers), so both always see identical bytes. Preset texts are frozen per version:
changing wording means adding a new version, and tests pin the bytes of each.

Placeholders are replaced literally and in one pass, so other braces in a template are
left alone and text from users or models (a draft that contains ``{question}``) is never
interpreted:

- in ``template``: ``{proposals}`` (the numbered block), ``{num_proposals}``, ``{question}``
  (the last user turn, for ``placement="user"`` templates);
- in ``item_format``: ``{index}`` (1-based), ``{text}``, ``{model}``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from aft_sdk.errors import ConfigError
from aft_sdk.messages import Message, text_of


@dataclass(frozen=True)
class PromptTemplate:
    """How proposals are shown to an aggregator.

    Attributes:
        name: Preset name with version (``aft-v1``) or ``custom``.
        template: The instruction text with placeholders.
        item_format: How one proposal is written; joined with ``separator``.
        separator: Between proposals.
        placement: ``system`` puts the rendered text in the system message and keeps the
            user turns unchanged (the AFT layout); ``user`` replaces the last user turn.
        selects: The aggregator answers with a proposal number instead of new text
            (universal self-consistency); the chosen proposal becomes the output.
    """

    name: str
    template: str
    item_format: str = "{index}. {text}"
    separator: str = "\n"
    placement: Literal["system", "user"] = "system"
    selects: bool = False

    def render(
        self,
        messages: Sequence[Message],
        proposals: Sequence[str],
        models: Sequence[str] | None = None,
    ) -> list[Message]:
        """Returns the aggregator's messages for ``proposals`` on ``messages``."""
        if not proposals:
            raise ConfigError("cannot render an aggregation prompt without proposals")
        models = models or [""] * len(proposals)
        block = self.separator.join(
            _substitute(self.item_format, {"index": str(i + 1), "model": m, "text": p})
            for i, (p, m) in enumerate(zip(proposals, models))
        )
        question = next((text_of(m["content"]) for m in reversed(messages)
                         if m["role"] == "user"), "")
        text = _substitute(self.template, {
            "proposals": block, "num_proposals": str(len(proposals)), "question": question,
        })
        if self.placement == "user":
            out = [dict(m) for m in messages]
            last = max(i for i, m in enumerate(out) if m["role"] == "user")
            kept = out[last]["content"]  # an image in the question stays in view
            others = [p for p in kept if p.get("type") != "text"] if isinstance(kept, list) else []
            out[last]["content"] = [{"type": "text", "text": text}, *others] if others else text
            return out
        # The instruction leads the system turn; the user's system and developer
        # messages (text) follow it, and the rest of the conversation is unchanged.
        instructions = ("system", "developer")
        rest = [dict(m) for m in messages if m["role"] not in instructions]
        original = "\n\n".join(text_of(m["content"]) for m in messages
                                if m["role"] in instructions)
        system = text if not original else f"{text}\n\n{original}"
        return [{"role": "system", "content": system}, *rest]

    def with_models_shown(self) -> PromptTemplate:
        """A copy whose items name the model that wrote each proposal."""
        if "{model}" in self.item_format:
            return self
        fmt = self.item_format.replace("{text}", "[{model}] {text}", 1)
        return replace(self, item_format=fmt)


_AFT_V1 = (
    "You will see {num_proposals} draft replies to the user's latest message, each "
    "written without seeing the others. Check every draft: note what each gets right, "
    "spot claims that are wrong or unsupported, and notice what all of them miss. Then "
    "write the single best reply you can, in your own words, keeping what is correct "
    "and repairing what is not. Address the user directly and do not refer to the "
    "drafts.\n\nDrafts:\n{proposals}"
)

_MOA_V1 = (
    "Several assistants have already answered the conversation below. Their answers "
    "are listed after this note and may contain mistakes, omissions or bias. Merge "
    "them into one reply that is more accurate, complete and clearly organised than any "
    "single answer. Where they disagree, reason out which is right before you commit. "
    "Write as yourself.\n\nAnswers from other assistants:\n{proposals}"
)

_SELECT_V1 = (
    "Question:\n{question}\n\nHere are {num_proposals} candidate answers:\n{proposals}\n\n"
    "Decide which candidate agrees best with the consensus of the others on the final "
    "answer. Reply with that candidate's number only, for example: 2"
)

PRESETS: dict[str, PromptTemplate] = {
    "aft-v1": PromptTemplate("aft-v1", _AFT_V1),
    "moa-v1": PromptTemplate("moa-v1", _MOA_V1, item_format="[{index}] {text}", separator="\n\n"),
    "select-v1": PromptTemplate(
        "select-v1", _SELECT_V1, item_format="Candidate {index}:\n{text}", separator="\n\n",
        placement="user", selects=True,
    ),
}
ALIASES = {"aft": "aft-v1", "moa": "moa-v1", "select": "select-v1"}


def _substitute(text: str, values: Mapping[str, str]) -> str:
    # One regex pass: inserted values are never scanned again for placeholders.
    pattern = "|".join(re.escape("{" + k + "}") for k in values)
    return re.sub(pattern, lambda m: values[m.group()[1:-1]], text)


def get_template(
    preset: str = "aft-v1",
    template: str | None = None,
    *,
    item_format: str | None = None,
    separator: str | None = None,
    placement: Literal["system", "user"] | None = None,
) -> PromptTemplate:
    """Resolves a preset name, or wraps a custom template string.

    Args:
        preset: A name from :data:`PRESETS` or an alias (``aft``, ``moa``, ``select``).
        template: A custom template; it wins over ``preset`` and is rendered as is.
        item_format: How one proposal is written (``{index}``, ``{text}``, ``{model}``);
            ``None`` keeps the preset's (custom templates: ``"{index}. {text}"``).
        separator: Between proposals; ``None`` keeps the preset's (custom: newline).
        placement: ``system`` or ``user``; ``None`` keeps the preset's (custom: system).

    Raises:
        ConfigError: Unknown preset, a custom template without ``{proposals}``, an
            item format without ``{text}``, or an unknown placement.
    """
    if item_format is not None and "{text}" not in item_format:
        raise ConfigError("item_format must contain {text} where each proposal goes")
    if placement not in (None, "system", "user"):
        raise ConfigError(f"placement must be 'system' or 'user', got {placement!r}")
    changes = {k: v for k, v in (("item_format", item_format), ("separator", separator),
                                 ("placement", placement)) if v is not None}
    if template is not None:
        if "{proposals}" not in template:
            raise ConfigError(
                "a custom template must contain the placeholder {proposals} where the "
                "numbered proposals go"
            )
        return replace(PromptTemplate("custom", template), **changes)
    base = _preset(preset)
    return replace(base, name=f"{base.name}+custom", **changes) if changes else base


def _preset(preset: str) -> PromptTemplate:
    name = ALIASES.get(preset, preset)
    if name not in PRESETS:
        known = ", ".join(sorted([*PRESETS, *ALIASES]))
        raise ConfigError(f"unknown prompt preset {preset!r}; choose one of: {known}")
    return PRESETS[name]


def shuffled_order(count: int, *, seed: int, layer: int, slot: int) -> list[int]:
    """A reproducible permutation of ``range(count)`` for one aggregator slot.

    Shuffling counters the aggregator's positional bias; seeding by (seed, layer, slot)
    keeps runs repeatable while giving each slot its own order.
    """
    order = list(range(count))
    random.Random(f"{seed}:{layer}:{slot}").shuffle(order)
    return order


def parse_selection(text: str, count: int) -> int | None:
    """The 0-based proposal a selection answer names, or ``None`` if it names none."""

    for match in re.finditer(r"\d+", text):
        value = int(match.group())
        if 1 <= value <= count:
            return value - 1
    return None
