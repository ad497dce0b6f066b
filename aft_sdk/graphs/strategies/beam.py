"""``beam``: beam search over steps, guided by a step scorer.

The first step makes ``width * beam.expansions`` openings from the question; every later
step extends each kept, unfinished path ``expansions`` times; the ``width`` best paths
by path score are kept (finished paths compete too, and are carried, not extended).
Stops when every kept path has finished or at ``beam.max_steps``; the answer comes from
the kept paths by ``beam.final`` (default: the aggregator reads them as drafts).

    >>> from aft_sdk import GraphConfig
    >>> GraphConfig(strategy="beam", width=2, beam={"expansions": 2, "max_steps": 3}).cost()
    Cost(least=5, most=13)
"""

from __future__ import annotations

import random
from typing import Any

from aft_sdk.graphs.search import Node, build
from aft_sdk.graphs.strategies.base import Cost, Shape, Strategy
from aft_sdk.search_config import BeamConfig


class Beam(Strategy):
    name = "beam"
    summary = "beam search over steps by a step scorer; the kept paths aggregated or picked"
    settings = BeamConfig
    adaptive = False
    max_depth = 1

    def check(self, cfg: Any, own: Any) -> None:
        super().check(cfg, own)
        check_search(self.name, cfg)

    def shape(self, cfg: Any, own: Any) -> Shape:
        return search_shape(own)

    def cost(self, cfg: Any, own: BeamConfig) -> Cost:
        per, final = cfg.width * own.expansions, int(own.final == "aggregate")
        return Cost(per + final, per * own.max_steps + final)

    def build(self, plan: Any) -> Any:
        return build(plan, self)

    # -- the rule ------------------------------------------------------------------
    def parents(self, frontier: list[int], nodes: dict[int, Node], width: int,
                settings: BeamConfig) -> list[int | None]:
        if not frontier and not nodes:
            return [None] * (width * settings.expansions)
        return [i for i in frontier if not nodes[i].finished for _ in range(settings.expansions)]

    def select(self, frontier: list[int], new: list[int], nodes: dict[int, Node], width: int,
               settings: BeamConfig, rng: random.Random) -> list[int]:
        pool = [i for i in frontier if nodes[i].finished] + new
        return sorted(pool, key=lambda i: (-nodes[i].path_score, i))[:width]


def check_search(name: str, cfg: Any) -> None:
    """What no step-level search takes: a quorum (every path is waited for)."""
    if cfg.quorum is not None:
        raise ValueError(f"quorum does not apply to strategy {name} (each step waits for "
                         "every continuation): leave quorum unset")


def search_shape(own: Any) -> Shape:
    """A search's answer: one aggregation of the kept paths, or a pick (no model call)."""
    return Shape(1, "aggregate") if own.final == "aggregate" else Shape(0, "vote")
