"""A graph factory for LangGraph Server (``langgraph dev``, LangGraph Platform, Studio).

``langgraph.json`` at the repository root points at :func:`make_graph`. The graph config
is a YAML file named by ``configurable.aft_config`` or the ``AFT_GRAPH_CONFIG``
environment variable (default: the embedded model, width 3, depth 1). The server brings
its own checkpointer and threads: each run on a thread starts with fresh records (the
graph's ``begin`` node clears them) and continues the thread's conversation, with the
answer appended as an assistant message.
"""

from __future__ import annotations

import os
from typing import Any

from langchain_core.runnables import RunnableConfig

from aft_sdk.graphs import AggregateGraph

CONFIG_ENV = "AFT_GRAPH_CONFIG"


def make_graph(config: RunnableConfig | None = None) -> Any:
    """The compiled propose-and-aggregate graph for a LangGraph Server deployment."""
    path = ((config or {}).get("configurable") or {}).get("aft_config") or os.environ.get(CONFIG_ENV)
    graph = AggregateGraph.from_config(path) if path else AggregateGraph()
    return graph.graph
