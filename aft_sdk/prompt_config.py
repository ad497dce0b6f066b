"""``PromptConfig``: how drafts are shown to an aggregator, from training to serving."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from aft_sdk.errors import ConfigError
from aft_sdk.prompts import PromptTemplate, get_template
from aft_sdk.validation import Strict, validate


#: The record ``aft train`` writes beside a trained aggregator.
METADATA_FILE = "aft_sdk.json"

#: The fields of :class:`PromptConfig` that decide the bytes an aggregator reads.
RENDER_FIELDS = ("preset", "template", "item_format", "separator", "placement", "hide_models")
#: Every prompt field; a graph config also takes them at its top level (older YAML).
PROMPT_FIELDS = (*RENDER_FIELDS, "shuffle", "shuffle_seed")


class PromptConfig(Strict):
    """How drafts are shown to an aggregator: the one prompt format from training to serving.

    :class:`GraphConfig` embeds it, the trainer's :class:`AggregatorConfig` builds it from
    its flags, every data builder takes it, ``aft train`` writes it into the model's
    ``aft_sdk.json``, and a backend loaded from a trained aggregator carries it (see
    :meth:`for_aggregator`). Render fields left ``None`` mean "not set": a graph then
    uses its aggregator's trained prompt if it has one, else the defaults below.

    Attributes:
        preset: A preset name (``aft-v1``, ``moa-v1``, ``select-v1``); default ``aft-v1``.
        template: A custom template with ``{proposals}``; wins over ``preset``.
        item_format: How one draft is written (``{index}``, ``{text}``, ``{model}``);
            default: the preset's.
        separator: Between drafts; default: the preset's.
        placement: ``system`` (AFT layout) or ``user``; default: the preset's.
        hide_models: Leave model names out (default ``True``).
        shuffle: Shuffle draft order per aggregator slot (a graph setting; training rows
            keep their order).
        shuffle_seed: Seed of that shuffle.
    """

    preset: str | None = None
    template: str | None = None
    item_format: str | None = None
    separator: str | None = None
    placement: Literal["system", "user"] | None = None
    hide_models: bool | None = None
    shuffle: bool = False
    shuffle_seed: int = 0

    @model_validator(mode="after")
    def _renders(self) -> PromptConfig:
        self.template_obj()  # unknown presets and templates without {proposals} fail now
        return self

    @property
    def is_set(self) -> bool:
        """Whether any field that decides the rendered bytes was given."""
        return any(getattr(self, name) is not None for name in RENDER_FIELDS)

    def template_obj(self) -> PromptTemplate:
        """The :class:`~aft_sdk.prompts.PromptTemplate` this config renders with."""
        tmpl = get_template(self.preset or "aft-v1", self.template,
                            item_format=self.item_format, separator=self.separator,
                            placement=self.placement)
        return tmpl if self.hide_models is not False else tmpl.with_models_shown()

    def render_fields(self) -> dict[str, Any]:
        """The fields that decide the bytes (what ``aft_sdk.json`` records)."""
        return {name: getattr(self, name) for name in RENDER_FIELDS}

    def for_aggregator(self, trained: PromptConfig | None) -> tuple[PromptConfig, str | None]:
        """The prompt to use with an aggregator trained on ``trained``, and a warning.

        A user's prompt (any render field set) wins over the trained one; the warning
        says so when the two render different bytes. Unset, the trained prompt is used
        (with this config's shuffle settings).
        """
        if trained is None:
            return self, None
        if not self.is_set:
            return self.model_copy(update=trained.render_fields()), None
        if same_bytes(self, trained):
            return self, None
        return self, (
            "the aggregator was trained with the prompt "
            f"{_describe(trained)} but this graph sets {_describe(self)}; the graph's is "
            "used. Leave preset/template/item_format/separator/placement unset to use the "
            "trained one")

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> PromptConfig | None:
        """The prompt recorded in a trained model's ``aft_sdk.json`` (``None`` if none)."""
        if isinstance(meta.get("prompt_config"), Mapping):
            return validate(cls, dict(meta["prompt_config"]), source="aft_sdk.json prompt_config")
        if "preset" not in meta:  # not written by aft train
            return None
        # Written before prompt_config existed: preset name, custom template, layout.
        layout = meta.get("prompt") if isinstance(meta.get("prompt"), Mapping) else {}
        preset = str(meta["preset"]).removesuffix("+custom")
        return validate(cls, {
            "preset": None if preset == "custom" else preset, "template": meta.get("template"),
            **{k: layout.get(k) for k in ("item_format", "separator", "placement")},
        }, source="aft_sdk.json")

    @classmethod
    def of_model(cls, where: str | os.PathLike[str]) -> PromptConfig | None:
        """The prompt a trained aggregator was trained with, or ``None`` if unrecorded.

        ``where`` is a model or adapter folder (its ``aft_sdk.json``) or an adapter file
        ``X.gguf`` (``X.aft_sdk.json`` beside it, else the folder's ``aft_sdk.json``, as
        ``aft train --export_gguf`` leaves them).
        """
        p = Path(where)
        found = [p / METADATA_FILE] if p.is_dir() else [
            p.with_name(f"{p.stem}.{METADATA_FILE}"), p.with_name(METADATA_FILE)]
        path = next((f for f in found if f.is_file()), None)
        if path is None:
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); it should be the record "
                              "aft train wrote beside the model") from e
        return cls.from_metadata(meta) if isinstance(meta, Mapping) else None


def same_bytes(a: PromptConfig, b: PromptConfig) -> bool:
    """Whether two prompt configs render identical aggregation prompts."""
    ta, tb = a.template_obj(), b.template_obj()
    return (ta.template, ta.item_format, ta.separator, ta.placement, ta.selects) == (
        tb.template, tb.item_format, tb.separator, tb.placement, tb.selects)


def _describe(p: PromptConfig) -> str:
    fields = {k: v for k, v in p.render_fields().items() if v is not None and k != "template"}
    if p.template is not None:
        fields["template"] = "custom"
    return "{" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + "}" if fields else "(defaults)"
