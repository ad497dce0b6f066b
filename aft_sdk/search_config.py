"""Settings of the step-level searches (``beam`` and ``particle-filtering``).

A search writes a solution one step at a time: every step continues a partial answer
until the step separator, a step scorer rates the new step, and the strategy keeps the
paths worth extending. ``width`` is the number of beams (or particles); the settings
below are each strategy's YAML section (``beam:`` / ``particle_filtering:``)::

    strategy: beam
    width: 2
    beam: {expansions: 2, max_steps: 6, scorer: "import:my_pkg.steps:score"}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from aft_sdk.validation import Strict

#: The step scorer forms: a function of yours, an LLM judge, a PRM (transformers or vLLM).
SCORER_FORMS = ("import:MODULE:FUNCTION", "judge", "judge:BACKEND_SPEC",
                "prm:FOLDER", "vllm-prm:MODEL")


class SearchConfig(Strict):
    """What both searches share.

    Attributes:
        scorer: The step scorer: ``import:module:function`` (``(question, steps) ->
            float`` for the last step, or a list with one score per step), ``judge``
            (the proposer rates each step; ``judge:SPEC`` names another backend),
            ``prm:FOLDER`` (a transformers token-classification PRM saved in FOLDER),
            ``vllm-prm:MODEL`` (a process reward model on vLLM's pooling runner, GPU).
        combine: How a path's step scores make its score: ``last`` (the newest step's),
            ``min``, ``product`` or ``mean``.
        separator: What ends a step (a stop string); steps are joined with it.
        max_steps: Steps a path may take before the search stops.
        step_max_tokens: The cap on each step's tokens.
        done: A regular expression: a step that matches it ends its path (as the
            model's end of answer does), for example ``"Answer:"``.
        final: How the answer is chosen from the survivors: ``best`` (the best path
            score), ``vote`` (a majority over their answers by ``vote.extractor``) or
            ``aggregate`` (the aggregator reads them as drafts).
        read: For ``judge``: read the rating from the ``text``, or as the expected
            rating under the first token's ``logprobs`` (backends that return them).
        separator_token: For ``prm:``: the token placed after each step, at which the
            model's positive-label probability is the step's score.
    """

    scorer: str = Field("judge", description="the step scorer: " + ", ".join(SCORER_FORMS))
    combine: Literal["last", "min", "product", "mean"] = Field(
        "last", description="a path's score from its step scores")
    separator: str = Field("\n\n", min_length=1, description="what ends a step")
    max_steps: int = Field(8, ge=1, le=64, strict=True, description="steps a path may take")
    step_max_tokens: int = Field(256, ge=1, le=8192, strict=True,
                                 description="the cap on each step's tokens")
    done: str | None = Field(None, description="a regular expression that ends a path")
    final: Literal["best", "vote", "aggregate"] = Field(
        "aggregate", description="the answer: the best path, a vote, or an aggregation")
    read: Literal["text", "logprobs"] = Field(
        "text", description="judge only: the rating from its text or its logprobs")
    separator_token: str = Field("\n", min_length=1,
                                 description="prm only: the token after each step")

    @field_validator("scorer")
    @classmethod
    def _known_form(cls, spec: str) -> str:
        kind, _, rest = spec.partition(":")
        if spec == "judge" or (kind in ("import", "judge", "prm", "vllm-prm") and rest):
            if kind == "import" and ":" not in rest:
                raise ValueError(f"scorer {spec!r}: write import:module:function")
            return spec
        raise ValueError(f"scorer {spec!r} is none of {', '.join(SCORER_FORMS)}")

    @model_validator(mode="after")
    def _settings_of_its_scorer(self) -> SearchConfig:
        kind = self.scorer.partition(":")[0]
        if self.read != "text" and kind != "judge":
            raise ValueError(f"read: {self.read} applies to a judge scorer, not {self.scorer!r}")
        if self.separator_token != "\n" and kind not in ("prm", "vllm-prm"):
            raise ValueError(f"separator_token applies to prm: and vllm-prm: scorers, not "
                             f"{self.scorer!r}")
        return self

    @field_validator("done")
    @classmethod
    def _pattern(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"done={pattern!r} is not a regular expression: {e}") from None
        return pattern


class BeamConfig(SearchConfig):
    """Beam search: every kept beam makes ``expansions`` next steps; the ``width`` best
    paths by path score are kept (finished ones are carried, not extended).

    Attributes:
        expansions: Next steps each beam makes per step (the first step makes
            ``width * expansions`` from the question).
    """

    expansions: int = Field(2, ge=1, le=64, strict=True,
                            description="next steps each kept path makes per step")


class ParticleConfig(SearchConfig):
    """Particle filtering (Puri et al., 2025): ``width`` particles each take a step, then
    are resampled in proportion to their weights (seeded by ``prompt.shuffle_seed``);
    finished particles are carried, not extended.

    Attributes:
        weights: ``logit`` (default, as its-hub weighs a PRM's probabilities):
            ``softmax(logit(path score) / temperature)``, for scores in [0, 1] (a score
            of 0.9 weighs 9 times one of 0.5); ``score``: ``softmax(path score /
            temperature)``, for scores of any range (gentler on [0, 1]).
        temperature: Of the resampling softmax: lower keeps the best more often.
    """

    weights: Literal["logit", "score"] = Field(
        "logit", description="resampling weights: softmax of logit(score) or of score")
    temperature: float = Field(1.0, gt=0, le=100, description="of the resampling softmax")

