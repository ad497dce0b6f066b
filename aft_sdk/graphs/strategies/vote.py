"""``vote``: self-consistency. ``width`` drafts, then a majority over their answer keys
(``vote.extractor``); with ``vote.verifier`` a score per draft decides instead.

    >>> from aft_sdk import GraphConfig
    >>> GraphConfig(strategy="vote", width=5).cost()
    Cost(least=5, most=5)
"""

from __future__ import annotations

from typing import Any

from aft_sdk.graphs.strategies.base import Shape, Strategy


class Vote(Strategy):
    name = "vote"
    summary = "width drafts, then a majority over their answers (self-consistency)"
    max_depth = 1  # depth 0 or 1 both mean: the vote is the pick

    def shape(self, cfg: Any, own: Any) -> Shape:
        return Shape(0, "vote")
