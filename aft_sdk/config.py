"""Typed configuration: sampling, backends and graphs, with YAML loading.

Every model forbids unknown keys, so a typo in a YAML file is an error that names the
field instead of a setting that is silently ignored. Validation failures surface as
:class:`~aft_sdk.errors.ConfigError` with the dotted field path and the rule it broke.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from aft_sdk.backend_config import (
    BackendConfig,
    EmbeddedBackendConfig,
    LangChainBackendConfig,
    OpenAIBackendConfig,
    PluginBackendConfig,
    VLLMBackendConfig,
)
from aft_sdk.budget import BudgetConfig
from aft_sdk.errors import BadRequestError, ConfigError
from aft_sdk.plugins import check_strategy_name, get_strategy, plugin_sections
from aft_sdk.search_config import BeamConfig, ParticleConfig
from aft_sdk.prompt_config import (
    METADATA_FILE,
    PROMPT_FIELDS,
    RENDER_FIELDS,
    PromptConfig,
    same_bytes,
)
from aft_sdk.validation import Strict, describe_validation_error, load_yaml, validate

__all__ = [  # re-exported (and the models below)
    "METADATA_FILE", "PROMPT_FIELDS", "RENDER_FIELDS", "BackendConfig", "EmbeddedBackendConfig",
    "LangChainBackendConfig", "OpenAIBackendConfig", "PluginBackendConfig", "PromptConfig",
    "VLLMBackendConfig", "describe_validation_error", "load_yaml", "same_bytes", "validate",
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
        frequency_penalty, presence_penalty: OpenAI's penalties (-2 to 2).
        logit_bias: Token id (as a string) -> bias (-100 to 100).
        reasoning_effort: For reasoning models behind an OpenAI-compatible API.
        logprobs: Return each generated token's log-probability
            (:attr:`~aft_sdk.backends.Generation.logprobs`).
        top_logprobs: With ``logprobs``, also the ``k`` most likely tokens at each
            position (0 to 20).

    The last six are sent where the backend takes them and refused by name
    (``BadRequestError``) where it does not (:data:`EXTRA_SAMPLING`); unset (or
    ``logprobs=False``), they send nothing.
    """

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, le=1_000_000)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    stop: list[str] | None = None
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _consistent(self) -> SamplingConfig:
        for token, value in (self.logit_bias or {}).items():
            if not token.isdigit() or not -100 <= value <= 100:
                raise ValueError(f"logit_bias maps token ids to -100..100, got {token!r}: "
                                 f"{value!r}")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def extras(self, takes: Iterable[str], label: str) -> dict[str, Any]:
        """The :data:`EXTRA_SAMPLING` fields set here, for a backend that takes ``takes``
        of them; one it does not take is refused by name."""
        found = {k: getattr(self, k) for k in EXTRA_SAMPLING
                 if getattr(self, k) is not None and getattr(self, k) is not False}
        refused = sorted(set(found) - set(takes))
        if refused:
            raise BadRequestError(f"{label} does not take {refused[0]}: leave it unset for "
                                  "this backend", status_code=400, backend=label)
        return found

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
            raise ConfigError(f"{source} must be a SamplingConfig or a dict, got "
                              f"{type(top).__name__}")
        return validate(SamplingConfig, {**self.model_dump(), **top}, source=source)


#: Sampling fields only some backends take (sent where taken, refused where not).
EXTRA_SAMPLING = ("frequency_penalty", "presence_penalty", "logit_bias", "reasoning_effort",
                  "logprobs", "top_logprobs")

#: Role defaults: partial sampling settings are merged onto these.
PROPOSER_SAMPLING = SamplingConfig()
AGGREGATOR_SAMPLING = SamplingConfig(max_tokens=1024)

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

    subset: int = Field(2, ge=1, strict=True,
                        description="candidates each aggregation reads (at most width)")
    final: Literal["vote", "aggregate"] = Field(
        "vote", description="answer by a vote over the last population, or one aggregation")


