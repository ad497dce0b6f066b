"""``create_aggregate_graph``: the compiled graph in one call, LangGraph-style.

For users who compose graphs (a node of their own graph, LangGraph Server, a
checkpointer of theirs), as ``create_react_agent`` is for agents;
:class:`~aft_sdk.graphs.AggregateGraph` is the facade around the same graph, with results,
traces, resume and the sync twins::

    from aft_sdk import create_aggregate_graph

    graph = create_aggregate_graph(["embedded"], width=3, depth=1, deadline_s=30)
    state = graph.invoke({"messages": [{"role": "user", "content": "Why is the sky blue?"}]})
    state["answer"], state["outputs"]  # the answer, and every output record
"""

from __future__ import annotations

from typing import Any

from aft_sdk.graphs.aggregate import AggregateGraph
from aft_sdk.graphs.topology import compile_graph


def create_aggregate_graph(proposers: Any = None, aggregator: Any = None, *,
                           checkpointer: Any = None, name: str | None = None,
                           **settings: Any) -> Any:
    """The compiled LangGraph ``StateGraph`` of a propose-and-aggregate graph.

    Args:
        proposers: Backends, configs or spec strings (as
            :class:`~aft_sdk.graphs.AggregateGraph`).
        aggregator: The aggregator: a backend, config or spec string.
        checkpointer: A LangGraph checkpointer.
        name: The compiled graph's name (default ``aggregate``), as a node or in traces.
        **settings: Any :class:`~aft_sdk.config.GraphConfig` field (``width``,
            ``strategy``, ``deadline_s``, a plug-in strategy's section, ...).

    Returns:
        A ``CompiledStateGraph``: input ``{"messages": [...]}``, output state with
        ``answer``, ``messages`` and ``outputs``. ``deadline_s`` holds however it is run.

    Raises:
        ConfigError: A setting is invalid (the message names it).
    """
    facade = AggregateGraph(proposers, aggregator, **settings)
    return compile_graph(facade.plan, checkpointer, name or "aggregate")
