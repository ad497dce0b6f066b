"""``AggregatorGRPOConfig``: training an aggregator with GRPO on verifiable rewards.

It extends TRL's ``GRPOConfig`` (a ``transformers.TrainingArguments``) with the fields
every aggregator trainer shares (:class:`~aft_sdk.trainers.config.AggregatorFields`:
model, rows, prompt, LoRA, export) and the ones below: the verifier, the optional format
and length terms, the mix of easy and hard draft sets, and refreshing the drafts from
the policy. Group size (``num_generations``), KL (``beta``), learning rate and
generation settings (``temperature``, ``top_p``, ``max_completion_length``) are TRL's own
fields. Changed defaults: ``output_dir``, ``learning_rate`` (1e-5, for LoRA or a small
model; TRL's 1e-6 suits full fine-tunes of large ones), ``num_generations`` (4),
``max_completion_length`` (256), ``gradient_checkpointing`` (off), ``logging_steps`` (5)
and ``bf16`` (only where the GPU supports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from aft_sdk.errors import ConfigError
from aft_sdk.trainers.config import AggregatorFields, _bf16_supported


@dataclass
class AggregatorGRPOConfig(AggregatorFields, GRPOConfig):
    """Configuration of :class:`~aft_sdk.trainers.AggregatorGRPOTrainer`.

    The rows are AFT rows (``id``, ``messages``, ``proposals``, ``target``): the prompt
    is the aggregation prompt over the row's drafts, and ``target`` is the reference the
    verifier checks the aggregated answer against (a worked solution works with the
    ``number`` and ``math`` verifiers: only the final answer is compared).
    """

    verifier: str = field(
        default="number",
        metadata={"help": "How an aggregated answer is checked against the row's target: "
                          "exact, normalized, number (last number), math (math-verify), "
                          "regex:PATTERN, or import:module:function (completion, "
                          "reference) -> float in [0, 1]."},
    )
    format_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of a format term: 1 when the answer can be read by the "
                          "verifier (or matches format_pattern). 0 = off."},
    )
    format_pattern: str | None = field(
        default=None,
        metadata={"help": "Regular expression a well-formed answer matches (needed for the "
                          "format term with an import: verifier)."},
    )
    length_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of a length term: 0 up to length_budget completion "
                          "tokens, falling to -1 at max_completion_length. 0 = off."},
    )
    length_budget: int = field(
        default=128, metadata={"help": "Completion tokens the length term allows for free."}
    )
    hard_ratio: float | None = field(
        default=0.5,
        metadata={"help": "Share of training draft sets whose majority answer is wrong "
                          "('hard'; the rest are 'easy': majority right). The largest "
                          "set with this share is kept (seeded); unset (null) keeps every "
                          "row. Hard sets teach aggregation, easy ones keep it stable."},
    )
    refresh_drafts_steps: int = field(
        default=0,
        metadata={"help": "Every N optimizer steps, resample every row's drafts from the "
                          "current policy (the question alone, as a proposer; same number "
                          "of drafts, TRL's temperature/top_p). 0 = keep the built drafts "
                          "(the proposer model's, which the aggregator sees at test time)."},
    )
    max_prompt_length: int = field(
        default=1024,
        metadata={"help": "Max tokens of the aggregation prompt; longer draft sets lose "
                          "proposal text first, exactly as the graph trims them."},
    )
    output_dir: str | None = field(
        default="aft-aggregator-grpo",
        metadata={"help": "Where the trained aggregator is written (an ordinary HF folder)."},
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    num_generations: int | None = field(
        default=4, metadata={"help": "Aggregated answers sampled per draft set (the group)."}
    )
    max_completion_length: int | None = field(
        default=256, metadata={"help": "Max tokens of one aggregated answer."}
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Trade compute for memory (TRL turns it on; off suits small models)."},
    )
    logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})
    save_strategy: str = field(
        default="no",
        metadata={"help": "Checkpointing during training; the final model is always saved."},
    )

    def __post_init__(self) -> None:
        self.check_aggregator_fields()
        from aft_sdk.trainers.rewards import format_reward, length_reward, make_verifier

        make_verifier(self.verifier)  # an unknown or unimportable verifier fails now
        if self.format_weight:
            format_reward(self.verifier, self.format_pattern)
        if self.length_weight:
            length_reward(self.length_budget, int(self.max_completion_length or 0))
        if self.hard_ratio is not None and not 0 <= self.hard_ratio <= 1:
            raise ConfigError(f"hard_ratio must be between 0 and 1 (the share of draft sets "
                              f"whose majority is wrong), got {self.hard_ratio}")
        if self.refresh_drafts_steps < 0:
            raise ConfigError("refresh_drafts_steps must be 0 (off) or a number of steps")
        if self.max_prompt_length < 64:
            raise ConfigError(f"max_prompt_length={self.max_prompt_length} leaves no room "
                              "for drafts; give at least 64")
        if self.reward_weights is None:
            self.reward_weights = [1.0] + [w for w in (self.format_weight, self.length_weight)
                                           if w]
        if self.bf16 is None:  # TRL would turn None into True even on CPUs
            self.bf16 = _bf16_supported() and not self.fp16
        try:
            super().__post_init__()
        except ValueError as e:  # TRL's checks (group size vs batch, ...): a user error
            raise ConfigError(str(e)) from e
