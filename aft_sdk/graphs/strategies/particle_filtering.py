"""``particle-filtering``: particle filtering over steps (Puri et al., arXiv 2502.01618).

``width`` particles each take a step; the step scorer rates them; the particles are then
resampled (with replacement, seeded by ``prompt.shuffle_seed`` and the step) in
proportion to ``softmax(logit(path score) / temperature)`` (``weights: score``:
``softmax(path score / temperature)``). Finished
particles are carried, not extended, and take part in the resampling. Stops when every
particle has finished or at ``max_steps``; the answer by ``particle_filtering.final``.

    >>> from aft_sdk import GraphConfig
    >>> GraphConfig(strategy="particle-filtering", width=4,
    ...             particle_filtering={"max_steps": 3, "final": "best"}).cost()
    Cost(least=4, most=12)
"""

from __future__ import annotations

import math
import random
from typing import Any

from aft_sdk.errors import GraphError
from aft_sdk.graphs.search import Node, SearchStrategy
from aft_sdk.graphs.strategies.base import Cost
from aft_sdk.search_config import ParticleConfig


class ParticleFiltering(SearchStrategy):
    name = "particle-filtering"
    summary = "particles extended step by step, resampled by their step scores"
    settings = ParticleConfig

    def cost(self, cfg: Any, own: ParticleConfig) -> Cost:
        final = int(own.final == "aggregate")
        return Cost(cfg.width + final, cfg.width * own.max_steps + final)

    # -- the rule ------------------------------------------------------------------
    def parents(self, frontier: list[int], nodes: dict[int, Node], width: int,
                settings: ParticleConfig) -> list[int | None]:
        if not frontier and not nodes:
            return [None] * width
        return [i for i in frontier if not nodes[i].finished]

    def select(self, frontier: list[int], new: list[int], nodes: dict[int, Node], width: int,
               settings: ParticleConfig, rng: random.Random) -> list[int]:
        particles = [i for i in frontier if nodes[i].finished] + new
        return rng.choices(particles, weights=weights(
            [nodes[i].path_score for i in particles], settings.temperature, settings.weights),
            k=width)


#: How far from 0 and 1 a probability is kept before its logit (so a certain step
#: outweighs, but does not infinitely outweigh, the others).
EPS = 1e-6


def weights(scores: list[float], temperature: float, how: str = "logit") -> list[float]:
    """Resampling weights: ``softmax(logit(score) / temperature)`` (``logit``, scores in
    [0, 1]) or ``softmax(score / temperature)`` (``score``), computed stably."""
    if how == "logit":
        if any(not 0.0 <= s <= 1.0 for s in scores):
            raise GraphError(f"particle_filtering.weights: logit needs path scores in [0, 1]; "
                             f"got {[round(s, 4) for s in scores]}: set weights: score")
        scores = [math.log(p / (1 - p)) for p in (min(max(s, EPS), 1 - EPS) for s in scores)]
    top = max(scores)
    raw = [math.exp((s - top) / temperature) for s in scores]
    total = sum(raw)
    return [r / total for r in raw]
