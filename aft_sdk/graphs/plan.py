"""The resolved shape of a run: which backend fills which slot of which layer.

A :class:`GraphPlan` is built once per :class:`~aft_sdk.graphs.AggregateGraph` and is
read by the graph's nodes; it never enters graph state (backends are not data).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from aft_sdk.backends.base import Backend, Message
from aft_sdk.backends.pricing import has_price, warm as warm_prices
from aft_sdk.backends.factory import default_aggregator, default_backend, make_backend, parse_spec
from aft_sdk.budget import fit_proposals
from aft_sdk.answers import Extractor, get_extractor, get_verifier
from aft_sdk.config import (
    AdaptiveConfig,
    BudgetConfig,
    GraphConfig,
    PromptConfig,
    SamplingConfig,
    StructuredConfig,
    ToolsConfig,
)
from aft_sdk.errors import ConfigError
from aft_sdk.plugins import get_strategy
from aft_sdk.messages import non_text_parts, text_view
from aft_sdk.prompts import PromptTemplate, shuffled_order


@dataclass(frozen=True)
class LayerPlan:
    """One layer: its slot count, the backend of each slot, and its sampling."""

    index: int
    width: int
    backends: tuple[Backend, ...]
    sampling: SamplingConfig

    def backend_for(self, slot: int) -> Backend:
        return self.backends[slot % len(self.backends)]

    def branches(self, group_native_n: bool, slots: range | None = None) -> list[list[int]]:
        """Slots (default: all) grouped into requests: one group per backend with native
        ``n``."""
        slots = range(self.width) if slots is None else slots
        if not group_native_n:
            return [[s] for s in slots]
        groups: dict[int, list[int]] = {}
        singles: list[list[int]] = []
        for s in slots:
            b = self.backend_for(s)
            if b.native_n:
                groups.setdefault(id(b), []).append(s)
            else:
                singles.append([s])
        return [*groups.values(), *singles]


@dataclass(frozen=True)
class GraphPlan:
    """Everything the nodes need to know that is not per-run data."""

    layers: tuple[LayerPlan, ...]
    template: PromptTemplate
    prompt: PromptConfig
    strategy: str
    #: How the answer is chosen: ``first`` surviving draft (depth 0), the final
    #: ``aggregate``, or a ``vote`` over the last layer.
    answer_by: str
    #: Answer keys for votes and agreement (``GraphConfig.vote.extractor``).
    extractor: Extractor
    extractor_name: str
    #: Scores drafts for best-of-N (``question, draft -> float``); ``None``: vote by key.
    verifier: Callable[[str, str], float] | None
    #: Rounds of drafts that stop when they agree (``None``: one round of ``width``).
    adaptive: AdaptiveConfig | None
    #: Candidates each aggregation reads (RSA); ``None``: all of the previous layer.
    subset: int | None
    #: Outputs a layer waits for before going on (the rest are cancelled); ``None``: all.
    quorum: int | None
    #: The cap on generations / tokens per question (``None``: none).
    budget: BudgetConfig | None
    #: How drafts that call tools decide the call; structured-output settings.
    tools: ToolsConfig
    structured: StructuredConfig
    shuffle: bool
    shuffle_seed: int
    min_proposals: int
    deadline_s: float | None
    layer_timeout_s: float | None
    #: The strategy's own settings (its YAML section), for strategies whose graph reads
    #: them (the step-level searches); ``None`` where it has none.
    settings: Any = None

    @property
    def depth(self) -> int:
        return len(self.layers) - 1

    @property
    def width(self) -> int:
        return self.layers[0].width

    def is_final_aggregation(self, layer: int) -> bool:
        """Whether ``layer`` writes the answer by aggregating (the last layer, depth > 0):
        it has nothing to fall back on, and its tokens are the answer's."""
        return self.answer_by == "aggregate" and layer == self.depth > 0

    def quorum_for(self, layer: int) -> bool:
        """Whether ``layer`` goes on after ``quorum`` outputs (it has more slots)."""
        return self.quorum is not None and self.layers[layer].width > self.quorum

    def reads_subset(self, layer: int) -> bool:
        """Whether each slot of ``layer`` reads its own random subset (RSA steps)."""
        return self.subset is not None and 0 < layer and not self.is_final_aggregation(layer)

    def round_size(self) -> int:
        """Drafts per round of layer 0."""
        width = self.layers[0].width
        return min(width, self.adaptive.round_size or width) if self.adaptive else width

    @property
    def num_generations(self) -> int:
        return sum(layer.width for layer in self.layers)

    def groups(self, layer: int, slots: range | None = None) -> list[list[int]]:
        """Request groups for a layer (or some of its ``slots``). Shuffled or subset
        aggregation prompts differ per slot, so they cannot share one ``n`` request."""
        if self.quorum_for(layer):  # one branch runs the layer's requests, to cancel them
            return [list(range(self.layers[layer].width) if slots is None else slots)]
        separate = layer > 0 and (self.shuffle or self.reads_subset(layer))
        return self.layers[layer].branches(group_native_n=not separate, slots=slots)

    def aggregation_prompt(
        self, messages: Sequence[Message], inputs: Sequence[dict[str, Any]], layer: int, slot: int
    ) -> tuple[list[Message], dict[str, Any]]:
        """Renders the prompt of one aggregation slot and says how it was built.

        ``inputs`` are the surviving outputs of the previous layer (``text``, ``model``).
        Proposals are shuffled when asked and trimmed evenly when they would overflow the
        aggregator's context window.
        """
        order = list(range(len(inputs)))
        if self.shuffle:
            order = shuffled_order(len(inputs), seed=self.shuffle_seed, layer=layer, slot=slot)
        texts = [inputs[i]["text"] for i in order]
        models = [inputs[i].get("model", "") for i in order]
        lp = self.layers[layer]
        backend = lp.backend_for(slot)
        info: dict[str, Any] = {"order": order}
        if self.reads_subset(layer):  # which candidates of the population it read
            info["read"] = [inputs[i].get("slot") for i in range(len(inputs))]
        if backend.context_window:
            texts, trims = fit_proposals(
                self.template, messages, texts, backend.count_tokens,
                limit=backend.context_window, reserve=lp.sampling.max_tokens, models=models,
            )
            if trims:
                info["trimmed"] = {str(order[i]): kept for i, kept in trims.items()}
        prompt = self.template.render(messages, texts, models)
        if not set(backend.parts) >= set(non_text_parts(prompt)):
            # An aggregator that cannot see a part of the question gets the text-only
            # view (each such part a bracketed note), not an error: the drafts are text.
            prompt = text_view(prompt, backend.parts)
            info["parts_as_text"] = True
        return prompt, info


