"""The resolved shape of a run: which backend fills which slot of which layer.

A :class:`GraphPlan` is built once per :class:`~aft_sdk.graphs.AggregateGraph` and is
read by the graph's nodes; it never enters graph state (backends are not data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aft_sdk.backends.base import Backend, Message
from aft_sdk.config import SamplingConfig
from aft_sdk.errors import ConfigError
from aft_sdk.prompts import PromptTemplate, shuffled_order

# Tokens kept free besides the output cap: chat-template framing the count misses.
_TEMPLATE_MARGIN = 32


@dataclass(frozen=True)
class LayerPlan:
    """One layer: its slot count, the backend of each slot, and its sampling."""

    index: int
    width: int
    backends: tuple[Backend, ...]
    sampling: SamplingConfig

    def backend_for(self, slot: int) -> Backend:
        return self.backends[slot % len(self.backends)]

    def branches(self, group_native_n: bool) -> list[list[int]]:
        """Slots grouped into requests: one group per backend with native ``n``."""
        if not group_native_n:
            return [[s] for s in range(self.width)]
        groups: dict[int, list[int]] = {}
        singles: list[list[int]] = []
        for s in range(self.width):
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
    shuffle: bool
    shuffle_seed: int
    min_proposals: int
    deadline_s: float | None
    layer_timeout_s: float | None

    @property
    def depth(self) -> int:
        return len(self.layers) - 1

    @property
    def width(self) -> int:
        return self.layers[0].width

    @property
    def num_generations(self) -> int:
        return sum(layer.width for layer in self.layers)

    def groups(self, layer: int) -> list[list[int]]:
        """Request groups for a layer. Shuffled aggregation prompts differ per slot,
        so they cannot share one ``n`` request."""
        return self.layers[layer].branches(group_native_n=not (layer > 0 and self.shuffle))

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
        texts, trimmed = fit_to_window(self.template, messages, texts, backend, lp.sampling)
        if trimmed:
            info["trimmed"] = {str(order[i]): kept for i, kept in trimmed.items()}
        return self.template.render(messages, texts, models), info


def fit_to_window(
    template: PromptTemplate,
    messages: Sequence[Message],
    texts: list[str],
    backend: Backend,
    sampling: SamplingConfig,
) -> tuple[list[str], dict[int, list[int]]]:
    """Trims proposals evenly by tokens so prompt + output fit the context window.

    Short proposals keep everything; the tokens they leave are shared among the long
    ones (water-filling). Returns the texts and ``{index: [tokens, kept]}`` of trims.

    Raises:
        ConfigError: Even with empty proposals the prompt does not fit.
    """
    window = backend.context_window
    if not window:
        return texts, {}
    budget = window - sampling.max_tokens - _TEMPLATE_MARGIN
    overhead = _prompt_tokens(template, messages, [""] * len(texts), backend)
    sizes = [backend.count_tokens(t) for t in texts]
    room = budget - overhead
    if overhead + sum(sizes) <= budget:
        return texts, {}
    if room < len(texts):
        raise ConfigError(
            f"the aggregation prompt needs {overhead} tokens before any proposal, but "
            f"{backend.label} has a {window}-token window and max_tokens={sampling.max_tokens}; "
            "lower the aggregator's max_tokens, shorten the conversation, or use fewer proposals"
        )
    caps = water_fill(sizes, room)
    out, trimmed = [], {}
    for i, (text, size, cap) in enumerate(zip(texts, sizes, caps)):
        if size <= cap:
            out.append(text)
            continue
        kept = _truncate(text, cap, backend)
        out.append(kept)
        trimmed[i] = [size, backend.count_tokens(kept)]
    return out, trimmed


def _prompt_tokens(
    template: PromptTemplate, messages: Sequence[Message], texts: list[str], backend: Backend
) -> int:
    rendered = template.render(messages, texts)
    return sum(backend.count_tokens(m["content"]) + 4 for m in rendered)


def water_fill(sizes: list[int], room: int) -> list[int]:
    """Caps per item so caps sum to at most ``room``; small items keep their size."""
    caps = [0] * len(sizes)
    left = room
    pending = sorted(range(len(sizes)), key=lambda i: sizes[i])
    while pending:
        share = left // len(pending)
        i = pending[0]
        if sizes[i] <= share:
            caps[i] = sizes[i]
            left -= sizes[i]
            pending.pop(0)
            continue
        for j in pending:
            caps[j] = share
        break
    return caps


def _truncate(text: str, cap: int, backend: Backend) -> str:
    # Cut by characters in proportion, then shrink until the token count fits; the
    # backends' tokenizers cannot all decode, so text is cut rather than tokens.
    kept = text[: max(0, len(text) * cap // max(1, backend.count_tokens(text)))]
    while kept and backend.count_tokens(kept) > cap:
        kept = kept[: int(len(kept) * 0.9)]
    return kept.rstrip() + " [...]" if kept else "[...]"


def check_shape(width: int, depth: int, min_proposals: int) -> None:
    """Raises :class:`ConfigError` for shapes that cannot run."""
    for name, value, low in (("width", width, 1), ("depth", depth, 0),
                             ("min_proposals", min_proposals, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if min_proposals > width:
        raise ConfigError(
            f"min_proposals={min_proposals} exceeds width={width}: the graph could never "
            "gather that many proposals; lower min_proposals or raise width"
        )
