"""The graph's nodes: layer branches, the gather barrier after each layer, and routers.

Topology for depth ``D``::

    START -> begin -(Send per request)-> propose -> gather_0 -(Send)-> aggregate_1
          -> gather_1 -> ... -(Send)-> aggregate_D -> finish -> END

Each branch writes plain-dict records into ``outputs`` (merged by list concatenation).
A failed branch writes a failure record instead of raising, so the other branches'
work is kept; the gather node decides whether enough survived to go on. The final
aggregation has nothing to fall back on, so it raises; with a checkpointer a retry
then resumes from the finished layers.
"""

from __future__ import annotations

import asyncio
import contextvars
import operator
import random
import time
from typing import Annotated, Any

# typing_extensions' TypedDict: pydantic (and so LangGraph Server's schema endpoint, which
# Studio reads) cannot build schemas from typing.TypedDict before Python 3.12.
from typing_extensions import TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableLambda
from langgraph.config import get_config, get_stream_writer
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import Overwrite, Send

from aft_sdk import tracing
from aft_sdk.aio import run_sync
from aft_sdk.backends.base import Generation
from aft_sdk.backends.pricing import cost_of
from aft_sdk.errors import (
    AftError,
    ConfigError,
    GraphError,
    GraphTimeoutError,
    InsufficientProposalsError,
    PartialGenerationError,
    QuorumReachedError,
    StructuredOutputError,
)
from aft_sdk.graphs.chat_shim import final_call
from aft_sdk.graphs.context import RunContext, context_of
from aft_sdk.graphs.plan import GraphPlan
from aft_sdk.graphs.rounds import more_rounds
from aft_sdk.graphs.tool_calls import layer_options, needs_check
from aft_sdk.graphs.trace import ANSWER_NAME, OutputRecord, final_record, records_of
from aft_sdk.messages import normalize_messages
from aft_sdk.prompts import parse_selection
from aft_sdk.tools import CallOptions, check_structured, langchain_call


class GraphState(TypedDict, total=False):
    """Graph state, in LangGraph's conventions so the compiled graph nests as a node.

    Attributes:
        messages: The conversation (``add_messages`` reducer, as ``MessagesState``);
            the final answer is appended as an assistant message.
        outputs: Every output record so far, the run's trace (merged by concatenation).
        answer: The final answer's text.
        started_at: When the run began (``time.time()``, set by ``begin``): the clock of
            a deadline that the run's context does not carry, however the compiled graph
            is run (directly, as a subgraph, resumed from a checkpoint).
    """

    messages: Annotated[list[AnyMessage], add_messages]
    outputs: Annotated[list[dict[str, Any]], operator.add]
    answer: str
    started_at: float


class GraphOutput(TypedDict, total=False):
    """What a run returns (the public output schema): the state without its clock."""

    messages: Annotated[list[AnyMessage], add_messages]
    outputs: Annotated[list[dict[str, Any]], operator.add]
    answer: str


class GraphInput(TypedDict):
    """What a run takes (the graph's public input schema): the conversation."""

    messages: Annotated[list[AnyMessage], add_messages]


class BranchInput(TypedDict):
    """What one Send branch receives: the slots it fills and the previous layer."""

    messages: list[dict[str, Any]]
    layer: int
    slots: list[int]
    inputs: list[dict[str, Any]]
    started_at: float | None


def node_name(layer: int) -> str:
    """Name of the branch node of ``layer`` (0 = proposals)."""
    return "propose" if layer == 0 else f"aggregate_{layer}"


