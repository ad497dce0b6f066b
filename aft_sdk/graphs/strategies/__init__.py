"""Test-time compute strategies, each a small module that builds a ``StateGraph``.

A strategy reuses the shared pieces (:mod:`aft_sdk.graphs.nodes`: branches that sample or
aggregate and record every output, gather barriers, ``begin`` and ``finish``) and so
returns the same state, result and trace type (:mod:`aft_sdk.graphs.trace`). Adding one:

1. write ``strategies/NAME.py`` with ``build(plan: GraphPlan) -> StateGraph`` (or, for a
   new layered shape, teach ``plan._shape`` and ``layered.build`` about it);
2. register it in :data:`STRATEGIES` below and add its name to
   ``GraphConfig.strategy`` (``aft_sdk/config.py``), with any settings it needs as a
   config embedded in ``GraphConfig``;
3. everything that builds from a config (``AggregateGraph``, ``aft run``/``batch``/
   ``serve``, Ray workers, LangChain) then runs it.
"""

from __future__ import annotations

from collections.abc import Callable

from langgraph.graph import StateGraph

from aft_sdk.graphs.plan import GraphPlan
from aft_sdk.graphs.strategies import layered

#: Strategy name -> builder of its uncompiled graph. The three layered strategies share
#: one builder; what differs is in their plan (``graphs/plan.py: _shape``).
STRATEGIES: dict[str, Callable[[GraphPlan], StateGraph]] = {
    "propose-aggregate": layered.build,
    "vote": layered.build,
    "best-of-n": layered.build,
    "rsa": layered.build,
}
