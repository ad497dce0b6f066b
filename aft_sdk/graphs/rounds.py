"""Deciding without a model: rounds of drafts that stop when they agree, and votes.

Used by the strategies that compare drafts by their answer keys (``GraphPlan.extractor``,
see :mod:`aft_sdk.answers`): ``vote`` answers with the majority; ``adaptive`` samples in
rounds and stops at agreement (``propose-aggregate`` then skips its aggregation); RSA may
end with a vote over its last population. A decision is written as a derived record (no
model call, no usage), so "the answer" stays the final record and the trace shows why.
"""

from __future__ import annotations

import logging
from typing import Any

from aft_sdk.answers import Tally, tally
from aft_sdk.graphs.plan import GraphPlan
from aft_sdk.graphs.spend import fits
from aft_sdk.graphs.trace import OutputRecord, records_of
from aft_sdk.messages import normalize_messages, text_of

logger = logging.getLogger(__name__)


def _question(state: Any) -> str:
    messages = normalize_messages(state["messages"])
    return next((text_of(m["content"]) for m in reversed(messages) if m["role"] == "user"), "")


def survivors(state: Any, layer: int) -> list[OutputRecord]:
    """The successful records of ``layer``, in slot order."""
    return records_of(state, layer, ok=True)


def drafts_tally(plan: GraphPlan, state: Any, layer: int = 0) -> tuple[list[OutputRecord], Tally]:
    """The layer's surviving records and their vote."""
    records = survivors(state, layer)
    return records, tally([r.text for r in records], plan.extractor)


def agreed(plan: GraphPlan, state: Any) -> bool:
    """Whether the drafts so far meet the adaptive rule (enough of them, in agreement)."""
    if plan.adaptive is None:
        return False
    records, votes = drafts_tally(plan, state)
    return (len(records) >= plan.min_proposals and votes.top is not None
            and votes.votes[votes.top] >= 2 and votes.share >= plan.adaptive.agreement)


def more_rounds(plan: GraphPlan, state: Any) -> bool:
    """Whether another round of drafts goes out: adaptive, room left, no agreement yet,
    and the round (with the layers after it) within the budget."""
    if plan.adaptive is None:
        return False
    sent = len(records_of(state, 0))
    return (sent < plan.layers[0].width and not agreed(plan, state)
            and fits(plan, state, len(next_round(plan, state)), 1))


def next_round(plan: GraphPlan, state: Any) -> range:
    """The slots of the next round of drafts."""
    sent = len(records_of(state, 0))
    return range(sent, min(sent + plan.round_size(), plan.layers[0].width))


class Decide:
    """A node that answers with a draft chosen without a model call.

    ``rule="majority"``: the most common answer among the last layer's survivors (a tie
    goes to the answer whose first draft came first; drafts without an answer do not
    vote; if none has one, the first draft). ``rule="agreement"``: the drafts agreed,
    so the aggregation is skipped and the first agreeing draft answers.
    ``rule="budget"``: the next layer would pass the budget, so the latest layer votes.
    """

    def __init__(self, plan: GraphPlan, rule: str) -> None:
        self.plan = plan
        self.rule = rule

    def run(self, state: Any) -> dict[str, Any]:
        if self.rule == "agreement":
            read, layer = 0, self.plan.depth
        elif self.rule == "budget":  # the latest layer that has outputs
            read = max((r.layer for r in records_of(state, ok=True)), default=0)
            layer = read + 1
        else:
            read, layer = self.plan.depth, self.plan.depth + 1
        if self.rule == "majority" and self.plan.verifier is not None:
            return {"outputs": [self._verified(state, read, layer)]}
        records, votes = drafts_tally(self.plan, state, read)
        decision = {"rule": self.rule, "extractor": self.plan.extractor_name, **votes.record()}
        if self.rule == "agreement":
            decision["skipped"] = "aggregation"
        if self.rule == "budget":
            decision["stopped"] = "budget"
        return {"outputs": [OutputRecord.chosen(layer, records[votes.winner], decision).model_dump()]}

    def _verified(self, state: Any, read: int, layer: int) -> dict[str, Any]:
        """Best-of-N by the verifier: the highest score answers (ties: the first)."""
        records = survivors(state, read)
        question = _question(state)
        scores: list[float | None] = []
        for r in records:
            try:
                scores.append(float(self.plan.verifier(question, r.text)))  # type: ignore[misc]
            except Exception as e:  # a verifier failing on one draft: that draft loses
                scores.append(None)
                logger.warning("verifier failed on slot %s: %s", r.slot, e)
        ranked = [s if s is not None else float("-inf") for s in scores]
        best = max(range(len(records)), key=lambda i: (ranked[i], -i))
        return OutputRecord.chosen(layer, records[best], {"rule": "verifier", "scores": scores}
                                   ).model_dump()
