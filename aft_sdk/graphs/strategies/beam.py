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

from aft_sdk.graphs.search import Node, SearchStrategy
from aft_sdk.graphs.strategies.base import Cost
from aft_sdk.search_config import BeamConfig


class Beam(SearchStrategy):
    name = "beam"
    summary = "beam search over steps by a step scorer; the kept paths aggregated or picked"
    settings = BeamConfig

    def cost(self, cfg: Any, own: BeamConfig) -> Cost:
        per, final = cfg.width * own.expansions, int(own.final == "aggregate")
        return Cost(per + final, per * own.max_steps + final)

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

