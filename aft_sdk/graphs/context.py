"""Run-scoped settings, as LangGraph's typed run context (``context_schema``).

Settings that belong to one run, not to the graph, travel here instead of in string
keys of ``configurable``: :class:`AggregateGraph` fills it for each run; under LangGraph
Server a run passes it as ``context`` (a JSON object with these field names).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from aft_sdk.config import SamplingConfig, validate
from aft_sdk.errors import ConfigError
from aft_sdk.messages import normalize_messages
from aft_sdk.tools import CallOptions, call_options


@dataclass(frozen=True)
class RunContext:
    """What one run adds to the graph's settings.

    Attributes:
        deadline_at: ``time.monotonic()`` value the run must finish by (from the graph's
            ``deadline_s`` when the run started); ``None``: no deadline.
        final_sampling: Sampling of the last layer for this run (already merged onto the
            graph's), for example a request's ``temperature`` and ``max_tokens``.
        stream_tokens: Stream the final answer's tokens (``custom`` stream events).
        call: The request's tools, tool choice and response format
            (:class:`~aft_sdk.tools.CallOptions`; under LangGraph Server a JSON object).
    """

    deadline_at: float | None = None
    final_sampling: SamplingConfig | None = None
    stream_tokens: bool = False
    call: CallOptions | None = None

    @classmethod
    def starting_now(cls, deadline_s: float | None, **settings: Any) -> RunContext:
        """The context of a run that starts now (its deadline counted from now)."""
        at = None if deadline_s is None else time.monotonic() + deadline_s
        return cls(deadline_at=at, **settings)

    def time_left(self) -> float | None:
        """Seconds to the deadline (never negative), or ``None`` without one."""
        return None if self.deadline_at is None else max(0.0, self.deadline_at - time.monotonic())


_NAMES = {f.name for f in fields(RunContext)}


def context_of(runtime: Any, deadline_s: float | None = None,
               started_at: float | None = None) -> RunContext:
    """The run's context from a node's ``runtime``: a :class:`RunContext`, a JSON object
    with its fields (LangGraph Server), or nothing (defaults).

    ``deadline_s`` is the graph's own: a run whose context sets no ``deadline_at`` (the
    compiled graph run directly, as a subgraph, or by LangGraph Server) gets it, counted
    from ``started_at``, the wall-clock time the run's ``begin`` node recorded in the
    state. A run resumed from a checkpoint keeps that start (``AggregateGraph.resume``
    gives the resumed run a fresh deadline through its context instead)."""
    ctx = _parse(getattr(runtime, "context", None))
    if ctx.deadline_at is None and deadline_s is not None and started_at is not None:
        elapsed = max(0.0, time.time() - started_at)
        ctx = replace(ctx, deadline_at=time.monotonic() - elapsed + deadline_s)
    return ctx


def _parse(ctx: Any) -> RunContext:
    if isinstance(ctx, RunContext):  # LangGraph builds it from a dict without checking
        ctx = {f.name: getattr(ctx, f.name) for f in fields(RunContext)}
    if ctx is None:
        return RunContext()
    if not isinstance(ctx, Mapping):
        raise ConfigError(f"the run context must be an object with fields {sorted(_NAMES)}, "
                          f"got {type(ctx).__name__}")
    unknown = sorted(set(ctx) - _NAMES)
    if unknown:
        raise ConfigError(f"unknown run context fields {unknown}; known: {sorted(_NAMES)}")
    data = dict(ctx)
    if data.get("final_sampling") is not None and not isinstance(data["final_sampling"],
                                                                 SamplingConfig):
        data["final_sampling"] = validate(SamplingConfig, data["final_sampling"],
                                          source="context.final_sampling")
    if data.get("call") is not None:
        data["call"] = call_options(data["call"], source="context.call")
    return RunContext(**data)


async def fresh_input(graph: Any, messages: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Input of a new run on a compiled ``graph``; refuses a thread that holds a run."""
    state = {"messages": normalize_messages(messages), "outputs": []}
    if graph.checkpointer is not None:
        existing = await graph.aget_state(config)
        if existing.values:
            thread = config["configurable"]["thread_id"]
            status = "an unfinished run" if existing.next else "a finished run"
            raise ConfigError(
                f"thread_id={thread!r} already holds {status}; a new run there would mix "
                "its outputs with the old ones. Use a new thread_id for a new question, "
                "or resume(thread_id) to continue an unfinished run")
    return state