class ToolsConfig(_Strict):
    """How drafts that call tools become the answer's call (see ``docs/how-to/structured-output.md``).

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
    strategy: str = "propose-aggregate"
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
    # Step-level searches' sections (left out of dumps while they hold the defaults).
    beam: BeamConfig = Field(default_factory=lambda: BeamConfig(),
                             exclude_if=lambda v: v == BeamConfig())
    particle_filtering: ParticleConfig = Field(default_factory=lambda: ParticleConfig(),
                                               exclude_if=lambda v: v == ParticleConfig())
    #: Settings of plug-in strategies, by section (YAML may give them at the top level).
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude_if=lambda v: not v)
    min_proposals: int = Field(1, ge=1, strict=True)
    quorum: int | None = Field(None, ge=1, strict=True)
    budget: BudgetConfig | None = None
    tools: ToolsConfig = Field(default_factory=lambda: ToolsConfig())
    structured: StructuredConfig = Field(default_factory=lambda: StructuredConfig())
    deadline_s: float | None = Field(None, gt=0)
    layer_timeout_s: float | None = Field(None, gt=0)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        return check_strategy_name(name)

    @model_validator(mode="before")
    @classmethod
    def _merge_sampling(cls, data: Any) -> Any:
        # Partial role sampling merges onto the role default (see SamplingConfig.overlay).
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        sections = plugin_sections(set(data) - set(cls.model_fields))
        if sections:  # a plug-in strategy's own section, given at the top level
            data["plugins"] = {**(data.get("plugins") or {}), **{k: data.pop(k) for k in sections}}
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
        strategy = get_strategy(self.strategy)
        strategy.check(self, strategy.own(self))
        unknown = sorted(set(self.plugins) - plugin_sections())
        if unknown:
            raise ValueError(f"plugins has sections {unknown} that no installed strategy "
                             f"reads (installed: {sorted(plugin_sections()) or 'none'})")
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
        unknown = sorted(k for k in self.layers if not 0 <= k <= self.depth)
        if unknown:
            raise ValueError(f"layers has keys {unknown} outside 0..depth={self.depth}")
        return self

    def cost(self) -> Any:
        """Generations one question costs, least and most (its strategy's
        :meth:`~aft_sdk.graphs.strategies.Strategy.cost`)."""
        strategy = get_strategy(self.strategy)
        return strategy.cost(self, strategy.own(self))

    def least_generations(self) -> int:
        """Generations a run makes at least: the first round of drafts (all ``width``
        without ``adaptive``; with it, skipped aggregations are not counted) and every
        fixed layer after them."""
        return int(self.cost().least)

    def merged_sections(self, sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Each strategy section in ``sections`` merged onto this config's own, as changes
        for :meth:`with_changes` (``{"rsa": {"subset": 3}}`` keeps ``rsa.final``)."""
        merged = {}
        for key, values in sections.items():
            current = getattr(self, key) if key in type(self).model_fields else \
                self.plugins.get(key)
            base = current.model_dump() if hasattr(current, "model_dump") else dict(current or {})
            merged[key] = {**base, **values}
        return merged

    def with_changes(self, **changes: Any) -> GraphConfig:
        """A validated copy with ``changes`` applied (``None`` values are ignored).

        Prompt fields may be given flat (``preset=...``) and merge into :attr:`prompt`;
        role sampling given partially merges onto the role default, as in YAML.
        """
        return _changed(self.model_dump(), {k: v for k, v in changes.items() if v is not None})

    def with_options(self, **changes: Any) -> GraphConfig:
        """A validated copy with ``changes`` applied, where ``None`` resets a field to its
        default (``adaptive=None`` turns adaptive rounds off); otherwise as
        :meth:`with_changes`."""
        unset = {k for k, v in changes.items() if v is None}
        unknown = sorted(unset - set(type(self).model_fields))
        if unknown:
            raise ConfigError(f"cannot reset {', '.join(unknown)}: not GraphConfig fields")
        data = {k: v for k, v in self.model_dump().items() if k not in unset}
        return _changed(data, {k: v for k, v in changes.items() if v is not None})

    def layer_sampling(self, layer: int) -> SamplingConfig:
        """Sampling of ``layer``: the role's, with the layer's own fields on top."""
        role = self.proposer_sampling if layer == 0 else self.aggregator_sampling
        override = self.layers.get(layer)
        return role.overlay(override.sampling if override else None,
                            source=f"layers[{layer}].sampling")


def _changed(data: dict[str, Any], changes: dict[str, Any]) -> GraphConfig:
    """``data`` with ``changes`` on top, validated once; flat prompt fields merge into
    ``prompt``."""
    flat = {k: changes.pop(k) for k in PROMPT_FIELDS if k in changes}
    if flat:
        base = changes.pop("prompt", None) or data.get("prompt") or {}
        if isinstance(base, PromptConfig):
            base = base.model_dump()
        changes["prompt"] = {**base, **flat}
    return validate(GraphConfig, {**data, **changes}, source="graph config")
