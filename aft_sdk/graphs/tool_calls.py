"""Tool calls and response formats inside the graph.

What each layer is asked for (:func:`layer_options`): proposers and aggregators are
offered the request's tools; with ``structured.drafts="free"`` the drafts are free text
and only the final layer is held to the response format; with
``tools.after_result="answer"`` a turn that ends with tool results is answered in text.

How drafts that call tools become the answer (:class:`ToolGate`, :class:`ToolDecision`):

- **Mixed drafts.** The calls decide when at least half of the surviving drafts call a
  tool (a tie goes to the calls: a call fetches what the text drafts would guess);
  otherwise the text drafts go on through the usual layers, call drafts shown to the
  aggregator as ``[calls tool] name({...})`` lines.
- **vote** (default): call sets are compared by :func:`~aft_sdk.tools.calls_key` (name
  and canonical JSON arguments; parallel calls as a set). A strict majority answers
  with no model call; a tie goes to the final aggregator, offered the same tools.
- **aggregate**: the final aggregator always decides, reading the candidate calls.

An aggregator that fails, or answers with neither call nor text, leaves the vote's
pick (the first of the tied sets) in place, and the trace says so. The decision is the
record of the final layer: ``prompt.rule`` is ``tool-vote`` or ``tool-aggregate``, with
every candidate (``candidates``: slot and key), the ``votes`` and the winner ``top``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from langgraph.runtime import get_runtime

from aft_sdk.backends.base import Generation
from aft_sdk.errors import AftError
from aft_sdk.graphs.context import context_of
from aft_sdk.graphs.plan import GraphPlan
from aft_sdk.graphs.rounds import more_rounds, survivors
from aft_sdk.graphs.trace import OutputRecord
from aft_sdk.messages import normalize_messages
from aft_sdk.tools import CallOptions, calls_key

NODE = "tool_call"


def layer_options(plan: GraphPlan, call: CallOptions | None, layer: int,
                  messages: list[dict[str, Any]]) -> CallOptions | None:
    """The options one layer's requests carry (``None``: none)."""
    if call is None:
        return None
    if plan.tools.after_result == "answer" and messages and messages[-1]["role"] == "tool":
        call = call.answering()
    if layer == 0 and plan.structured.drafts == "free" and plan.depth > 0:
        return call.without_format()
    return call


def needs_check(options: CallOptions | None, gen: Generation) -> bool:
    """Whether an answer must be checked as JSON (a format was asked; it is not a call)."""
    return options is not None and options.json_mode and not gen.tool_calls


def _calls_win(records: list[OutputRecord]) -> bool:
    calls = sum(1 for r in records if r.tool_calls)
    return calls > 0 and 2 * calls >= len(records)


class ToolGate:
    """The edge after the drafts: to :data:`NODE` when the drafts' calls decide,
    else on as before (``inner``: a route function or a node name)."""

    def __init__(self, plan: GraphPlan, inner: Any) -> None:
        self.plan = plan
        self.inner = inner

    def route(self, state: Any) -> Any:
        if not more_rounds(self.plan, state) and _calls_win(survivors(state, 0)):
            return NODE
        return self.inner(state) if callable(self.inner) else self.inner


class ToolDecision:
    """The node that turns the drafts' calls into the answer's call."""

    def __init__(self, plan: GraphPlan) -> None:
        self.plan = plan
        self.layer = max(plan.depth, 1)  # the answer's layer

    async def run(self, state: Any) -> dict[str, Any]:
        drafts = [r for r in survivors(state, 0) if r.tool_calls]
        keys = [calls_key(r.tool_calls) for r in drafts]
        votes = Counter(keys)
        ranked = votes.most_common()
        top_votes = ranked[0][1]
        tied = [k for k, v in ranked if v == top_votes]
        top = next(k for k in keys if k in tied)  # ties: the set that came first
        decision: dict[str, Any] = {
            "rule": "tool-vote", "candidates": [{"slot": r.slot, "key": k}
                                                for r, k in zip(drafts, keys)],
            "votes": dict(votes), "top": top, "tie": len(tied) > 1}
        picked = drafts[keys.index(top)]
        # A selecting preset (best-of-n judged) answers with an index, not a call: the
        # vote stands there, as it does without an aggregation layer.
        asks_model = self.plan.depth > 0 and not self.plan.template.selects and (
            len(tied) > 1 or self.plan.tools.policy == "aggregate")
        if asks_model:
            record = await self._aggregate(state, drafts, decision)
            if record is not None:
                return {"outputs": [record.model_dump()]}
        return {"outputs": [OutputRecord.chosen(self.layer, picked, decision).model_dump()]}

    async def _aggregate(self, state: Any, drafts: list[OutputRecord],
                         decision: dict[str, Any]) -> OutputRecord | None:
        """One call of the final aggregator over the candidate calls; ``None`` (and the
        reason in ``decision``) when it fails or gives nothing."""
        runtime = get_runtime()
        ctx = context_of(runtime, self.plan.deadline_s, state.get("started_at"))
        layer = self.plan.depth
        messages = normalize_messages(state["messages"])
        inputs = [r.as_input() for r in drafts]
        prompt, info = await asyncio.to_thread(self.plan.aggregation_prompt, messages,
                                               inputs, layer, 0)
        lp = self.plan.layers[layer]
        backend = lp.backend_for(0)
        options = layer_options(self.plan, ctx.call, layer, messages)
        t0 = time.perf_counter()
        try:
            backend.check_options(options)
            limit = ctx.time_left()
            async with asyncio.timeout(limit):
                (gen,) = await backend.generate(prompt, n=1, sampling=lp.sampling,
                                                **({"options": options} if options else {}))
        except (AftError, TimeoutError) as e:
            decision["fallback"] = f"{type(e).__name__}: {e}"[:300]
            decision["latency_s"] = round(time.perf_counter() - t0, 3)
            return None
        if not gen.tool_calls and not gen.text.strip():
            decision["fallback"] = "the aggregator answered with neither a call nor text"
            return None
        decision["rule"] = "tool-aggregate"
        decision["winner"] = calls_key(gen.tool_calls) if gen.tool_calls else "text"
        return OutputRecord.of(layer if layer else 1, 0, gen, info, decision=decision)
