"""``AggregatorGRPOTrainer``: trains an aggregator by reinforcement learning (GRPO).

Built on TRL's ``GRPOTrainer``. Each training prompt is one AFT row's question with its
drafts, rendered by the same :class:`~aft_sdk.prompts.PromptTemplate` the graph uses
(drafts trimmed to ``max_prompt_length`` by the graph's own rule); the policy samples a
group of aggregated answers, and the reward is a verifier against the row's ``target``
(:mod:`aft_sdk.trainers.rewards`), plus optional format and length terms.

Draft sets are split into *easy* (the drafts' majority answer is right) and *hard* (it is
wrong) and mixed at ``hard_ratio`` (the AggLM recipe: hard sets teach aggregation, easy
ones keep the model from overriding a right majority). With ``refresh_drafts_steps`` the
drafts are resampled from the current policy every N steps; the easy/hard split is made
once, on the built drafts. The saved model is an ordinary HF folder (merged, LoRA, GGUF
adapter) with ``aft_sdk.json``, like the SFT trainer's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trl import GRPOTrainer
from transformers import TrainerCallback

from aft_sdk.budget import fit_proposals
from aft_sdk.errors import ConfigError, TrainingError
from aft_sdk.trainers.formatting import FitReport, token_counter
from aft_sdk.trainers.grpo_config import AggregatorGRPOConfig
from aft_sdk.trainers.rewards import (
    correctness_reward,
    format_reward,
    length_reward,
    majority_right,
)
from aft_sdk.trainers.rows import AftRow, RowCounter
from aft_sdk.trainers.trainer import (
    SavesAggregator,
    load_rows,
    lora_config,
    model_and_tokenizer,
)

logger = logging.getLogger(__name__)


@dataclass
class GroupMix:
    """Which draft sets were trained on: counts of easy and hard ones, found and kept."""

    easy: int = 0
    hard: int = 0
    easy_kept: int = 0
    hard_kept: int = 0
    sft_rows_skipped: int = 0
    refreshes: int = 0

    def record(self) -> dict[str, int]:
        return dict(self.__dict__)


def mix_groups(rows: Sequence[AftRow], verifier: str, hard_ratio: float | None, seed: int,
               mix: GroupMix) -> list[AftRow]:
    """The rows to train on: easy and hard draft sets at ``hard_ratio`` (largest such
    set, drawn with ``seed``), or every row when ``hard_ratio`` is ``None``."""
    easy, hard = [], []
    for row in rows:
        (easy if majority_right(row.proposals, row.target, verifier) else hard).append(row)
    mix.easy, mix.hard = len(easy), len(hard)
    if hard_ratio is None:
        keep_easy, keep_hard = easy, hard
    else:
        rng = random.Random(seed)
        if hard_ratio in (0, 1):
            total = len(hard) if hard_ratio == 1 else len(easy)
        else:
            total = int(min(len(hard) / hard_ratio, len(easy) / (1 - hard_ratio)))
        n_hard = round(total * hard_ratio)
        keep_hard = rng.sample(hard, min(n_hard, len(hard)))
        keep_easy = rng.sample(easy, min(total - n_hard, len(easy)))
    mix.easy_kept, mix.hard_kept = len(keep_easy), len(keep_hard)
    kept = {id(r) for r in keep_easy + keep_hard}
    out = [r for r in rows if id(r) in kept]  # data order, not draw order
    if not out:
        raise TrainingError(
            f"no draft sets to train on: {mix.easy} easy and {mix.hard} hard, hard_ratio="
            f"{hard_ratio} (a ratio needs both kinds unless it is 0 or 1; unset it to keep "
            "every row)")
    return out


class DraftStore:
    """The current drafts of each row, rendered to prompts on access (so a refresh is
    seen by the next batch without rebuilding the dataset)."""

    def __init__(self, rows: list[AftRow], template: Any, tokenizer: Any,
                 max_prompt_length: int) -> None:
        self.rows, self.template = rows, template
        self.drafts = [list(r.proposals) for r in rows]
        self.count = token_counter(tokenizer)
        self.limit = max_prompt_length
        self._cache: dict[int, list[dict[str, str]]] = {}
        self.trimmed = 0

    def prompt(self, i: int) -> list[dict[str, str]]:
        if i not in self._cache:
            row = self.rows[i]
            try:
                texts, trims = fit_proposals(self.template, row.messages, self.drafts[i],
                                             self.count, limit=self.limit, reserve=0)
            except ConfigError as e:
                raise ConfigError(f"row {row.id}: {e} (raise max_prompt_length)") from e
            self.trimmed += bool(trims)
            self._cache[i] = self.template.render(row.messages, texts)
        return self._cache[i]

    def replace(self, i: int, drafts: list[str]) -> None:
        self.drafts[i] = drafts
        self._cache.pop(i, None)

    def dataset(self) -> Any:
        import datasets

        ds = datasets.Dataset.from_list([{"row": i, "id": r.id, "reference": r.target}
                                         for i, r in enumerate(self.rows)])

        def render(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            return {**batch, "prompt": [self.prompt(i) for i in batch["row"]]}

        return ds.with_transform(render)


class _Refresh(TrainerCallback):
    def __init__(self, trainer: AggregatorGRPOTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        n = self.trainer.args.refresh_drafts_steps
        if n and state.global_step % n == 0 and state.global_step < state.max_steps:
            self.trainer.refresh_drafts()


class AggregatorGRPOTrainer(SavesAggregator, GRPOTrainer):
    """Trains an aggregator on draft sets with GRPO and a verifiable reward.

    Args:
        args: The configuration (model, rows, reward, mix, LoRA, every GRPO flag).
        model: An already loaded model; default: loaded from ``args``.
        tokenizer: Its tokenizer; default: loaded with the model.
        train_rows: AFT rows to train on; default: read from ``args.dataset_path``.
        reward_funcs: Extra TRL reward functions, added after ours (give their weights
            in ``args.reward_weights``, after ours: correctness, then format and length
            if their weights are set).
        **kwargs: Passed on to ``GRPOTrainer`` (callbacks, ...).
    """

    method = "grpo"

    def __init__(self, args: AggregatorGRPOConfig, model: Any = None, tokenizer: Any = None,
                 train_rows: list[AftRow] | None = None,
                 reward_funcs: Sequence[Callable[..., Any]] = (), **kwargs: Any) -> None:
        model, tokenizer = model_and_tokenizer(args, model, tokenizer)
        self.row_counter = RowCounter()
        self.mix = GroupMix()
        if train_rows is None:
            train_rows = load_rows(str(args.dataset_path), args, self.row_counter)
        aft = [r for r in train_rows if r.kind == "aft"]
        self.mix.sft_rows_skipped = len(train_rows) - len(aft)
        if self.mix.sft_rows_skipped:
            logger.warning("%d sft rows (no drafts) are not used: GRPO trains on draft sets",
                           self.mix.sft_rows_skipped)
        rows = mix_groups(aft, args.verifier, args.hard_ratio, args.seed, self.mix)
        logger.info("draft sets: %d easy, %d hard; training on %d easy + %d hard",
                    self.mix.easy, self.mix.hard, self.mix.easy_kept, self.mix.hard_kept)
        self.prompt = args.prompt_config()
        self.template = self.prompt.template_obj()
        self.data_sources = [args.dataset_path] if args.dataset_path else []
        self.fit_report = FitReport()  # the SFT trainer's count; drafts are fitted below
        self.store = DraftStore(rows, self.template, tokenizer, args.max_prompt_length)
        funcs: list[Callable[..., Any]] = [correctness_reward(args.verifier)]
        if args.format_weight:
            funcs.append(format_reward(args.verifier, args.format_pattern))
        if args.length_weight:
            funcs.append(length_reward(args.length_budget, int(args.max_completion_length)))
        funcs += list(reward_funcs)
        if len(args.reward_weights) != len(funcs):
            raise ConfigError(f"reward_weights has {len(args.reward_weights)} values for "
                              f"{len(funcs)} reward functions (correctness, then format and "
                              "length if weighted, then yours)")
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if args.refresh_drafts_steps:
            callbacks.append(_Refresh(self))
        super().__init__(model=model, reward_funcs=funcs, args=args,
                         train_dataset=self.store.dataset(), processing_class=tokenizer,
                         peft_config=lora_config(args), callbacks=callbacks, **kwargs)

    def refresh_drafts(self, batch_size: int = 8) -> None:
        """Resamples every row's drafts from the current policy (as a proposer: the
        question alone), keeping a row's old drafts where every new one came back empty."""
        import torch
        from tqdm.auto import tqdm

        model, tok, args = self.model, self.processing_class, self.args
        was_training, side = model.training, tok.padding_side
        model.eval()
        tok.padding_side = "left"
        try:
            for start in tqdm(range(0, len(self.store.rows), batch_size), desc="refresh drafts",
                              leave=False):
                idx = list(range(start, min(start + batch_size, len(self.store.rows))))
                k = max(len(self.store.drafts[i]) for i in idx)
                texts = [tok.apply_chat_template(self.store.rows[i].messages, tokenize=False,
                                                 add_generation_prompt=True) for i in idx]
                enc = tok(texts, return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
                with torch.no_grad():
                    out = model.generate(**enc, do_sample=True, temperature=args.temperature,
                                         top_p=args.top_p, num_return_sequences=k,
                                         max_new_tokens=args.max_completion_length,
                                         pad_token_id=tok.pad_token_id)
                new = tok.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
                for j, i in enumerate(idx):
                    drafts = [d.strip() for d in new[j * k:(j + 1) * k] if d.strip()]
                    if drafts:
                        self.store.replace(i, drafts)
        finally:
            tok.padding_side = side
            model.train(was_training)
        self.mix.refreshes += 1

    def training_record(self) -> dict[str, Any]:
        a = self.args
        return {"grpo": {
            "verifier": a.verifier, "reward_weights": a.reward_weights,
            "format_pattern": a.format_pattern, "length_budget": a.length_budget,
            "hard_ratio": a.hard_ratio, "refresh_drafts_steps": a.refresh_drafts_steps,
            "num_generations": a.num_generations, "beta": a.beta, "mix": self.mix.record()},
            "rows_with_proposals_trimmed": self.store.trimmed}


__all__ = ["AggregatorGRPOTrainer", "DraftStore", "GroupMix", "mix_groups"]
