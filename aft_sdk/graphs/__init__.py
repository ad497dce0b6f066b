"""Propose-and-aggregate as LangGraph state graphs.

:class:`AggregateGraph` is the facade app code uses; :func:`build_state_graph` gives
the uncompiled ``StateGraph`` for embedding in larger graphs.
"""

from aft_sdk.graphs.aggregate import AggregateGraph
from aft_sdk.graphs.context import RunContext
from aft_sdk.graphs.create import create_aggregate_graph
from aft_sdk.graphs.topology import build_state_graph, compile_graph
from aft_sdk.graphs.plan import GraphPlan, LayerPlan
from aft_sdk.graphs.steps import StepScorer
from aft_sdk.graphs.trace import AggregateResult, LayerTrace, OutputRecord, Usage, drafts_of

__all__ = [
    "AggregateGraph",
    "AggregateResult",
    "GraphPlan",
    "LayerPlan",
    "LayerTrace",
    "OutputRecord",
    "RunContext",
    "StepScorer",
    "Usage",
    "build_state_graph",
    "compile_graph",
    "create_aggregate_graph",
    "drafts_of",
]
