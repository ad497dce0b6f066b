"""An out-of-tree strategy, installed only through its ``.dist-info`` (the test suite puts
this folder on the path): what docs/contributing/write-a-strategy.md walks a newcomer through.

``refine``: ``width`` drafts, then ``refine.steps`` aggregation layers, the last one
writing the answer; its own settings section, check and shape, no edit to aft_sdk.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aft_sdk.graphs.strategies import Shape, Strategy


class RefineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(2, ge=1, description="aggregation layers after the drafts")


class Refine(Strategy):
    name = "refine"
    summary = "width drafts, then refine.steps aggregations in a row"
    settings = RefineSettings

    def check(self, cfg: Any, own: RefineSettings) -> None:
        super().check(cfg, own)
        if cfg.depth not in (1, own.steps):
            raise ValueError(f"refine takes its depth from refine.steps={own.steps}; leave "
                             f"depth at 1, got depth={cfg.depth}")

    def shape(self, cfg: Any, own: RefineSettings) -> Shape:
        return Shape(own.steps, "aggregate")
