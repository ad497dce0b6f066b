"""``AggregateGraph``: the app-facing facade over the compiled propose-and-aggregate graph."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from aft_sdk.backends.base import Backend, normalize_messages, run_sync
from aft_sdk.backends.factory import default_backend, make_backend
from aft_sdk.config import GraphConfig, SamplingConfig, load_yaml, validate
from aft_sdk.errors import ConfigError, GraphTimeoutError
from aft_sdk.graphs.builder import compile_graph
from aft_sdk.graphs.plan import GraphPlan, LayerPlan, check_shape
from aft_sdk.graphs.trace import AggregateResult, build_result
from aft_sdk.prompts import get_template

_DEFAULT_AGG_SAMPLING = SamplingConfig(temperature=0.7, max_tokens=1024)


def _as_backends(value: Any, what: str) -> tuple[Backend, ...]:
    if value is None:
        return (default_backend(),)
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError(f"{what} is an empty list: give at least one backend or leave it out")
    return tuple(make_backend(v) for v in items)


class AggregateGraph:
    """Propose-and-aggregate as a compiled LangGraph graph.

    ``width`` proposals are sampled, then ``depth`` aggregation layers each read all
    outputs of the layer before; intermediate layers write ``width`` outputs, the last
    writes one. Width 3, depth 2 makes 3 + 3 + 1 = 7 generations. ``depth=0`` samples
    proposals only (the answer is the first surviving one): the on-policy data builder
    and sampling baselines use it.

    Args:
        proposers: A backend (sampled ``width`` times) or a list spread over the slots
            round-robin. Backends, configs or spec strings; ``None`` means the
            embedded model.
        aggregator: Backend(s) for the aggregation layers (a list spreads over the
            slots of intermediate layers; the final layer uses the first). ``None``:
            the embedded model.
        width: Proposals per run, and outputs of each intermediate layer.
        depth: Number of aggregation layers.
        proposer_sampling: Sampling for layer 0 (its ``max_tokens`` caps proposals only).
        aggregator_sampling: Sampling for aggregation layers (own ``max_tokens``).
        layers: Per-layer overrides ``{layer: {"backends": [...], "sampling": {...}}}``;
            layer 0 is the proposal layer.
        preset: Aggregation prompt preset (``aft-v1``, ``moa-v1``, ``select-v1``).
        template: Custom prompt template with ``{proposals}``; wins over ``preset``.
        shuffle: Shuffle proposal order per aggregator slot (seeded by ``shuffle_seed``).
        hide_models: Leave model names out of the aggregation prompt.
        min_proposals: Proposals that must succeed for the run to go on.
        deadline_s: Bound on a whole run; branches still running then are cut off.
        layer_timeout_s: Bound on each branch; a slow branch is recorded as failed and
            the survivors go on.
        checkpointer: A LangGraph checkpointer (``InMemorySaver``, ``SqliteSaver``) so
            a failed run resumes without redoing finished branches.
    """

    def __init__(
        self,
        proposers: Any = None,
        aggregator: Any = None,
        *,
        width: int = 3,
        depth: int = 1,
        proposer_sampling: SamplingConfig | Mapping[str, Any] | None = None,
        aggregator_sampling: SamplingConfig | Mapping[str, Any] | None = None,
        layers: Mapping[int, Mapping[str, Any]] | None = None,
        preset: str = "aft-v1",
        template: str | None = None,
        shuffle: bool = False,
        shuffle_seed: int = 0,
        hide_models: bool = True,
        min_proposals: int = 1,
        deadline_s: float | None = None,
        layer_timeout_s: float | None = None,
        checkpointer: Any = None,
    ) -> None:
        check_shape(width, depth, min_proposals)
        if type(checkpointer).__name__ == "SqliteSaver":
            raise ConfigError(
                "the graph runs asynchronously, and SqliteSaver has no async methods: use "
                "langgraph.checkpoint.sqlite.aio.AsyncSqliteSaver (same file format)"
            )
        for name, value in (("deadline_s", deadline_s), ("layer_timeout_s", layer_timeout_s)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")
        p_sampling = _sampling(proposer_sampling, SamplingConfig(), "proposer_sampling")
        a_sampling = _sampling(aggregator_sampling, _DEFAULT_AGG_SAMPLING, "aggregator_sampling")
        prop = _as_backends(proposers, "proposers")
        agg = _as_backends(aggregator, "aggregator")
        overrides = dict(layers or {})
        unknown = [k for k in overrides if not (isinstance(k, int) and 0 <= k <= depth)]
        if unknown:
            raise ConfigError(f"layers has keys {unknown} outside 0..depth={depth}")
        plans = []
        for index in range(depth + 1):
            default_backends = prop if index == 0 else (agg if index < depth else agg[:1])
            default_sampling = p_sampling if index == 0 else a_sampling
            ov = overrides.get(index) or {}
            backends = _as_backends(ov["backends"], f"layers[{index}].backends") \
                if ov.get("backends") else default_backends
            sampling = _sampling(ov.get("sampling"), default_sampling, f"layers[{index}].sampling")
            plans.append(LayerPlan(index, width if index < depth or depth == 0 else 1,
                                   backends, sampling))
        tmpl = get_template(preset, template)
        self.plan = GraphPlan(
            layers=tuple(plans),
            template=tmpl if hide_models else tmpl.with_models_shown(),
            shuffle=shuffle,
            shuffle_seed=shuffle_seed,
            min_proposals=min_proposals,
            deadline_s=deadline_s,
            layer_timeout_s=layer_timeout_s,
        )
        self.graph = compile_graph(self.plan, checkpointer)
        """The compiled LangGraph graph, for checkpointers, subgraphs and drawing."""

    @classmethod
    def from_config(
        cls, config: GraphConfig | Mapping[str, Any] | str | os.PathLike[str], **kwargs: Any
    ) -> AggregateGraph:
        """Builds a graph from a :class:`GraphConfig`, a dict, or a YAML file path.

        Keyword arguments (e.g. ``checkpointer=``) are passed on and win over the file.
        """
        if isinstance(config, (str, os.PathLike)):
            config = load_yaml(config, GraphConfig)
        elif not isinstance(config, GraphConfig):
            config = validate(GraphConfig, dict(config), source="graph config")
        args: dict[str, Any] = config.model_dump(exclude={"proposers", "aggregator", "layers"})
        args["proposers"] = list(config.proposers) or None
        args["aggregator"] = list(config.aggregator) or None
        args["layers"] = {
            k: {"backends": list(v.backends) if v.backends else None, "sampling": v.sampling}
            for k, v in config.layers.items()
        }
        args["proposer_sampling"] = config.proposer_sampling
        args["aggregator_sampling"] = config.aggregator_sampling
        args.update(kwargs)
        return cls(**args)

    @property
    def width(self) -> int:
        return self.plan.width

    @property
    def depth(self) -> int:
        return self.plan.depth

    @property
    def num_generations(self) -> int:
        """Generations one run makes: ``width * depth + 1`` (``width`` for depth 0)."""
        return self.plan.num_generations

    def _config(self, thread_id: str | None, stream_tokens: bool = False) -> dict[str, Any]:
        conf: dict[str, Any] = {"aft_stream_tokens": stream_tokens}
        if self.plan.deadline_s is not None:
            conf["aft_deadline_at"] = time.monotonic() + self.plan.deadline_s
        if self.graph.checkpointer is not None:
            conf["thread_id"] = thread_id or uuid.uuid4().hex
        elif thread_id is not None:
            raise ConfigError("thread_id needs a checkpointer: AggregateGraph(..., checkpointer=...)")
        return {"configurable": conf, "max_concurrency": None}

    def _result(self, state: dict[str, Any], elapsed: float) -> AggregateResult:
        return build_result(
            state, width=self.width, depth=self.depth, preset=self.plan.template.name,
            elapsed_s=elapsed,
        )

    async def _run(self, graph_input: Any, config: dict[str, Any]) -> AggregateResult:
        t0 = time.perf_counter()
        try:
            async with _timeout(self.plan.deadline_s):
                state = await self.graph.ainvoke(graph_input, config)
        except TimeoutError as e:
            raise GraphTimeoutError(
                f"the run passed its deadline of {self.plan.deadline_s}s; raise deadline_s "
                "or set layer_timeout_s so slow branches are dropped instead"
            ) from e
        return self._result(state, time.perf_counter() - t0)

    async def ainvoke(
        self, messages: str | Sequence[Any], *, thread_id: str | None = None
    ) -> AggregateResult:
        """Runs propose-and-aggregate on a question or a conversation.

        Args:
            messages: A question string or chat messages.
            thread_id: Checkpoint thread (needs a checkpointer); ``resume`` continues it.

        Raises:
            InsufficientProposalsError: Fewer than ``min_proposals`` proposals survived.
            GraphError: The final aggregation failed.
            GraphTimeoutError: The deadline passed.
        """
        state = {"messages": normalize_messages(messages), "outputs": []}
        return await self._run(state, self._config(thread_id))

    def invoke(self, messages: str | Sequence[Any], *, thread_id: str | None = None) -> AggregateResult:
        """Blocking twin of :meth:`ainvoke`."""
        return run_sync(self.ainvoke(messages, thread_id=thread_id))

    async def aresume(self, thread_id: str) -> AggregateResult:
        """Continues a failed or interrupted checkpointed run; finished branches are kept."""
        if self.graph.checkpointer is None:
            raise ConfigError("resume needs a checkpointer: AggregateGraph(..., checkpointer=...)")
        config = self._config(thread_id)
        if not (await self.graph.aget_state(config)).values:
            raise ConfigError(f"no checkpoint for thread_id={thread_id!r}: nothing to resume")
        return await self._run(None, config)

    def resume(self, thread_id: str) -> AggregateResult:
        """Blocking twin of :meth:`aresume`."""
        return run_sync(self.aresume(thread_id))

    async def astream(
        self, messages: str | Sequence[Any], *, thread_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yields progress events, the final aggregation's tokens, then the result.

        Events are dicts: ``{"event": "layer", "layer", "ok", "failed"}`` when a layer
        finishes, ``{"event": "token", "text"}`` for each piece of the final answer, and
        last ``{"event": "result", "result": AggregateResult}``.
        """
        t0 = time.perf_counter()
        state_in = {"messages": normalize_messages(messages), "outputs": []}
        config = self._config(thread_id, stream_tokens=True)
        final: dict[str, Any] = {}
        async with _timeout(self.plan.deadline_s):
            async for mode, chunk in self.graph.astream(
                state_in, config, stream_mode=["custom", "values"]
            ):
                if mode == "values":
                    final = chunk
                else:
                    yield chunk
        result = self._result(final, time.perf_counter() - t0)
        last = result.layers[-1].usage
        yield {"event": "layer", "layer": self.depth, "ok": last.generations, "failed": last.failures}
        yield {"event": "result", "result": result}

    def stream(
        self, messages: str | Sequence[Any], *, thread_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Blocking twin of :meth:`astream` (events arrive as they happen)."""
        import queue
        import threading

        q: queue.Queue[Any] = queue.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for event in self.astream(messages, thread_id=thread_id):
                    q.put(event)
            except BaseException as e:
                q.put(e)
            finally:
                q.put(done)

        threading.Thread(target=lambda: run_sync(pump()), daemon=True).start()
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def abatch(
        self, inputs: Sequence[str | Sequence[Any]], *, max_concurrency: int = 4,
        return_exceptions: bool = False,
    ) -> list[AggregateResult | BaseException]:
        """Runs many inputs with at most ``max_concurrency`` runs at once, in order."""
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        sem = asyncio.Semaphore(max_concurrency)

        async def one(item: Any) -> AggregateResult:
            async with sem:
                return await self.ainvoke(item)

        return await asyncio.gather(*(one(i) for i in inputs), return_exceptions=return_exceptions)

    def batch(
        self, inputs: Sequence[str | Sequence[Any]], *, max_concurrency: int = 4,
        return_exceptions: bool = False,
    ) -> list[AggregateResult | BaseException]:
        """Blocking twin of :meth:`abatch`."""
        return run_sync(self.abatch(inputs, max_concurrency=max_concurrency,
                                    return_exceptions=return_exceptions))

    def draw_mermaid(self) -> str:
        """Mermaid source of the compiled graph's topology."""
        return self.graph.get_graph().draw_mermaid()


def _timeout(seconds: float | None) -> Any:
    # Branches already stop at the deadline and record why, which keeps survivors and
    # gives precise errors; this outer guard is a backstop with a little grace, so it
    # only fires if something outside a branch overruns. asyncio.timeout is 3.11+; on
    # 3.10 the branch deadlines alone bound the run.
    if seconds is None or not hasattr(asyncio, "timeout"):
        return contextlib.nullcontext()
    return asyncio.timeout(seconds * 1.05 + 0.5)


def _sampling(value: Any, default: SamplingConfig, what: str) -> SamplingConfig:
    if value is None:
        return default
    if isinstance(value, SamplingConfig):
        return value
    if isinstance(value, Mapping):
        return validate(SamplingConfig, {**default.model_dump(), **value}, source=what)
    raise ConfigError(f"{what} must be a SamplingConfig or a dict, got {type(value).__name__}")
