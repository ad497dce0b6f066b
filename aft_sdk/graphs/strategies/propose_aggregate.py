"""``propose-aggregate``: ``width`` drafts, then ``depth`` layers that each aggregate all
outputs of the layer before; intermediate layers write ``width`` outputs, the last one.

    >>> from aft_sdk import GraphConfig
    >>> GraphConfig(strategy="propose-aggregate", width=3, depth=2).cost()
    Cost(least=7, most=7)

Width 1 with depth k is sequential refinement; depth 0 returns the first draft.
"""

from __future__ import annotations

from typing import Any

from aft_sdk.graphs.strategies.base import Shape, Strategy


class ProposeAggregate(Strategy):
    name = "propose-aggregate"
    summary = "width drafts, then depth aggregation layers over all of the layer before"

    def shape(self, cfg: Any, own: Any) -> Shape:
        return Shape(cfg.depth, "aggregate" if cfg.depth else "first")