def _as_backends(value: Any, what: str, default: Any = default_backend) -> tuple[Backend, ...]:
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return (default(),)
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(make_backend(v) for v in items)


def portable(value: Any) -> bool:
    """Whether backends given as ``value`` are data (specs or configs), not live objects."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return all(isinstance(v, (str, BaseModel)) for v in items)


def place_backends(changes: dict[str, Any], live: dict[str, Any]) -> None:
    """Backends given in ``changes`` go where they belong: specs and configs stay in
    ``changes`` (as configs), live objects move to ``live``; either replaces what ``live``
    held for that role."""
    for role in ("proposers", "aggregator"):
        value = changes.pop(role, None)
        if value is None:
            continue
        if portable(value):
            changes[role], live[role] = as_configs(value, role), None
        else:
            live[role] = value


def as_configs(value: Any, what: str) -> list[Any]:
    """Backend specs or configs as a list of configs (for a :class:`GraphConfig`)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError(f"{what} is an empty list: give at least one backend or leave it out")
    return [parse_spec(v) if isinstance(v, str) else v for v in items]


def build_plan(cfg: GraphConfig, proposers: Any = None, aggregator: Any = None,
               layer_backends: Mapping[int, Any] | None = None) -> GraphPlan:
    """The plan of a validated config: backends resolved per layer, settings from ``cfg``.

    Backends come from ``cfg`` (configs); ``proposers`` / ``aggregator`` /
    ``layer_backends`` are live backend objects that take their place where given. With
    neither: the embedded model, and for the aggregator its shipped AFT adapter when the
    install has it. The aggregation prompt is ``cfg.prompt``, or when that sets nothing,
    the prompt the final aggregator was trained with (its ``aft_sdk.json``).
    """
    layer_backends = layer_backends or {}
    warm_prices()  # the price database loads while the graph is built, off the event loop
    prop = _as_backends(proposers if proposers is not None else list(cfg.proposers), "proposers")
    given = aggregator if aggregator is not None else list(cfg.aggregator)
    # A given aggregator is checked whether or not a layer reads it; the default (the
    # embedded model) is built only where one does (not for self-consistency, depth 0).
    empty = isinstance(given, (list, tuple)) and not given
    agg = None if empty else _as_backends(given, "aggregator", default_aggregator)
    strategy = get_strategy(cfg.strategy)
    shape = strategy.shape(cfg, strategy.own(cfg))
    depth, answer_by = shape.depth, shape.answer_by
    plans = []
    for index in range(depth + 1):
        final = answer_by == "aggregate" and index == depth
        own = layer_backends.get(index)
        if own is None and index in cfg.layers and cfg.layers[index].backends:
            own = list(cfg.layers[index].backends)
        if own:
            backends = _as_backends(own, f"layers[{index}].backends")
        elif index == 0:
            backends = prop
        else:
            agg = agg or _as_backends([], "aggregator", default_aggregator)
            backends = agg[:1] if final else agg
        plans.append(LayerPlan(index, 1 if final else cfg.width, backends,
                               cfg.layer_sampling(min(index, max(cfg.depth, 1)))))
    prompt = cfg.prompt
    if shape.preset and not prompt.is_set:
        prompt = prompt.model_copy(update={"preset": shape.preset})
    if depth > 0:
        prompt, warning = prompt.for_aggregator(plans[-1].backends[0].trained_prompt)
        if warning:
            warnings.warn(f"{plans[-1].backends[0].label}: {warning}", UserWarning, stacklevel=3)
    if cfg.budget is not None and cfg.budget.usd is not None:
        _check_priced(plans)
    return GraphPlan(
        layers=tuple(plans),
        template=prompt.template_obj(),
        prompt=prompt,
        strategy=cfg.strategy,
        answer_by=answer_by,
        extractor=get_extractor(cfg.vote.extractor),
        extractor_name=cfg.vote.extractor,
        verifier=get_verifier(cfg.vote.verifier) if cfg.vote.verifier else None,
        adaptive=cfg.adaptive,
        subset=shape.subset,
        quorum=cfg.quorum,
        budget=cfg.budget,
        tools=cfg.tools,
        structured=cfg.structured,
        shuffle=prompt.shuffle,
        shuffle_seed=prompt.shuffle_seed,
        min_proposals=cfg.min_proposals,
        deadline_s=cfg.deadline_s,
        layer_timeout_s=cfg.layer_timeout_s,
        settings=strategy.own(cfg),
    )


def _check_priced(layers: Sequence[LayerPlan]) -> None:
    """Refuses a dollar budget over a model nothing prices (its spend could not be
    counted), naming the backend and how to price it."""
    for layer in layers:
        for backend in layer.backends:
            if not has_price(backend):
                raise ConfigError(
                    f"budget.usd needs a price for every model, and none is known for "
                    f"{backend.label} (layer {layer.index}): give that backend a price "
                    "(price: {input: ..., output: ...}, dollars per million tokens, in its "
                    "config or price= on the backend) or name its price_provider")


def split_layers(layers: Mapping[int, Mapping[str, Any]]) -> tuple[dict[int, Any], dict[int, Any]]:
    """Per-layer overrides as config data, and the layers' live backend objects apart."""
    data: dict[int, Any] = {}
    live: dict[int, Any] = {}
    for index, override in layers.items():
        override = dict(override or {})
        backends = override.pop("backends", None)
        if backends is not None:
            if portable(backends):
                override["backends"] = as_configs(backends, f"layers[{index}].backends")
            else:
                live[index] = backends
        data[index] = override
    return data, live
