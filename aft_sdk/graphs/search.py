"""Step-level search over partial solutions, scored by a step scorer::

    START -> begin -> step -(again)-> step ... -> answer -> finish -> END

Each ``step`` node continues the kept paths by one step at once (every continuation a
request of its own, all concurrent), scores the new steps in one batch, and keeps the
paths its rule chooses (:class:`Rule`: beam search keeps the best, particle filtering
resamples). The search stops when every kept path has finished, at ``max_steps``, when
another step would pass the ``budget``, or at the deadline; ``answer`` then chooses
among the survivors: the best path score, a majority over their answers, or the
aggregator reading them as drafts (the same final layer every strategy uses: streaming,
structured output, timeouts).

Each step reports ``{"event": "step", "step", "ok", "failed", "kept"}`` to streams. The
trace is a tree: every step is a record of layer 0 whose ``slot`` is its node id,
``prompt`` says its ``parent`` and ``step``, and ``decision`` its ``score``,
``path_score``, whether it ``finished`` and how many copies were kept right after its
step (``kept``, 0: it did not survive it; the paths kept at the end are the answer's
``candidates``). A scorer's own model calls (a judge's) are layer-0 records too, with
``prompt: {"scorer": node, "step": k}``: usage, cost and the budget count them. The answer's record (layer 1) lists in its ``decision`` the ``candidates`` it chose from.
A step's record holds the step's own text; :func:`~aft_sdk.graphs.trace.drafts_of` gives
the survivors' whole texts (what training rows take as drafts).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime, get_runtime

from aft_sdk.aio import run_sync
from aft_sdk.answers import tally
from aft_sdk.backends.continuation import LENGTH, STEP, UNSURE
from aft_sdk.backends.pricing import cost_of
from aft_sdk.errors import (
    AftError, ConfigError, GraphError, GraphTimeoutError, InsufficientProposalsError)
from aft_sdk.graphs.context import RunContext, context_of
from aft_sdk.graphs.nodes import BranchInput, GraphInput, GraphOutput, GraphState, LayerBranch
from aft_sdk.graphs.nodes import begin, finish
from aft_sdk.graphs.plan import GraphPlan
from aft_sdk.graphs.rounds import _question
from aft_sdk.graphs.spend import MARGIN, framing
from aft_sdk.graphs.steps import checked, combine, make_scorer
from aft_sdk.graphs.strategies.base import Shape, Strategy
from aft_sdk.graphs.trace import OutputRecord, Usage, records_of
from aft_sdk.messages import normalize_messages


class SearchState(GraphState, total=False):
    """The graph state plus the search's own: the kept paths' node ids (``frontier``;
    a particle kept twice is there twice), the steps taken, and why the search stopped."""

    frontier: list[int]
    steps_done: int
    stopped: str


@dataclass
class Node:
    """One step of one path, read back from its record."""

    id: int
    parent: int | None
    step: int
    record: OutputRecord
    scores: list[float] = field(default_factory=list)  # the path's step scores so far
    finished: bool = False

    @property
    def path_score(self) -> float:
        return float((self.record.decision or {}).get("path_score", 0.0))


class Rule(Protocol):
    """What a search strategy decides: which kept paths each step extends, and which
    paths are kept after it."""

    name: str

    def parents(self, frontier: list[int], nodes: dict[int, Node], width: int,
                settings: Any) -> list[int | None]: ...

    def select(self, frontier: list[int], new: list[int], nodes: dict[int, Node], width: int,
               settings: Any, rng: random.Random) -> list[int]: ...


def nodes_of(state: Any) -> dict[int, Node]:
    """The tree so far (successful steps), by node id."""
    nodes: dict[int, Node] = {}
    for r in records_of(state, 0, ok=True):
        if "parent" not in r.prompt:  # a scorer's call (a judge's rating), not a step
            continue
        d = r.decision or {}
        nodes[r.slot] = Node(r.slot, r.prompt.get("parent"), int(r.prompt.get("step", 1)), r,
                             list(d.get("scores") or []), bool(d.get("finished")))
    return nodes


def steps_of(nodes: dict[int, Node], node: int | None) -> list[str]:
    """The steps of the path that ends at ``node``, first to last."""
    steps: list[str] = []
    while node is not None:
        steps.append(nodes[node].record.text)
        node = nodes[node].parent
    return steps[::-1]


class Search:
    """The nodes of one search graph (built once per plan; the scorer loads once)."""

    def __init__(self, plan: GraphPlan, rule: Rule) -> None:
        self.plan, self.rule, self.settings = plan, rule, plan.settings
        for backend in plan.layers[0].backends:  # refused now, never by restarting answers
            refused = backend.continuation_refused()
            if refused is not None:
                raise refused
        self.scorer = make_scorer(self.settings.scorer, self.settings,
                                  plan.layers[0].backend_for(0))
        self.done = re.compile(self.settings.done) if self.settings.done else None
        self.aggregates = self.settings.final == "aggregate"

    # -- nodes -------------------------------------------------------------------
    def runnable(self, name: str) -> RunnableLambda:
        coro = {"step": self.step, "answer": self.answer}[name]

        async def arun(state: Any) -> dict[str, Any]:
            return await coro(state, get_runtime())

        def run(state: Any) -> dict[str, Any]:
            return run_sync(coro(state, get_runtime()), contextvars.copy_context())

        return RunnableLambda(run, afunc=arun, name=name)

    def start(self, state: Any, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = context_of(runtime)
        if ctx.call is not None and ctx.call.wants_tools:
            raise ConfigError(
                f"strategy {self.plan.strategy} cannot carry tools (its paths are plain "
                "text, step by step): send tool requests to a graph of another strategy")
        return {**begin(state, runtime), "frontier": [], "steps_done": 0, "stopped": ""}

    async def step(self, state: Any, runtime: Runtime[RunContext]) -> dict[str, Any]:
        s, plan = self.settings, self.plan
        ctx = context_of(runtime, plan.deadline_s, state.get("started_at"))
        nodes, frontier = nodes_of(state), list(state.get("frontier") or [])
        k = int(state.get("steps_done") or 0) + 1
        parents = self.rule.parents(frontier, nodes, plan.width, s)
        first = 1 + max((r.slot for r in records_of(state, 0)), default=-1)
        ids = list(range(first, first + len(parents)))
        messages = normalize_messages(state["messages"])
        results = await asyncio.gather(*(self._continue(ctx, messages, nodes, p, i)
                                         for p, i in zip(parents, ids)))
        made = {i: (p, g) for i, p, (g, _) in zip(ids, parents, results) if g is not None}
        scored, calls = await self._scores(_question(state), nodes, made, ctx, k)
        for i, (p, g) in made.items():
            record = OutputRecord.of(0, i, g, decision={"path_score": combine(scored[i], s.combine)})
            nodes[i] = Node(i, p, k, record, scored[i], self._ends(g))
        rng = random.Random(f"{plan.shuffle_seed}:{self.rule.name}:{k}")
        kept = self.rule.select(frontier, list(made), nodes, plan.width, s, rng) if made \
            else frontier
        out = []
        for i, p in zip(ids, parents):
            g, error = results[ids.index(i)]
            if g is None:
                out.append(OutputRecord.failed(0, i, plan.layers[0].backend_for(i).label, error,
                                               0.0).model_copy(update={"prompt": {"parent": p,
                                                                                  "step": k}}))
                continue
            n = nodes[i]
            out.append(OutputRecord.of(0, i, g, {"parent": p, "step": k}, cost_usd=cost_of(
                plan.layers[0].backend_for(i), g), decision={
                    "rule": self.rule.name, "score": n.scores[-1], "scores": n.scores,
                    "path_score": n.path_score, "finished": n.finished, "kept": kept.count(i)}))
        # The scorer's own model calls (a judge's ratings) are records too: usage, cost and
        # the budget count them. Their slots follow the step's.
        judge = getattr(self.scorer, "backend", None)
        out += [OutputRecord.of(0, ids[-1] + 1 + j, g, {"scorer": i, "step": k},
                                cost_usd=cost_of(judge, g) if judge is not None else None)
                for j, (i, g) in enumerate(calls)]
        get_stream_writer()({"event": "step", "step": k, "ok": len(made),
                             "failed": len(ids) - len(made), "kept": len(set(kept))})
        update = {"outputs": [r.model_dump() for r in out], "frontier": kept, "steps_done": k}
        errors = [e for g, e in results if g is None]
        failed = "" if made or not ids else "deadline" if all(
            isinstance(e, GraphTimeoutError) for e in errors) else "failed"
        return {**update, "stopped": failed or self._stop(state, out, kept, nodes, k, ctx)}

    async def _continue(self, ctx: RunContext, messages: list[dict[str, Any]],
                        nodes: dict[int, Node], parent: int | None, node: int,
                        ) -> tuple[Any, AftError | None]:
        s, layer = self.settings, self.plan.layers[0]
        steps = steps_of(nodes, parent)
        prefix = "".join(x + s.separator for x in steps)
        # Without an aggregation the steps write the answer: a run's own sampling (a
        # served request's temperature, seed, stop) applies to them, as to a last layer.
        base = ctx.final_sampling if self.plan.depth == 0 and ctx.final_sampling else \
            layer.sampling
        seed = base.seed
        sampling = base.model_copy(update={
            "max_tokens": s.step_max_tokens, "seed": None if seed is None else seed + node})
        limits = [t for t in (self.plan.layer_timeout_s, ctx.time_left()) if t is not None]
        backend = layer.backend_for(node)
        try:
            async with asyncio.timeout(min(limits) if limits else None):
                (gen,) = await backend.continue_text(messages, prefix, separator=s.separator,
                                                     sampling=sampling)
            return gen, None
        except AftError as e:
            return None, e
        except TimeoutError:
            return None, GraphTimeoutError(f"{backend.label} gave no step within the layer "
                                           "timeout/deadline")

    def _ends(self, gen: Any) -> bool:
        """Whether the step ends its path: the model's end of answer, an empty step where
        the server did not say which stop it hit, or the ``done`` pattern."""
        if self.done is not None and self.done.search(gen.text):
            return True
        if gen.finish_reason == UNSURE:
            return not gen.text.strip()
        return gen.finish_reason not in (STEP, LENGTH)

    async def _scores(self, question: str, nodes: dict[int, Node],
                      made: dict[int, tuple[int | None, Any]], ctx: RunContext, k: int,
                      ) -> tuple[dict[int, list[float]], list[tuple[int, Any]]]:
        """Each new step's path scores, from one batched call of the scorer, and the
        model calls the scorer made (by step node)."""
        if not made:
            return {}, []
        paths = [[*steps_of(nodes, p), g.text] for p, g in made.values()]
        rated = getattr(self.scorer, "score_with_calls", None)
        try:
            async with asyncio.timeout(ctx.time_left()):
                if rated is not None:
                    values, gens = await rated(question, paths)
                else:
                    values, gens = await self.scorer.score(question, paths), []
        except TimeoutError:
            raise GraphTimeoutError(f"the run passed its deadline while step {k} was scored; "
                                    "with a checkpointer, resume(thread_id) goes on") from None
        except AftError as e:
            raise GraphError(f"the step scorer {self.settings.scorer} failed on step {k}: {e}. "
                             "With a checkpointer the earlier steps are kept: resume(thread_id)"
                             ) from e
        if len(values) != len(paths):
            raise GraphError(f"the step scorer {self.settings.scorer} returned {len(values)} "
                             f"scores for {len(paths)} paths")
        out = {}
        for (i, (p, _)), v, path in zip(made.items(), values, paths):
            v = checked(v, len(path), self.settings.scorer)
            out[i] = v if isinstance(v, list) else [*(nodes[p].scores if p is not None else []), v]
        return out, [(i, g) for i, g in zip(made, gens) if g is not None]

    def _stop(self, state: Any, new: list[OutputRecord], kept: list[int],
              nodes: dict[int, Node], k: int, ctx: RunContext) -> str:
        """Why the search stops after step ``k`` ('' if it goes on)."""
        if not kept:
            return "no-paths"
        if all(nodes[i].finished for i in kept):
            return "finished"
        if k >= self.settings.max_steps:
            return "max_steps"
        if ctx.time_left() == 0.0:
            return "deadline"
        return "" if self._fits(state, new, kept, nodes) else "budget"

    def _fits(self, state: Any, new: list[OutputRecord], kept: list[int],
              nodes: dict[int, Node]) -> bool:
        """Whether one more step (and the final aggregation) stays within the budget."""
        budget = self.plan.budget
        if budget is None:
            return True
        records = [*records_of(state, 0), *new]
        more = len(self.rule.parents(kept, nodes, self.plan.width, self.settings))
        if hasattr(self.scorer, "score_with_calls"):  # a judge rates each new step
            more *= 2
        final = int(self.aggregates)
        spent = Usage.of(records)
        if budget.generations is not None and spent.generations + more + final > budget.generations:
            return False
        steps = [r for r in records if r.ok and "parent" in r.prompt]
        latest = [r for r in new if r.ok] or steps
        # A next call: as the dearest of the latest step, its prompt one step longer.
        per = max((r.prompt_tokens + 2 * r.completion_tokens for r in latest), default=0)
        need = more * per
        if final and steps:  # the aggregation: the conversation, its template, every path
            firsts = [r for r in steps if r.prompt["step"] == 1] or steps
            asked = sum(r.prompt_tokens for r in firsts) / len(firsts)
            messages = normalize_messages(state["messages"])
            paths = sum(sum(nodes[x].record.completion_tokens for x in _chain(nodes, i))
                        for i in set(kept))
            answer = max(r.completion_tokens for r in steps)
            need += asked + framing(self.plan, messages, 1, 0, len(set(kept)), asked) + \
                paths + answer
        need *= MARGIN
        if budget.tokens is not None and spent.total_tokens + need > budget.tokens:
            return False
        if budget.usd is None:
            return True
        # Dollars: each call as dear as the dearest so far; the aggregation as that
        # times the paths it reads (its prompt holds them all).
        dearest = max((r.cost_usd or 0.0 for r in records if r.ok), default=0.0)
        usd = MARGIN * dearest * (more + final * (len(set(kept)) + 1))
        return spent.cost_usd + usd <= budget.usd

    def route(self, state: Any) -> str:
        return "answer" if state.get("stopped") else "step"

    async def answer(self, state: Any, runtime: Runtime[RunContext]) -> dict[str, Any]:
        nodes, sep = nodes_of(state), self.settings.separator
        frontier = sorted(state.get("frontier") or [], key=lambda i: (-nodes[i].path_score, i))
        if not frontier:
            failed = [r for r in records_of(state, 0, ok=False)]
            details = "; ".join(f"node {r.slot}: {(r.error or {}).get('message')}"
                                for r in failed[:3])
            raise InsufficientProposalsError(
                f"no path of the search survived ({len(failed)} steps failed). {details}",
                layer=0, failures=[{"slot": r.slot, **(r.error or {})} for r in failed])
        ids = list(dict.fromkeys(frontier))
        texts = {i: sep.join(steps_of(nodes, i)) for i in ids}
        about = {"candidates": ids, "separator": sep, "stopped": state.get("stopped"),
                 "path_scores": [nodes[i].path_score for i in ids]}
        if self.aggregates:
            payload = BranchInput(messages=normalize_messages(state["messages"]), layer=1,
                                  slots=[0], started_at=state.get("started_at"), inputs=[
                                      {"text": texts[i], "model": nodes[i].record.model, "slot": i}
                                      for i in ids])
            made = await LayerBranch(self.plan, 1).run(payload, runtime)
            for r in made["outputs"]:
                r["decision"] = {**(r.get("decision") or {}), **about}
            return made
        if self.settings.final == "best":
            pick, decision = ids[0], {"rule": "best-path"}
        else:  # a majority over the kept paths (a particle kept twice votes twice)
            votes = tally([texts[i] for i in frontier], self.plan.extractor)
            pick = frontier[votes.winner]
            decision = {"rule": "majority", "extractor": self.plan.extractor_name,
                        **votes.record()}
        whole = nodes[pick].record.model_copy(update={"text": texts[pick], "slot": pick})
        record = OutputRecord.chosen(1, whole, {**decision, **about})
        return {"outputs": [record.model_dump()]}


def _chain(nodes: dict[int, Node], node: int | None) -> list[int]:
    chain = []
    while node is not None:
        chain.append(node)
        node = nodes[node].parent
    return chain


def build(plan: GraphPlan, rule: Rule) -> StateGraph:
    """The uncompiled search graph of ``plan`` with ``rule``."""
    search = Search(plan, rule)
    g = StateGraph(SearchState, context_schema=RunContext, input_schema=GraphInput,
                   output_schema=GraphOutput)
    g.add_node("begin", search.start)
    g.add_node("step", search.runnable("step"))
    g.add_node("answer", search.runnable("answer"))
    g.add_node("finish", finish)
    g.add_edge(START, "begin")
    g.add_edge("begin", "step")
    g.add_conditional_edges("step", search.route, ["step", "answer"])
    g.add_edge("answer", "finish")
    g.add_edge("finish", END)
    return g


class SearchStrategy(Strategy):
    """What every step-level search strategy shares: no adaptive rounds, no quorum, depth
    0 or 1, its answer's shape from ``final``, and this module's graph with itself as the
    :class:`Rule` (a subclass writes ``parents``, ``select`` and ``cost``)."""

    adaptive = False
    max_depth = 1

    def check(self, cfg: Any, own: Any) -> None:
        super().check(cfg, own)
        if cfg.quorum is not None:
            raise ValueError(f"quorum does not apply to strategy {self.name} (each step waits "
                             "for every continuation): leave quorum unset")

    def shape(self, cfg: Any, own: Any) -> Shape:
        """One aggregation of the kept paths, or a pick (no model call)."""
        return Shape(1, "aggregate") if own.final == "aggregate" else Shape(0, "vote")

    def build(self, plan: GraphPlan) -> StateGraph:
        return build(plan, self)  # type: ignore[arg-type]
