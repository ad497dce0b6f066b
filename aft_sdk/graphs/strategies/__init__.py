"""Test-time compute strategies: one module each, on one contract (:class:`Strategy`).

A strategy owns its name, its settings, its checks against the shared settings, its
cost and the builder of its graph (:mod:`.base`); the shared nodes
(:mod:`aft_sdk.graphs.nodes`, :mod:`aft_sdk.graphs.rounds`) give every strategy the
same state, result and trace, and the cross-cutting policies (adaptive rounds, quorum,
budget, tool calls, structured output). Built-ins: :mod:`.propose_aggregate`,
:mod:`.vote`, :mod:`.best_of_n`, :mod:`.rsa`. Another package adds one through the entry
point group ``aft_sdk.strategies`` (:mod:`aft_sdk.plugins`; docs/contributing/write-a-strategy.md).
"""

from aft_sdk.graphs.strategies.base import Cost, Shape, Strategy
from aft_sdk.plugins import get_strategy, strategy_names

__all__ = ["Cost", "Shape", "Strategy", "get_strategy", "strategy_names"]
