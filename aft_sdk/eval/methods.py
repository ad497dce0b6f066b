"""Test-time compute methods to compare, each a graph shape plus a final pick.

- ``single``: one sample.
- ``self_consistency`` (n): n samples, majority vote over extracted answers.
- ``best_of_n`` (n): n samples, a judge picks one (``select-v1`` preset), or a
  ``verifier(item, text) -> float`` does.
- ``propose_aggregate`` (width x depth): the AFT method.

Every run's token cost comes from its trace, judges and aggregators included.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aft_sdk.config import GraphConfig, validate
from aft_sdk.errors import ConfigError
from aft_sdk.graphs import AggregateGraph, AggregateResult


@dataclass
class MethodRun:
    """What one method produced for one item."""

    answer: str
    tokens: int
    generations: int
    detail: dict[str, Any] = field(default_factory=dict)
    #: Dollars of the run (``None``: some call's price is unknown).
    cost_usd: float | None = None
    #: The run's whole result (``AggregateResult`` as JSON), for ``aft view``.
    result: dict[str, Any] | None = None


@dataclass
class Method:
    """One row of the comparison table.

    Attributes:
        name: Label in tables and plots (unique within an evaluation).
        kind: ``single``, ``self_consistency``, ``best_of_n``, ``propose_aggregate``, or
            ``graph``: any strategy from a graph config (``graph_kwargs={"config": ...}``,
            a ``GraphConfig``, dict or YAML path); its answer is the graph's.
        width: Samples (proposals).
        depth: Aggregation layers (``propose_aggregate``), else 0.
        proposers: Backend(s) that sample.
        aggregator: Backend that aggregates or judges.
        preset: Aggregation prompt preset for ``propose_aggregate`` (``None``: the
            aggregator's trained prompt, else ``aft-v1``).
        graph_kwargs: More ``AggregateGraph`` arguments (sampling, shuffle, ...).
        verifier: For ``best_of_n`` without a judge: scores a candidate.
    """

    name: str
    kind: str
    width: int = 1
    depth: int = 0
    proposers: Any = None
    aggregator: Any = None
    preset: str | None = None
    graph_kwargs: dict[str, Any] = field(default_factory=dict)
    verifier: Callable[[dict[str, Any], str], float] | None = None
    _graph: AggregateGraph | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        kinds = ("single", "self_consistency", "best_of_n", "propose_aggregate", "graph")
        if self.kind not in kinds:
            raise ConfigError(f"method kind must be one of {kinds}, got {self.kind!r}")
        if self.kind == "single":
            self.width, self.depth = 1, 0
        if self.kind == "self_consistency":
            self.depth = 0
        if self.kind == "best_of_n":
            self.depth = 0 if self.verifier else 1
        if self.kind == "propose_aggregate" and self.depth < 1:
            raise ConfigError(f"{self.name}: propose_aggregate needs depth >= 1")

    @property
    def graph(self) -> AggregateGraph:
        if self._graph is None and self.kind == "graph":  # any strategy, from its config
            self._graph = AggregateGraph.from_config(
                self.graph_kwargs["config"], proposers=self.proposers, aggregator=self.aggregator)
        if self._graph is None:
            preset = "select-v1" if self.kind == "best_of_n" else self.preset
            self._graph = AggregateGraph(self.proposers, self.aggregator, width=self.width,
                                         depth=self.depth, preset=preset, **self.graph_kwargs)
        return self._graph

    async def run(self, task: Any, item: dict[str, Any], runs: Any = None) -> MethodRun:
        """Runs the method on one item and returns its answer and cost (on ``runs``, the
        graph bound to an executor, when given)."""
        messages = task.prompt(item)
        result: AggregateResult = await (runs.run(messages) if runs is not None
                                         else self.graph.ainvoke(messages))
        answer, detail = result.answer, {}
        if self.kind == "self_consistency":
            answer, detail = majority(result.proposals, task.answer_key)
        elif self.kind == "best_of_n" and self.verifier is not None:
            scores = [self.verifier(item, p) for p in result.proposals]
            best = max(range(len(scores)), key=scores.__getitem__)
            answer, detail = result.proposals[best], {"verifier_scores": scores}
        usage = result.usage
        return MethodRun(answer=answer, tokens=usage.total_tokens, generations=usage.generations,
                         detail={**detail, "failures": usage.failures},
                         cost_usd=usage.known_cost_usd,
                         result=result.model_dump(mode="json"))


def majority(texts: list[str], key: Callable[[str], str | None]) -> tuple[str, dict[str, Any]]:
    """The first text whose extracted answer is the most common one.

    Texts without an extractable answer do not vote; if none has one, the first text wins.
    """
    keys = [key(t) for t in texts]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return texts[0], {"votes": {}}
    top, _ = votes.most_common(1)[0]
    return texts[keys.index(top)], {"votes": dict(votes), "majority": top}


def parse_method(spec: str, *, proposers: Any = None, aggregator: Any = None,
                 **graph_kwargs: Any) -> Method:
    """A method from a short spec: ``single``, ``sc:N``, ``bon:N``, ``pa:WIDTHxDEPTH``, or
    ``config:PATH`` (a graph YAML: any strategy)."""
    common = dict(proposers=proposers, aggregator=aggregator, graph_kwargs=graph_kwargs)
    if spec == "single":
        return Method("single", "single", **common)
    if spec.startswith("config:"):
        from aft_sdk.config import load_yaml

        cfg = load_yaml(spec[len("config:"):], GraphConfig).with_changes(**graph_kwargs)
        return Method(spec, "graph", width=cfg.width, depth=cfg.depth, proposers=proposers,
                      aggregator=aggregator, graph_kwargs={"config": cfg})
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ConfigError(f"bad method spec {spec!r}: {METHOD_FORMS}")
    kind, width, depth = match["kind"], int(match["width"]), int(match["depth"] or 1)
    try:  # the graph's own bounds, checked now rather than failing on every item
        validate(GraphConfig, {"width": width, "depth": depth}, source=f"method {spec!r}")
    except ConfigError as e:
        raise ConfigError(f"bad method spec {spec!r}: {e}; {METHOD_FORMS}") from e
    if kind == "pa":
        return Method(f"pa:{width}x{depth}", "propose_aggregate", width=width, depth=depth,
                      **common)
    if match["depth"]:
        raise ConfigError(f"bad method spec {spec!r}: {kind}:N takes no depth; {METHOD_FORMS}")
    name = "self_consistency" if kind == "sc" else "best_of_n"
    return Method(f"{kind}:{width}", name, width=width, **common)


#: What ``parse_method`` accepts, for error messages and ``--help``.
METHOD_FORMS = ("use single, sc:N (self-consistency over N samples), bon:N (a judge picks "
                "one of N), pa:W or pa:WxD (width W, depth D), with N, W, D >= 1, or "
                "config:PATH (a graph YAML, any strategy)")
_SPEC = re.compile(r"(?P<kind>sc|bon|pa):(?P<width>\d+)(?:x(?P<depth>\d+))?")
