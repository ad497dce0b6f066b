"""Width x depth propose-and-aggregate: ``width`` drafts, then ``depth`` aggregation layers.

``START -> begin -(Send)-> propose -> gather_0 -(Send)-> aggregate_1 -> ... -> finish``.
"""

from __future__ import annotations


from langgraph.graph import END, START, StateGraph

from aft_sdk.graphs.context import RunContext
from aft_sdk.graphs.nodes import (
    Gather,
    GraphInput,
    GraphState,
    LayerBranch,
    Router,
    begin,
    finish,
    node_name,
)
from aft_sdk.graphs.plan import GraphPlan


def build(plan: GraphPlan) -> StateGraph:
    """The uncompiled graph: one branch node and one gather node per layer."""
    # The state is the public output (messages, answer, outputs); input: messages.
    g = StateGraph(GraphState, context_schema=RunContext, input_schema=GraphInput,
                   output_schema=GraphState)
    depth = plan.depth
    for layer in range(depth + 1):
        name = node_name(layer)
        g.add_node(name, LayerBranch(plan, layer).run)
        if layer < depth or depth == 0:
            g.add_node(f"gather_{layer}", Gather(plan, layer).run)
            g.add_edge(name, f"gather_{layer}")
    g.add_node("finish", finish)
    g.add_edge("gather_0" if depth == 0 else node_name(depth), "finish")
    g.add_edge("finish", END)
    g.add_node("begin", begin)
    g.add_edge(START, "begin")
    g.add_conditional_edges("begin", Router(plan, 0).route, [node_name(0)])
    for layer in range(1, depth + 1):
        g.add_conditional_edges(
            f"gather_{layer - 1}", Router(plan, layer).route, [node_name(layer)]
        )
    return g
