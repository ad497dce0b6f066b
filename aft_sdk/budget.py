"""Budgets: what one question may cost (:class:`BudgetConfig`), and fitting proposals
into a window, the same way at inference and training.

The graph (an aggregator's context window minus its ``max_tokens``) and the trainer
(``max_length`` minus the target) both call :func:`fit_proposals` with a token counter,
so when proposals must be cut, training rows and inference prompts hold the same bytes:
proposals are shortened evenly by tokens (short ones keep everything, water-filling)
and each cut one ends with :data:`TRIM_MARKER`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import Field

from aft_sdk.errors import ConfigError
from aft_sdk.messages import Message, content_tokens
from aft_sdk.prompts import PromptTemplate
from aft_sdk.validation import Strict

Counter = Callable[[str], int]


class BudgetConfig(Strict):
    """A cap on the work one question may cost, which every strategy respects.

    Attributes:
        generations: Outputs sampled (model calls' outputs; votes are free). A fixed
            shape that needs more is refused when the graph is built; adaptive rounds
            stop before a round that would pass it.
        tokens: Prompt + completion tokens.
        usd: US dollars, priced as :attr:`~aft_sdk.graphs.Usage.cost_usd` is; a graph
            with a model nothing prices is refused when it is built (give that backend
            a ``price``).

    Before each further round or layer, the tokens and dollars it would take are
    estimated from the run so far (prompts as long as the drafts' plus what an
    aggregation reads, answers as long as the mean so far); when they would pass a cap,
    no more work is started and the answer is a vote over the latest layer (``rule:
    budget`` in the trace). The first round of drafts always runs.
    """

    generations: int | None = Field(None, ge=1, strict=True)
    tokens: int | None = Field(None, ge=1, strict=True)
    usd: float | None = Field(None, gt=0)

#: Appended to a proposal that was cut, so the aggregator knows it is incomplete.
TRIM_MARKER = " [...]"
#: Tokens per message for role and turn markers, which counting contents misses.
MESSAGE_OVERHEAD = 4
#: Tokens kept free for chat-template framing beyond :data:`MESSAGE_OVERHEAD`.
TEMPLATE_MARGIN = 32


def messages_tokens(messages: Sequence[Message], count: Counter) -> int:
    """Tokens of a conversation: contents plus a fixed overhead per message."""
    return sum(content_tokens(m["content"], count) + MESSAGE_OVERHEAD for m in messages)


def water_fill(sizes: Sequence[int], room: int) -> list[int]:
    """Caps per item so the caps sum to at most ``room``; small items keep their size."""
    caps = [0] * len(sizes)
    left = max(0, room)
    pending = sorted(range(len(sizes)), key=lambda i: sizes[i])
    while pending:
        share = left // len(pending)
        i = pending[0]
        if sizes[i] <= share:
            caps[i] = sizes[i]
            left -= sizes[i]
            pending.pop(0)
            continue
        for j in pending:
            caps[j] = share
        break
    return caps


def trim_text(text: str, cap: int, count: Counter) -> str:
    """``text`` cut to at most ``cap`` tokens, marker included.

    Cuts by characters (not every tokenizer can decode), in proportion first, then
    shrinks until the count fits.
    """
    size = max(1, count(text))
    kept = text[: max(0, len(text) * cap // size)].rstrip()
    while kept and count(kept + TRIM_MARKER) > cap:
        kept = kept[: int(len(kept) * 0.9)].rstrip()
    return kept + TRIM_MARKER if kept else TRIM_MARKER.strip()


def fit_proposals(
    template: PromptTemplate,
    messages: Sequence[Message],
    texts: Sequence[str],
    count: Counter,
    *,
    limit: int,
    reserve: int,
    models: Sequence[str] | None = None,
) -> tuple[list[str], dict[int, list[int]]]:
    """Trims proposals so the rendered prompt plus ``reserve`` tokens fit ``limit``.

    Args:
        template: How proposals are shown (its fixed text counts against the limit).
        messages: The conversation.
        texts: Proposal texts, in the order they will be shown.
        count: Token counter of the model that will read the prompt.
        limit: The window (context window, or training ``max_length``).
        reserve: Tokens kept for the answer (``max_tokens``, or the target's length).
        models: Model names, when the template shows them.

    Returns:
        The texts, and ``{index: [tokens before, tokens kept]}`` for each cut one.

    Raises:
        ConfigError: Even empty proposals would not fit; the message says what to lower.
    """
    budget = limit - reserve - TEMPLATE_MARGIN
    overhead = messages_tokens(template.render(messages, [""] * len(texts), models), count)
    sizes = [count(t) for t in texts]
    room = budget - overhead
    if sum(sizes) <= room:
        return list(texts), {}
    if room < len(texts) * count(TRIM_MARKER.strip()):
        raise ConfigError(
            f"the aggregation prompt needs {overhead} tokens before any proposal, and "
            f"{reserve} are reserved for the answer, in a {limit}-token window: lower "
            "the aggregator's max_tokens (in training: raise max_length), shorten the "
            "conversation, use fewer proposals, or use a larger context window"
        )
    out: list[str] = []
    trims: dict[int, list[int]] = {}
    for i, (text, size, cap) in enumerate(zip(texts, sizes, water_fill(sizes, room))):
        if size <= cap:
            out.append(text)
            continue
        kept = trim_text(text, cap, count)
        out.append(kept)
        trims[i] = [size, count(kept)]
    return out, trims

