"""Builds and compiles the LangGraph ``StateGraph`` of a :class:`GraphPlan`'s strategy."""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph

from aft_sdk.graphs.plan import GraphPlan
from aft_sdk.plugins import get_strategy


def build_state_graph(plan: GraphPlan) -> StateGraph:
    """The uncompiled graph of the plan's strategy (for embedding in larger graphs)."""
    return get_strategy(plan.strategy).build(plan)


def compile_graph(plan: GraphPlan, checkpointer: Any = None, name: str = "aggregate") -> Any:
    """The compiled graph (a LangGraph ``CompiledStateGraph``)."""
    return build_state_graph(plan).compile(checkpointer=checkpointer, name=name)
