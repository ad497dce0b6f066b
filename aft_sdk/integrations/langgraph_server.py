"""A graph factory for LangGraph Server (``langgraph dev``, LangGraph Platform, Studio).

``langgraph.json`` at the repository root points at :func:`make_graph`. A deployment
picks its graph with a YAML config named by ``configurable.aft_config`` (per assistant)
or the ``AFT_GRAPH_CONFIG`` environment variable (``env`` in ``langgraph.json``); a
relative path is read from the working directory, else from the repository root. With
neither, the graph is the same default as ``aft run``: the embedded model proposes and
its shipped AFT adapter aggregates. The server brings its own checkpointer and threads:
each run on a thread starts with fresh records (the graph's ``begin`` node clears them)
and continues the thread's conversation, with the answer appended as an assistant
message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from aft_sdk.graphs import AggregateGraph

CONFIG_ENV = "AFT_GRAPH_CONFIG"
ROOT = Path(__file__).resolve().parents[2]


def build(config: RunnableConfig | None = None) -> AggregateGraph:
    """The :class:`AggregateGraph` a deployment serves (see the module docstring)."""
    path = ((config or {}).get("configurable") or {}).get("aft_config") or os.environ.get(CONFIG_ENV)
    if not path:
        return AggregateGraph()
    found = Path(path)
    if not found.is_absolute() and not found.exists() and (ROOT / found).exists():
        found = ROOT / found
    return AggregateGraph.from_config(found)


def make_graph(config: RunnableConfig | None = None) -> Any:
    """The compiled propose-and-aggregate graph for a LangGraph Server deployment."""
    return build(config).graph
