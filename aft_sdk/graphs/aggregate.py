"""``AggregateGraph``: the app-facing facade over the compiled propose-and-aggregate graph."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from aft_sdk.aio import gather_all, iterate_sync, run_sync, within
from aft_sdk.backends.factory import BackendLike
from aft_sdk.config import (
    PROMPT_FIELDS, GraphConfig, PromptConfig, SamplingConfig, load_yaml, validate)
from aft_sdk.errors import AftError, ConfigError, GraphTimeoutError
from aft_sdk import tracing
from aft_sdk.graphs.topology import compile_graph
from aft_sdk.graphs.context import RunContext, fresh_input
from aft_sdk.graphs.plan import build_plan, place_backends, split_layers
from aft_sdk.graphs.trace import AggregateResult, build_result
from aft_sdk.record import Recorder, as_recorder, graph_identity
from aft_sdk.runner import DEFAULT_CONCURRENCY
from aft_sdk.tools import CallOptions, call_options


class AggregateGraph:
    """Propose-and-aggregate as a compiled LangGraph graph.

    ``width`` proposals are sampled, then ``depth`` aggregation layers each read all
    outputs of the layer before; intermediate layers write ``width`` outputs, the last
    writes one. Width 3, depth 2 makes 3 + 3 + 1 = 7 generations; ``depth=0`` samples
    proposals only. The settings are one :class:`GraphConfig` (:attr:`config`).

    Args:
        proposers: A backend (sampled ``width`` times) or a list spread over the slots
            round-robin. Backends, configs or spec strings; ``None`` means the
            embedded model.
        aggregator: Backend(s) for the aggregation layers (a list spreads over the
            slots of intermediate layers; the final layer uses the first). ``None``:
            the embedded model with its shipped AFT aggregator adapter (``embedded+aft``)
            when the install has one, else the embedded model as it is.
        width: Proposals per run, and outputs of each intermediate layer.
        depth: Number of aggregation layers.
        proposer_sampling: Sampling for layer 0 (its ``max_tokens`` caps proposals only).
        aggregator_sampling: Sampling for aggregation layers (own ``max_tokens``).
        layers: Per-layer overrides ``{layer: {"backends": [...], "sampling": {...}}}``.
        prompt: The aggregation prompt (:class:`~aft_sdk.config.PromptConfig`). Unset: a
            trained aggregator's own (its ``aft_sdk.json``), else ``aft-v1``.
        preset: The prompt's preset (``"moa"``, ...), the one prompt field that is also
            a keyword; the others as keywords (``shuffle=True``) still work but are
            deprecated: pass ``prompt={"shuffle": True}``.
        min_proposals: Proposals that must succeed for the run to go on.
        deadline_s: Bound on a whole run; branches still running then are cut off.
        layer_timeout_s: Bound on each branch; a slow one fails, the survivors go on.
        name: A label for the graph (``aft serve`` lists it as a model id).
        strategy: A strategy's name (``aft strategies`` lists them; default
            ``propose-aggregate``); with ``vote`` (answer keys), ``adaptive`` and ``rsa``,
            and a plug-in's own section as a keyword of its name (``**settings``).
        quorum: A layer goes on once this many of its outputs are in; the others are
            cancelled (stragglers cost latency, not quality, when it is close to width).
        budget: ``{"generations": N, "tokens": T, "usd": D}`` per question (``BudgetConfig``).
        tools: How drafts' tool calls decide the answer's call (``ToolsConfig``).
        structured: How a response format applies (``StructuredConfig``).
        checkpointer: A LangGraph checkpointer (``InMemorySaver``, ``AsyncSqliteSaver``)
            so a failed run resumes without redoing finished branches. A thread holds
            one run: invoking again on a ``thread_id`` that already has a checkpoint is
            refused (``resume`` continues it; a new question needs a new thread id).
        record: A folder (or :class:`~aft_sdk.record.Recorder`) where every answered run
            is kept as a row for training (``aft data build records``); the result's
            ``record_id`` names it for feedback (:attr:`recorder`).

    Raises:
        ConfigError: A setting is out of range or a backend spec is unknown.
    """

    def __init__(
        self,
        proposers: BackendLike | Sequence[BackendLike] | None = None,
        aggregator: BackendLike | Sequence[BackendLike] | None = None,
        *,
        width: int = 3,
        depth: int = 1,
        proposer_sampling: SamplingConfig | Mapping[str, Any] | None = None,
        aggregator_sampling: SamplingConfig | Mapping[str, Any] | None = None,
        layers: Mapping[int, Mapping[str, Any]] | None = None,
        prompt: PromptConfig | Mapping[str, Any] | None = None,
        preset: str | None = None,
        min_proposals: int = 1,
        deadline_s: float | None = None,
        layer_timeout_s: float | None = None,
        checkpointer: Any = None,
        name: str | None = None,
        strategy: str | None = None,
        vote: Mapping[str, Any] | None = None,
        adaptive: Mapping[str, Any] | None = None,
        rsa: Mapping[str, Any] | None = None,
        quorum: int | None = None,
        budget: Mapping[str, Any] | None = None,
        tools: Mapping[str, Any] | None = None,
        structured: Mapping[str, Any] | None = None,
        record: Any = None,
        **settings: Any,
    ) -> None:
        # Keyword sugar: the arguments become one GraphConfig (validated once); backends
        # given as specs or configs go into it, live backend objects beside it.
        flat = sorted(set(PROMPT_FIELDS) - {"preset"} & settings.keys())
        if flat:
            warnings.warn(
                f"AggregateGraph({', '.join(f'{k}=...' for k in flat)}) is deprecated: pass "
                f"prompt={{{', '.join(repr(k) + ': ...' for k in flat)}}} (the keywords "
                "will be removed in aft-sdk 0.3)", DeprecationWarning, stacklevel=2)
        live: dict[str, Any] = {}
        data: dict[str, Any] = dict(
            name=name, width=width, depth=depth, proposer_sampling=proposer_sampling,
            aggregator_sampling=aggregator_sampling, prompt=prompt, preset=preset,
            min_proposals=min_proposals, deadline_s=deadline_s,
            layer_timeout_s=layer_timeout_s, strategy=strategy, vote=vote, adaptive=adaptive,
            rsa=rsa, quorum=quorum, budget=budget, tools=tools, structured=structured,
            proposers=proposers, aggregator=aggregator,
            **settings)  # a plug-in strategy's section; a misspelt name fails by name
        place_backends(data, live)
        data["layers"], live["layer_backends"] = split_layers(layers or {})
        config = GraphConfig().with_changes(**data)
        self._setup(config, checkpointer, as_recorder(record), **live)

    def _setup(self, config: GraphConfig, checkpointer: Any, recorder: Recorder | None = None,
               proposers: Any = None, aggregator: Any = None,
               layer_backends: Mapping[int, Any] | None = None) -> None:
        if type(checkpointer).__name__ == "SqliteSaver":
            raise ConfigError("the graph runs asynchronously, and SqliteSaver has no async "
                              "methods: use langgraph.checkpoint.sqlite.aio.AsyncSqliteSaver "
                              "(same file format)")
        self.config = config
        """The graph's whole description (backends given as objects are not in it)."""
        self.recorder = recorder
        """Where answered runs are recorded (``record=``), or ``None``."""
        self.portable = proposers is None and aggregator is None and not layer_backends
        """Whether :attr:`config` describes every backend, so the graph can be rebuilt
        from it elsewhere (Ray workers)."""
        self._live = dict(proposers=proposers, aggregator=aggregator,
                          layer_backends=layer_backends)
        self.plan = build_plan(config, proposers, aggregator, layer_backends)
        self.graph = compile_graph(self.plan, checkpointer)
        """The compiled LangGraph graph, for checkpointers, subgraphs and drawing."""

    @property
    def source(self) -> GraphConfig | None:
        """:attr:`config` when it describes the whole graph (:attr:`portable`), else ``None``."""
        return self.config if self.portable else None

    @classmethod
    def from_config(
        cls, config: GraphConfig | Mapping[str, Any] | str | os.PathLike[str], *,
        proposers: Any = None, aggregator: Any = None, checkpointer: Any = None,
        record: Any = None, **changes: Any,
    ) -> AggregateGraph:
        """Builds a graph from a :class:`GraphConfig`, a dict, or a YAML file path.

        ``AggregateGraph.from_config(c).config == c``. ``proposers`` / ``aggregator``
        replace the config's backends (specs and configs go into :attr:`config`; live
        backend objects beside it); ``changes`` are config fields (``width=5``,
        ``preset="moa"``) applied on top.
        """
        if isinstance(config, (str, os.PathLike)):
            config = load_yaml(config, GraphConfig)
        elif not isinstance(config, GraphConfig):
            config = validate(GraphConfig, dict(config), source="graph config")
        live: dict[str, Any] = {}
        place_backends(changes := {**changes, "proposers": proposers, "aggregator": aggregator},
                       live)  # specs and configs are data; live backends beside them
        if changes:
            config = config.with_changes(**changes)
        graph = cls.__new__(cls)
        graph._setup(config, checkpointer, as_recorder(record), **live)
        return graph

    def with_options(self, **changes: Any) -> AggregateGraph:
        """A variant: ``changes`` to :attr:`config` (``None`` resets a field), the same
        live backends and checkpointer."""
        live = dict(self._live)
        place_backends(changes, live)  # new backends replace the live ones
        graph = type(self).__new__(type(self))
        graph._setup(self.config.with_options(**changes), self.graph.checkpointer,
                     self.recorder, **live)
        return graph

    @property
    def width(self) -> int:
        return self.plan.width

    @property
    def depth(self) -> int:
        return self.plan.depth

    @property
    def num_generations(self) -> int:
        """Generations one run makes at most (adaptive rounds and budgets may make fewer)."""
        return self.plan.num_generations

    def _config(self, thread_id: str | None) -> dict[str, Any]:
        conf: dict[str, Any] = {}
        if self.graph.checkpointer is not None:
            conf["thread_id"] = thread_id or uuid.uuid4().hex
        elif thread_id is not None:
            raise ConfigError("thread_id needs a checkpointer: AggregateGraph(..., checkpointer=...)")
        return {"configurable": conf, "max_concurrency": None}

    def _context(self, stream_tokens: bool = False,
                 final_sampling: SamplingConfig | Mapping[str, Any] | None = None,
                 call: CallOptions | Mapping[str, Any] | None = None) -> RunContext:
        last = None
        if final_sampling is not None:
            # Validated now, so a bad value fails before any model is called.
            last = self.plan.layers[-1].sampling.overlay(final_sampling, source="final_sampling")
        return RunContext.starting_now(self.plan.deadline_s, final_sampling=last,
                                       stream_tokens=stream_tokens, call=call_options(call))

    def _result(self, state: dict[str, Any], elapsed: float) -> AggregateResult:
        return build_result(
            state, width=self.width, depth=self.depth, preset=self.plan.template.name,
            elapsed_s=elapsed, strategy=self.plan.strategy,
            budget=self.plan.budget.model_dump() if self.plan.budget else None)

    async def _run(self, graph_input: Any, config: dict[str, Any],
                   context: RunContext) -> AggregateResult:
        t0 = time.perf_counter()
        with tracing.traced_run(self.plan.strategy, self.width, self.depth) as run:
            with tracing.current(run.span):  # the run's tasks start under its span
                state = await within(self.graph.ainvoke(graph_input, config, context=context),
                                     self._backstop(), self._timed_out)
            run.result = self._kept(self._result(state, time.perf_counter() - t0))
        return run.result

    def _kept(self, result: AggregateResult) -> AggregateResult:
        if self.recorder is not None:  # queued: the writer thread writes it
            self.recorder.add(result, model=self.config.name or "python",
                              config=graph_identity(self))
        return result

    def _backstop(self) -> float | None:
        # Branches stop at the deadline themselves (precise errors, survivors kept); this
        # outer guard, with a little grace, fires only if something else overruns.
        return None if self.plan.deadline_s is None else self.plan.deadline_s * 1.05 + 0.5

    def _timed_out(self) -> GraphTimeoutError:
        return GraphTimeoutError(f"the run passed its deadline of {self.plan.deadline_s}s; "
                                 "raise deadline_s or set layer_timeout_s so slow branches "
                                 "are dropped instead")

    async def ainvoke(
        self, messages: str | Sequence[Any], *, thread_id: str | None = None,
        final_sampling: SamplingConfig | Mapping[str, Any] | None = None, call: Any = None,
    ) -> AggregateResult:
        """Runs propose-and-aggregate on a question or a conversation.

        Args:
            messages: A question string or chat messages.
            thread_id: Checkpoint thread (needs a checkpointer) for a new run;
                ``resume`` continues it after a failure.
            final_sampling: Sampling fields for this run's last layer (the final
                aggregation), on top of the graph's own (for example a request's
                ``temperature`` and ``max_tokens``).
            call: Tools, ``tool_choice``, ``parallel_tool_calls`` and ``response_format``
                (:class:`~aft_sdk.tools.CallOptions` or a dict); see ``docs/how-to/structured-output.md``.

        Raises:
            ConfigError: Bad messages, or ``thread_id`` already holds a run.
            InsufficientProposalsError: Fewer than ``min_proposals`` proposals survived.
            GraphError: The final aggregation failed.
            GraphTimeoutError: The deadline passed.
        """
        config = self._config(thread_id)
        context = self._context(final_sampling=final_sampling, call=call)
        return await self._run(await fresh_input(self.graph, messages, config), config, context)

    def invoke(
        self, messages: str | Sequence[Any], *, thread_id: str | None = None,
        final_sampling: SamplingConfig | Mapping[str, Any] | None = None, call: Any = None,
    ) -> AggregateResult:
        """Blocking twin of :meth:`ainvoke`."""
        return run_sync(self.ainvoke(messages, thread_id=thread_id,
                                     final_sampling=final_sampling, call=call))

    async def aresume(self, thread_id: str, *, final_sampling: Any = None,
                      call: Any = None) -> AggregateResult:
        """Continues a failed or interrupted checkpointed run; finished branches are kept.
        Checkpoints hold no run settings: pass the run's ``final_sampling`` and ``call``."""
        if self.graph.checkpointer is None:
            raise ConfigError("resume needs a checkpointer: AggregateGraph(..., checkpointer=...)")
        config = self._config(thread_id)
        if not (await self.graph.aget_state(config)).values:
            raise ConfigError(f"no checkpoint for thread_id={thread_id!r}: nothing to resume")
        return await self._run(None, config, self._context(final_sampling=final_sampling,
                                                           call=call))

    def resume(self, thread_id: str, **settings: Any) -> AggregateResult:
        """Blocking twin of :meth:`aresume`."""
        return run_sync(self.aresume(thread_id, **settings))

    async def astream(
        self, messages: str | Sequence[Any], *, thread_id: str | None = None,
        final_sampling: SamplingConfig | Mapping[str, Any] | None = None, call: Any = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yields progress events, the final aggregation's tokens, then the result.

        Events are dicts: ``{"event": "layer", "layer", "ok", "failed"}`` once per layer
        as it finishes, ``{"event": "token", "text"}`` for each piece of the final
        answer, and last ``{"event": "result", "result": AggregateResult}``.

        Raises:
            GraphTimeoutError: The deadline passed (as in :meth:`ainvoke`).
        """
        t0 = time.perf_counter()
        config = self._config(thread_id)
        context = self._context(stream_tokens=True, final_sampling=final_sampling, call=call)
        state_in = await fresh_input(self.graph, messages, config)
        final: dict[str, Any] = {}
        backstop = self._backstop()
        deadline = None if backstop is None else time.monotonic() + backstop
        stream = self.graph.astream(state_in, config, context=context,
                                    stream_mode=["custom", "values"])
        streamed = False
        with tracing.traced_run(self.plan.strategy, self.width, self.depth) as run:
            try:
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        with tracing.current(run.span):  # the run's tasks start under it
                            mode, chunk = await within(stream.__anext__(), left,
                                                       self._timed_out)
                    except StopAsyncIteration:
                        break
                    if mode == "values":
                        final = chunk
                    else:
                        streamed = streamed or chunk.get("event") == "token"
                        yield chunk
            finally:
                await asyncio.shield(stream.aclose())
            result = run.result = self._kept(self._result(final, time.perf_counter() - t0))
        if self.plan.is_final_aggregation(self.depth):  # no gather node reports it
            last = result.layers[-1].usage
            yield {"event": "layer", "layer": self.depth, "ok": last.generations,
                   "failed": last.failures}
        if not streamed and result.answer:
            # Depth 0 and selecting presets have no token stream: the answer goes out
            # whole, so the streamed text is always the answer.
            yield {"event": "token", "layer": self.depth, "text": result.answer}
        yield {"event": "result", "result": result}

    def stream(
        self, messages: str | Sequence[Any], *, thread_id: str | None = None,
        final_sampling: SamplingConfig | Mapping[str, Any] | None = None, call: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """Blocking twin of :meth:`astream` (events arrive as they happen).

        Leaving the loop early, or Ctrl-C while waiting, cancels the run.
        """
        return iterate_sync(lambda: self.astream(messages, thread_id=thread_id,
                                                 final_sampling=final_sampling, call=call))

    async def abatch(
        self, inputs: Sequence[str | Sequence[Any]], *, max_concurrency: int = DEFAULT_CONCURRENCY,
        return_exceptions: bool = False,
    ) -> list[AggregateResult | BaseException]:
        """Runs many inputs with at most ``max_concurrency`` runs at once, in order.

        With ``return_exceptions=True`` an input whose run raised an :class:`AftError`
        gets that error in its place. Any other exception, or cancelling the call,
        cancels every run still in flight.
        """
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        sem = asyncio.Semaphore(max_concurrency)

        async def one(item: Any) -> AggregateResult | AftError:
            async with sem:
                try:
                    return await self.ainvoke(item)
                except AftError as e:
                    if return_exceptions:
                        return e
                    raise

        return await gather_all(one(i) for i in inputs)

    def batch(
        self, inputs: Sequence[str | Sequence[Any]], *, max_concurrency: int = DEFAULT_CONCURRENCY,
        return_exceptions: bool = False,
    ) -> list[AggregateResult | BaseException]:
        """Blocking twin of :meth:`abatch`."""
        return run_sync(self.abatch(inputs, max_concurrency=max_concurrency,
                                    return_exceptions=return_exceptions))

    def draw_mermaid(self) -> str:
        """Mermaid source of the compiled graph's topology."""
        return self.graph.get_graph().draw_mermaid()
