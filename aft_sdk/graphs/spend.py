"""Whether more work fits a run's budget (``GraphConfig.budget``: generations, tokens,
US dollars), estimated before each further round of drafts or layer.

What is left to run is estimated from the run so far: each draft's prompt as long as the
drafts' prompts were; each aggregation's prompt that, plus the aggregation template's own
text (counted with the aggregator's token counter, scaled by how the drafts' prompts
counted against the server's own count), plus the outputs it reads (its subset's share, for RSA steps); every answer
as long as the mean answer so far; priced at the backend of each slot. Spent tokens and
dollars are the run's :class:`Usage`. The estimate carries a :data:`MARGIN` (on the fault
server's runs it came within 5% below the real spend of 3x2, 5x1 and 4x3 graphs).
"""

from __future__ import annotations

from typing import Any

from aft_sdk.backends.pricing import cost_for
from aft_sdk.budget import messages_tokens
from aft_sdk.graphs.plan import GraphPlan
from aft_sdk.graphs.trace import OutputRecord, Usage, records_of
from aft_sdk.messages import Message, normalize_messages

#: Room kept over the estimate of the work left, so that a run stops before its cap.
MARGIN = 1.15


def fits(plan: GraphPlan, state: Any, drafts: int, from_layer: int) -> bool:
    """Whether ``drafts`` more drafts and every layer from ``from_layer`` on stay within
    the budget."""
    budget = plan.budget
    if budget is None:
        return True
    records = [r for r in records_of(state) if not r.derived]
    done = [r for r in records if r.ok]
    planned = drafts + sum(layer.width for layer in plan.layers[from_layer:])
    if budget.generations is not None and len(done) + planned > budget.generations:
        return False
    if budget.tokens is None and budget.usd is None:
        return True
    spent = Usage.of(records)  # failed calls' tokens count too
    tokens = usd = 0.0
    if done:  # nothing to estimate from before a first output: only what was spent
        sent = sum(1 for r in records if r.layer == 0)
        messages = normalize_messages(state["messages"])
        tokens, usd = (MARGIN * x for x in estimate(plan, messages, done, sent, drafts,
                                                    from_layer))
    if budget.tokens is not None and spent.total_tokens + tokens > budget.tokens:
        return False
    return budget.usd is None or spent.cost_usd + usd <= budget.usd


def estimate(plan: GraphPlan, messages: list[Message], done: list[OutputRecord], sent: int,
             drafts: int, from_layer: int) -> tuple[float, float]:
    """Tokens and dollars of ``drafts`` more drafts (slots from ``sent`` on) and of every
    layer from ``from_layer`` on, from the successful records ``done`` so far."""
    firsts = [r for r in done if r.layer == 0] or done
    asked = sum(r.prompt_tokens for r in firsts) / len(firsts)
    answer = sum(r.completion_tokens for r in done) / len(done)
    tokens = usd = 0.0

    def add(layer: int, slot: int, prompt: float) -> None:
        nonlocal tokens, usd
        tokens += prompt + answer
        backend = plan.layers[layer].backend_for(slot)
        usd += cost_for(backend, round(prompt), round(answer)) or 0.0

    for slot in range(sent, sent + drafts):
        add(0, slot, asked)
    # What the first planned layer reads: the outputs of the one before it, and the drafts
    # still to come.
    read = _written(done, from_layer - 1) + drafts * answer
    alive = sum(1 for r in done if r.layer == from_layer - 1) + drafts
    seen = _seen_framing(plan, done, asked)
    frames: dict[tuple[int, int], float] = {}  # by backend and drafts read
    for index in range(max(from_layer, 1), plan.depth + 1):
        layer = plan.layers[index]
        reads, shown = _shown(plan, index, read, alive)
        for slot in range(layer.width):
            key = (id(layer.backend_for(slot)), reads)
            if key not in frames:
                frames[key] = seen[1] if seen is not None and seen[0] == reads else \
                    framing(plan, messages, index, slot, reads, asked)
            add(index, slot, asked + frames[key] + shown)
        read, alive = layer.width * answer, layer.width
    return tokens, usd


def framing(plan: GraphPlan, messages: list[Message], layer: int, slot: int,
             reads: int, asked: float) -> float:
    """Tokens the aggregation template adds to the conversation around ``reads`` drafts,
    by the slot's backend's counter, in the units of the conversation's count ``asked``."""
    count = plan.layers[layer].backend_for(slot).count_tokens
    empty = plan.template.render(messages, [""] * reads, [""] * reads)
    own = messages_tokens(messages, count)
    return max(0, messages_tokens(empty, count) - own) * asked / max(1, own)


def _written(done: list[OutputRecord], layer: int) -> int:
    return sum(r.completion_tokens for r in done if r.layer == layer)


def _shown(plan: GraphPlan, layer: int, read: float, alive: int) -> tuple[int, float]:
    """How many outputs each slot of ``layer`` reads, and their tokens, of ``read``
    written by the ``alive`` outputs of the layer before it."""
    if plan.reads_subset(layer) and plan.subset and alive > plan.subset:
        return plan.subset, read * plan.subset / alive
    return alive, read


def _seen_framing(plan: GraphPlan, done: list[OutputRecord], asked: float
                  ) -> tuple[int, float] | None:
    """How many drafts the latest aggregation layer that ran read, and the template's
    tokens as it was charged for them (its prompts less the conversation and the drafts
    read); ``None`` before any aggregation. Used for later layers that read as many."""
    last = max((r.layer for r in done), default=0)
    ran = [r for r in done if r.layer == last]
    if last == 0 or not ran:
        return None
    before = [r for r in done if r.layer == last - 1]
    reads, shown = _shown(plan, last, _written(done, last - 1), len(before))
    return reads, max(0.0, sum(r.prompt_tokens for r in ran) / len(ran) - asked - shown)
