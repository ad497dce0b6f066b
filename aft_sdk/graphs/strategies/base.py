"""The strategy contract: what one strategy module owns.

A strategy is a class with a ``name`` and four methods, each given the validated
:class:`~aft_sdk.config.GraphConfig` and the strategy's own settings:

- :meth:`Strategy.check` refuses settings that cannot work together (``ValueError``,
  naming the field; it becomes a :class:`~aft_sdk.errors.ConfigError`);
- :meth:`Strategy.shape` says how many layers follow the drafts, how the answer is
  chosen, and what each aggregation reads;
- :meth:`Strategy.cost` gives the least and most generations one question costs (the
  ``budget`` refuses a graph whose least is over it);
- :meth:`Strategy.build` returns the uncompiled ``StateGraph`` of a plan, from the shared
  nodes. The default is the layered builder every built-in uses, so a strategy that is a
  new shape of layers only writes :meth:`shape`.

Cross-cutting policies (adaptive rounds, quorum, budget, the tool-call decision,
structured-output checks) live in the shared nodes and apply to every strategy built
from them. A strategy's settings are a pydantic model (``settings``) read from its own
YAML section, named as the strategy with ``-`` as ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

    from aft_sdk.config import GraphConfig
    from aft_sdk.graphs.plan import GraphPlan


@dataclass(frozen=True)
class Shape:
    """A layered graph's shape.

    Attributes:
        depth: Layers after the drafts (may differ from ``GraphConfig.depth``).
        answer_by: ``first`` (the first surviving draft), ``aggregate`` (the last
            layer's one output) or ``vote`` (a majority over the last layer).
        subset: Candidates each aggregation reads (seeded), or ``None`` for all.
        preset: The prompt preset when the config's prompt sets nothing.
    """

    depth: int
    answer_by: str
    subset: int | None = None
    preset: str | None = None


@dataclass(frozen=True)
class Cost:
    """Generations one question costs: ``least`` (adaptive rounds may stop early) and
    ``most``."""

    least: int
    most: int


class Strategy:
    """Base of every strategy; subclass it, set :attr:`name`, and write :meth:`shape`."""

    #: The value of ``GraphConfig.strategy`` (and of ``--strategy``).
    name: ClassVar[str] = ""
    #: One line for ``aft strategies`` and the docs.
    summary: ClassVar[str] = ""
    #: The model of this strategy's own settings (its YAML section is the name with
    #: ``-`` as ``_``), or ``None``.
    settings: ClassVar[type[BaseModel] | None] = None
    #: Whether ``GraphConfig.adaptive`` (drafts in rounds) applies.
    adaptive: ClassVar[bool] = True
    #: The most layers after the drafts it accepts (``None``: no limit).
    max_depth: ClassVar[int | None] = None

    def own(self, cfg: GraphConfig) -> BaseModel | None:
        """This strategy's settings in ``cfg`` (validated; defaults when absent)."""
        if self.settings is None:
            return None
        key = self.name.replace("-", "_")
        value = getattr(cfg, key, None) if key in type(cfg).model_fields else \
            cfg.plugins.get(key, {})
        if isinstance(value, self.settings):
            return value
        try:
            return self.settings.model_validate(value)
        except ValidationError as e:  # named by section, as the config's own fields are
            raise ValueError("; ".join(
                f"{'.'.join(map(str, (key, *err['loc'])))}: {err['msg']}" for err in e.errors()
            )) from None

    def check(self, cfg: GraphConfig, own: Any) -> None:
        """Raises ``ValueError`` when ``cfg`` cannot work with this strategy."""
        if self.max_depth is not None and cfg.depth > self.max_depth:
            raise ValueError(f"strategy {self.name} allows depth 0 to {self.max_depth}: got "
                             f"depth={cfg.depth}")
        if cfg.adaptive and not self.adaptive:
            raise ValueError(f"adaptive does not apply to strategy {self.name}")

    def shape(self, cfg: GraphConfig, own: Any) -> Shape:
        raise NotImplementedError(f"strategy {self.name} must say its shape")

    def cost(self, cfg: GraphConfig, own: Any) -> Cost:
        """From the shape: drafts, ``width`` per middle layer, one final aggregation."""
        s, width = self.shape(cfg, own), cfg.width
        most = width if s.depth == 0 else \
            width + width * (s.depth - 1) + (1 if s.answer_by == "aggregate" else width)
        if cfg.adaptive:  # the first round may agree: nothing after it
            return Cost(min(width, cfg.adaptive.round_size or width), most)
        return Cost(most, most)

    def build(self, plan: GraphPlan) -> StateGraph:
        from aft_sdk.graphs.strategies.layered import build

        return build(plan)
