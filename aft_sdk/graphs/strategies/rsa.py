"""``rsa``: recursive self-aggregation. A population of ``width`` drafts; each of
``depth`` steps replaces every candidate by an aggregation of a seeded random subset of
``rsa.subset`` candidates of the previous population; then a majority (``rsa.final:
vote``) or one last aggregation over the whole population (``aggregate``).

    >>> from aft_sdk import GraphConfig
    >>> GraphConfig(strategy="rsa", width=4, depth=2, rsa={"subset": 2}).cost()
    Cost(least=12, most=12)
"""

from __future__ import annotations

from typing import Any

from aft_sdk.config import RSAConfig
from aft_sdk.graphs.strategies.base import Shape, Strategy


class RSA(Strategy):
    name = "rsa"
    summary = "a population aggregated in seeded random subsets, step after step"
    settings = RSAConfig
    adaptive = False

    def check(self, cfg: Any, own: RSAConfig) -> None:
        super().check(cfg, own)
        if own.subset > cfg.width:
            raise ValueError(f"rsa.subset={own.subset} exceeds width={cfg.width} (the "
                             "population): lower subset or raise width")

    def shape(self, cfg: Any, own: RSAConfig) -> Shape:
        return Shape(cfg.depth + (own.final == "aggregate"), own.final, subset=own.subset)
