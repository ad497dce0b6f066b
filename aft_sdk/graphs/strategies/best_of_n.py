"""``best-of-n``: ``width`` drafts, then one pick: by the best ``vote.verifier`` score
when one is set, otherwise by a judge model (the aggregator, with the ``select-v1``
prompt unless the config sets one).

    >>> from aft_sdk import GraphConfig
    >>> GraphConfig(strategy="best-of-n", width=4).cost()  # four drafts, one judge
    Cost(least=5, most=5)
"""

from __future__ import annotations

from typing import Any

from aft_sdk.graphs.strategies.base import Shape, Strategy


class BestOfN(Strategy):
    name = "best-of-n"
    summary = "width drafts, then the best by a verifier's score or a judge model's pick"
    max_depth = 1

    def shape(self, cfg: Any, own: Any) -> Shape:
        if cfg.vote.verifier:
            return Shape(0, "vote")
        return Shape(1, "aggregate", preset="select-v1")