class LayerBranch:
    """Runs one request of one layer: generates for its slots, records the outcome."""

    def __init__(self, plan: GraphPlan, layer: int) -> None:
        self.plan = plan
        self.layer = layer
        # The final aggregation has no fallback; a propose-only run (depth 0) keeps
        # the usual per-slot tolerance.
        self.final = plan.is_final_aggregation(layer)

    def _timeout(self, ctx: RunContext) -> float | None:
        limits = [t for t in (self.plan.layer_timeout_s, ctx.time_left()) if t is not None]
        return min(limits) if limits else None

    def runnable(self) -> RunnableLambda:
        """The node in both forms, so ``graph.invoke`` works as well as ``ainvoke``: the
        sync form runs the same coroutine on aft-sdk's loop thread, in the caller's
        context (LangGraph's config, stream writer and runtime)."""
        async def arun(payload: BranchInput) -> dict[str, Any]:
            return await self.run(payload, get_runtime())

        def run(payload: BranchInput) -> dict[str, Any]:
            return run_sync(self.run(payload, get_runtime()), contextvars.copy_context())

        return RunnableLambda(run, afunc=arun, name=node_name(self.layer))

    async def run(self, payload: BranchInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = context_of(runtime, self.plan.deadline_s, payload.get("started_at"))
        if self.plan.quorum_for(self.layer) and len(payload["slots"]) > 1:
            records = await self._quorum(payload, ctx)
        else:
            records = await self._records(payload, ctx)
        return {"outputs": [r.model_dump() for r in records]}

    async def _quorum(self, payload: BranchInput, ctx: RunContext) -> list[OutputRecord]:
        """Every slot as its own request; once ``quorum`` have succeeded the rest are
        cancelled (their requests aborted) and recorded as not needed."""
        need = self.plan.quorum or 0
        tasks = [asyncio.ensure_future(self._records({**payload, "slots": [s]}, ctx))
                 for s in payload["slots"]]
        records: list[OutputRecord] = []
        try:
            for next_done in asyncio.as_completed(tasks):
                records += await next_done
                if sum(r.ok for r in records) >= need:
                    break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        done = {r.slot for r in records}
        lp = self.plan.layers[self.layer]
        reached = QuorumReachedError(f"cancelled: {need} of {len(tasks)} outputs of layer "
                                     f"{self.layer} were in (quorum)")
        return records + [OutputRecord.failed(self.layer, s, lp.backend_for(s).label, reached, 0.0)
                          for s in payload["slots"] if s not in done]

    async def _records(self, payload: BranchInput, ctx: RunContext) -> list[OutputRecord]:
        lp = self.plan.layers[self.layer]
        slots = payload["slots"]
        backend = lp.backend_for(slots[0])
        messages, info = payload["messages"], {}
        if self.layer > 0:
            # Counting tokens to fit the window can be slow (or wait on an engine): keep
            # it off the event loop so other branches and timeouts keep running.
            messages, info = await asyncio.to_thread(
                self.plan.aggregation_prompt, payload["messages"], payload["inputs"],
                self.layer, slots[0],
            )
        if not backend.keeps_developer and any(m["role"] == "developer" for m in messages):
            info = {**info, "developer_as": "system"}  # the backend's view, in the trace
        sampling = lp.sampling
        if self.layer == self.plan.depth and ctx.final_sampling is not None:
            sampling = ctx.final_sampling
        if sampling.seed is not None and slots[0]:
            # Requests of one layer must not share a seed (identical samples otherwise);
            # within a request the backend offsets by output index, so slot s of a layer
            # uses seed + s either way.
            sampling = sampling.model_copy(update={"seed": sampling.seed + slots[0]})
        options = layer_options(self.plan, ctx.call, self.layer, payload["messages"])
        t0 = time.perf_counter()
        message_id = None
        tries = 1 + (self.plan.structured.retries if self.final and options is not None
                     and options.json_mode and not self.plan.template.selects else 0)
        try:
            backend.check_options(options)
            for attempt in range(tries):
                async with asyncio.timeout(self._timeout(ctx)):
                    gens, message_id = await self._traced(
                        backend, messages, slots, sampling, ctx.stream_tokens, options)
                if not self.final or self.plan.template.selects or \
                        not needs_check(options, gens[0]):
                    break  # a judge's pick is checked in finish, once it is a draft
                try:
                    check_structured(gens[0].text, options.schema)  # type: ignore[union-attr]
                    break
                except StructuredOutputError as e:
                    if attempt == tries - 1:
                        raise StructuredOutputError(
                            f"{e} (after {tries} tries of the final layer; structured."
                            "retries sets how many)", field=e.field) from e
                    info = {**info, "structured_retries": attempt + 1}
            error: AftError | None = None
        except StructuredOutputError:
            raise
        except PartialGenerationError as e:  # keep what came back; the rest failed
            gens, error = list(e.generations), e
        except (AftError, TimeoutError) as e:
            gens, error = [], e
            if isinstance(e, TimeoutError):
                error = GraphTimeoutError(
                    f"{backend.label} gave no answer within the layer timeout/deadline"
                )
        if error is not None and self.final:
            kind = GraphTimeoutError if isinstance(error, GraphTimeoutError) else GraphError
            raise kind(
                f"the final aggregation on {backend.label} failed: {error}. Earlier layers "
                "are kept when the graph has a checkpointer: resume(thread_id) retries "
                "only this step (on LangGraph Server: a new run on the same thread with "
                "input null)"
            ) from error
        decisions: list[dict[str, Any] | None] = [None] * len(gens)
        if self.plan.template.selects and self.layer > 0:
            picks = [self._selected(g, payload["inputs"], info) for g in gens]
            gens, decisions = [g for g, _ in picks], [d for _, d in picks]
        records = [OutputRecord.of(self.layer, s, g, info, message_id=message_id, decision=d,
                                   cost_usd=cost_of(backend, g))
                   for s, g, d in zip(slots, gens, decisions)]
        elapsed = time.perf_counter() - t0
        records += [OutputRecord.failed(self.layer, s, backend.label, error, elapsed)
                    for s in slots[len(gens):]]
        return records

    async def _traced(self, backend: Any, messages: list[dict[str, Any]], slots: list[int],
                      sampling: Any, stream_tokens: bool, options: CallOptions | None,
                      ) -> tuple[list[Generation], str | None]:
        """:meth:`_generate` inside its ``chat`` span (:mod:`aft_sdk.tracing`)."""
        with tracing.generation_span(backend.label, str(getattr(backend, "model", "") or ""),
                                     self.layer, slots, sampling, messages) as span:
            try:
                gens, message_id = await self._generate(
                    backend, messages, len(slots), sampling, stream_tokens, options)
            except BaseException as e:
                tracing.record(span, getattr(e, "generations", None) or (), e)
                raise
            # Priced for the span only where it records (the records price their own).
            costs = [cost_of(backend, g) for g in gens] if span.is_recording() else []
            tracing.record(span, gens, costs=costs)
            return gens, message_id

    async def _generate(
        self, backend: Any, messages: list[dict[str, str]], n: int, sampling: Any,
        stream_tokens: bool, options: CallOptions | None = None,
    ) -> tuple[list[Generation], str | None]:
        """The generations, and the id of the message LangGraph streamed (answer only)."""
        # A selecting preset's raw output is an index, not the answer: it is not
        # streamed (the caller sends the chosen draft once it is known); nor is a JSON
        # answer, which may fail its schema and be tried again.
        if not self.final or self.plan.template.selects or (
                options is not None and options.json_mode):
            kw = {} if options is None else {"options": options}
            return await backend.generate(messages, n=n, sampling=sampling, **kw), None
        # The answer's own call goes through LangChain, so LangGraph's messages mode
        # streams its tokens; custom token events when the run asked for them.
        write = get_stream_writer() if stream_tokens else None
        on_token = None if write is None else (
            lambda piece: write({"event": "token", "layer": self.layer, "text": piece}))
        gen, message_id = await final_call(backend, messages, sampling, get_config(), on_token,
                                           options)
        return [gen], message_id

    @staticmethod
    def _selected(gen: Generation, inputs: list[dict[str, Any]], info: dict[str, Any]
                  ) -> tuple[Generation, dict[str, Any]]:
        """A selecting preset answers with a number; the output is the chosen proposal,
        and the judge's raw answer and pick are its decision."""
        order = info.get("order", list(range(len(inputs))))
        pick = parse_selection(gen.text, len(order))
        decision = {"selection": {"raw": gen.text, "picked": None if pick is None else order[pick]}}
        if pick is None:
            return gen, decision
        return gen.model_copy(update={"text": inputs[order[pick]]["text"]}), decision


class Gather:
    """Barrier after a layer: checks survivors and reports progress."""

    def __init__(self, plan: GraphPlan, layer: int) -> None:
        self.plan = plan
        self.layer = layer

    def runnable(self) -> RunnableLambda:
        """Both forms, like the branches. The async one writes its progress event on the
        loop itself: written from an executor thread (a sync node in an async run), the
        event could be lost under load."""
        async def arun(state: GraphState) -> dict[str, Any]:
            return self.run(state)

        return RunnableLambda(self.run, afunc=arun, name=f"gather_{self.layer}")

    def run(self, state: GraphState) -> dict[str, Any]:
        mine = records_of(state, self.layer)
        if self.layer == 0 and len(mine) < self.plan.layers[0].width and \
                more_rounds(self.plan, state):
            return {}  # another round of drafts follows: judge survivors after it
        ok = [r for r in mine if r.ok]
        failed = [r for r in mine if not r.ok]
        need = self.plan.min_proposals if self.layer == 0 else 1
        get_stream_writer()(
            {"event": "layer", "layer": self.layer, "ok": len(ok), "failed": len(failed)}
        )
        if len(ok) < need:
            what = "proposals" if self.layer == 0 else f"outputs in layer {self.layer}"
            details = "; ".join(
                f"slot {r.slot} on {r.backend}: {(r.error or {}).get('type')}: "
                f"{(r.error or {}).get('message')}"
                for r in failed
            )
            raise InsufficientProposalsError(
                f"only {len(ok)} of {len(mine)} {what} succeeded, {need} needed. "
                f"Failures: {details}",
                layer=self.layer,
                failures=[{"slot": r.slot, "backend": r.backend, **(r.error or {})} for r in failed],
            )
        return {}


class Router:
    """Conditional edge that fans a layer out into Send branches."""

    def __init__(self, plan: GraphPlan, layer: int) -> None:
        self.plan = plan
        self.layer = layer

    def route(self, state: GraphState, slots: range | None = None) -> list[Send]:
        """Sends for the layer's slots (default: all; a round of drafts: some)."""
        if self.layer == 0 and slots is None:
            slots = range(self.plan.round_size())
        inputs = [r.as_input() for r in records_of(state, self.layer - 1, ok=True)]
        target = node_name(self.layer)
        messages = normalize_messages(state["messages"])
        return [
            Send(target, BranchInput(messages=messages, layer=self.layer, slots=group,
                                     inputs=self._read(inputs, group[0]),
                                     started_at=state.get("started_at")))
            for group in self.plan.groups(self.layer, slots)
        ]

    def _read(self, inputs: list[dict[str, Any]], slot: int) -> list[dict[str, Any]]:
        if not self.plan.reads_subset(self.layer) or len(inputs) <= (self.plan.subset or 0):
            return inputs
        # RSA: each slot reads its own seeded random subset of the previous population.
        rng = random.Random(f"{self.plan.shuffle_seed}:rsa:{self.layer}:{slot}")
        picked = sorted(rng.sample(range(len(inputs)), self.plan.subset or 0))
        return [inputs[i] for i in picked]


def begin(state: GraphState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """First node: a new run starts with no records, even on a thread that had runs
    (LangGraph Server threads, a parent graph's checkpointed subgraph); the run's clock
    starts here for a deadline its context does not carry."""
    if not state.get("messages"):
        raise ConfigError("the input has no messages: send {'messages': [{'role': 'user', "
                          "'content': 'your question'}]}")
    return {"outputs": Overwrite([]), "answer": "", "started_at": time.time()}


def finish(state: GraphState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Last node: the answer goes into state and, as an assistant message, the chat (with
    its tool calls). An answer under a JSON schema is checked here too (a vote's pick)."""
    record = final_record(records_of(state))
    answer = record.text if record else ""
    calls = (record.tool_calls if record else None) or []
    options = context_of(runtime).call
    if record and needs_check(options, record):
        check_structured(answer, options.schema)  # type: ignore[union-attr]
    # The id of the message LangGraph already streamed, so messages mode shows it once.
    message_id = record.message_id if record else None
    return {"answer": answer,
            "messages": [AIMessage(content=answer, name=ANSWER_NAME, id=message_id,
                                   tool_calls=[langchain_call(c) for c in calls])]}
