"""Layered strategies: drafts, then layers that read the layer before, then an answer.

One builder serves ``propose-aggregate`` (width x depth), ``vote`` (self-consistency:
drafts, then a majority) and ``rsa`` (recursive self-aggregation: every step aggregates
random subsets of the population); their differences live in the
:class:`~aft_sdk.graphs.plan.GraphPlan` (layer widths, who reads what, how the answer is
chosen), and each optionally samples its drafts in adaptive rounds::

    START -> begin -(Send)-> propose -> gather_0 -(Send)-> aggregate_1 -> gather_1 ...
          -> (aggregate_D | vote | agreement) -> finish -> END

With ``adaptive``, ``gather_0`` either sends another round to ``propose``, or (drafts in
agreement) goes to ``agreement`` instead of the aggregation layers, or to ``vote``.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from aft_sdk.graphs.context import RunContext
from aft_sdk.graphs.nodes import (
    Gather,
    GraphInput,
    GraphOutput,
    GraphState,
    LayerBranch,
    Router,
    begin,
    finish,
    node_name,
)
from aft_sdk.graphs.plan import GraphPlan
from aft_sdk.graphs.rounds import Decide, agreed, more_rounds, next_round
from aft_sdk.graphs.spend import fits
from aft_sdk.graphs.tool_calls import NODE as TOOL_NODE
from aft_sdk.graphs.tool_calls import ToolDecision, ToolGate


def build(plan: GraphPlan) -> StateGraph:
    """The uncompiled graph: one branch node per layer, a gather node after each layer
    whose outputs are read again, and the node that gives the answer."""
    # The state is the public output (messages, answer, outputs); input: messages.
    g = StateGraph(GraphState, context_schema=RunContext, input_schema=GraphInput,
                   output_schema=GraphOutput)
    depth = plan.depth
    for layer in range(depth + 1):
        name = node_name(layer)
        g.add_node(name, LayerBranch(plan, layer).runnable())
        if not plan.is_final_aggregation(layer):
            g.add_node(f"gather_{layer}", Gather(plan, layer).runnable())
            g.add_edge(name, f"gather_{layer}")
    last = node_name(depth) if plan.is_final_aggregation(depth) else f"gather_{depth}"
    g.add_node("finish", finish)
    g.add_edge("finish", END)
    if plan.answer_by == "vote":
        g.add_node("vote", Decide(plan, "majority").run)
        g.add_edge("vote", "finish")
    if plan.adaptive is not None and depth > 0:
        g.add_node("agreement", Decide(plan, "agreement").run)
        g.add_edge("agreement", "finish")
    budget = ["budget"] if plan.budget is not None and depth > 0 else []
    if budget:
        g.add_node("budget", Decide(plan, "budget").run)
        g.add_edge("budget", "finish")
    answer = "vote" if plan.answer_by == "vote" else "finish"
    g.add_node(TOOL_NODE, ToolDecision(plan).run)  # drafts that call tools decide here
    g.add_edge(TOOL_NODE, "finish")
    g.add_node("begin", begin)
    g.add_edge(START, "begin")
    g.add_conditional_edges("begin", Router(plan, 0).route, [node_name(0)])
    for layer in range(1, depth + 1):
        if layer == 1 and plan.adaptive is not None:
            continue  # AfterDrafts routes out of gather_0
        route = Guarded(plan, layer).route
        if layer == 1:
            route = ToolGate(plan, route).route
        g.add_conditional_edges(f"gather_{layer - 1}", route,
                                [node_name(layer), *budget, *([TOOL_NODE] if layer == 1 else [])])
    if plan.adaptive is not None:
        after = AfterDrafts(plan)
        g.add_conditional_edges("gather_0", ToolGate(plan, after.route).route,
                                [*after.targets(answer), TOOL_NODE])
    if depth == 0 and plan.adaptive is None:
        g.add_conditional_edges("gather_0", ToolGate(plan, answer).route, [answer, TOOL_NODE])
    elif plan.adaptive is None or depth > 0:  # else gather_0's edge above leads on
        g.add_edge(last, answer)
    return g


class AfterDrafts:
    """The edge after a round of drafts: another round, an agreement, or on."""

    def __init__(self, plan: GraphPlan) -> None:
        self.plan = plan

    def targets(self, answer: str) -> list[str]:
        nexts = [node_name(0)]
        if self.plan.depth > 0:
            nexts += ["agreement", node_name(1)]
            nexts += ["budget"] if self.plan.budget is not None else []
        else:
            nexts.append(answer)
        return nexts

    def route(self, state: Any) -> Any:
        plan = self.plan
        if more_rounds(plan, state):
            return Router(plan, 0).route(state, next_round(plan, state))
        if plan.depth == 0:
            return "vote" if plan.answer_by == "vote" else "finish"
        if agreed(plan, state):
            return "agreement"
        return Guarded(plan, 1).route(state)


class Guarded:
    """Fans out a layer if it fits the budget; else the latest layer votes (``budget``)."""

    def __init__(self, plan: GraphPlan, layer: int) -> None:
        self.plan = plan
        self.layer = layer

    def route(self, state: Any) -> Any:
        if not fits(self.plan, state, 0, self.layer):
            return "budget"
        return Router(self.plan, self.layer).route(state)
