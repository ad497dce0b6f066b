"""``AggregatorTrainer``: fine-tunes a model to aggregate drafts (AFT).

Built on TRL's ``SFTTrainer`` (a ``transformers.Trainer``), which applies the chat
template and masks the loss to the completion; we supply the aggregation prompt (same
preset code as the graph), proposal-first truncation, model loading (HF id, folder or
GGUF), optional LoRA, and a save that yields an ordinary HF folder plus
``aft_sdk.json`` describing how it was trained.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from trl import SFTTrainer

from aft_sdk.errors import ConfigError, TrainingError
from aft_sdk.config import METADATA_FILE
from aft_sdk.prompts import PromptTemplate
from aft_sdk.trainers.mixing import mix_sft, sft_rows
from aft_sdk.trainers.config import AggregatorConfig
from aft_sdk.trainers.formatting import FitReport, to_examples
from aft_sdk.trainers.rows import AftRow, RowCounter, load_records, validate_rows

logger = logging.getLogger(__name__)




def load_model_and_tokenizer(args: AggregatorConfig) -> tuple[Any, Any]:
    """Loads the base model: HF id or folder, or GGUF (dequantised so it trains/saves)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aft_sdk.trainers.gguf import load_gguf

    name = str(args.model_name_or_path)
    if name == "embedded":
        from aft_sdk.backends.embedded_backend import bundled_model_path

        name = str(bundled_model_path())
    if name.endswith(".gguf"):
        return load_gguf(name)
    if args.gguf_file:
        return load_gguf(Path(name) / args.gguf_file)
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise ConfigError(f"model path not found: {name}")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, trust_remote_code=args.trust_remote_code
        )
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=args.trust_remote_code)
    except OSError as e:
        raise ConfigError(
            f"cannot load model {name!r}: {e}. Give a local folder, a .gguf file, or a Hub "
            "id reachable from this machine"
        ) from e
    return model, tokenizer


def load_rows(path: str, args: AggregatorConfig, counter: RowCounter) -> list[AftRow]:
    """Validated rows from a file or Hub dataset, plus SFT rows if ``sft_ratio`` asks."""
    records = load_records(path, split=args.dataset_split, skip_bad=args.skip_bad_rows,
                           counter=counter)
    rows = list(validate_rows(records, skip_bad=args.skip_bad_rows, counter=counter, source=path))
    if not rows:
        raise TrainingError(f"{path} has no usable rows ({counter.skipped} skipped)")
    if getattr(args, "sft_ratio", 0) > 0:  # the SFT trainer's mix; GRPO has none
        aft = [r for r in rows if r.kind == "aft"]
        others = [r for r in rows if r.kind != "aft"]
        rows = mix_sft(aft, list(sft_rows(aft)), args.sft_ratio, seed=args.seed) + others
    return rows


def _to_dataset(rows: list[AftRow], template: PromptTemplate, tokenizer: Any, max_length: int | None,
                report: FitReport) -> Any:
    import datasets

    return datasets.Dataset.from_list(to_examples(rows, template, tokenizer, max_length, report))


def model_and_tokenizer(args: Any, model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """The model given (with its tokenizer) or loaded from ``args``, tokenizer prepared."""
    if model is None:
        model, tokenizer = load_model_and_tokenizer(args)
    elif tokenizer is None:
        raise ConfigError("pass the tokenizer together with a loaded model")
    prepare_tokenizer(args, tokenizer)
    return model, tokenizer


def prepare_tokenizer(args: Any, tokenizer: Any) -> None:
    """Refuses a tokenizer without a chat template; pads with EOS when it has no pad."""
    if not getattr(tokenizer, "chat_template", None) and not getattr(args, "chat_template_path", None):
        raise ConfigError(
            f"the tokenizer of {args.model_name_or_path} has no chat template; set "
            "chat_template_path to a Jinja template file"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def lora_config(args: Any) -> Any:
    """The peft ``LoraConfig`` the flags ask for, or ``None`` without ``use_lora``."""
    if not args.use_lora:
        return None
    from peft import LoraConfig

    targets = args.lora_target_modules
    return LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=targets if targets == "all-linear" else targets.split(","),
        task_type="CAUSAL_LM",
    )


class SavesAggregator:
    """``save_aggregator`` for both trainers (SFT and GRPO): an HF folder, adapters,
    GGUF, and ``aft_sdk.json`` saying how the model was trained."""

    method = "sft"

    def training_record(self) -> dict[str, Any]:
        """Extra facts for ``aft_sdk.json`` (the GRPO trainer adds its reward and mix)."""
        return {}

    def save_aggregator(self, output_dir: str | os.PathLike[str] | None = None) -> Path:
        """Writes the trained aggregator as a plain HF folder and returns its path.

        Full fine-tuning: weights, tokenizer (with chat template) and ``aft_sdk.json``.
        LoRA: the adapter in ``output_dir/adapter``, and with ``merge_lora`` the merged
        model in ``output_dir`` itself, so vLLM and transformers load either; with
        ``export_gguf`` also ``output_dir/adapter.gguf`` for llama.cpp.
        """
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer = self.processing_class
        model = self.model
        # A resumed run may switch between merged and adapter-only: drop the other
        # kind's weights so the folder never loads an earlier run's model.
        from aft_sdk.trainers.output_dir import ADAPTER_FILES, MODEL_FILES, found, remove

        merged = not self.args.use_lora or self.args.merge_lora
        remove(found(out, ADAPTER_FILES if not self.args.use_lora else ()) +
               found(out, MODEL_FILES if not merged else ()))
        if self.args.use_lora:
            adapter = out / "adapter"
            model.save_pretrained(adapter)
            tokenizer.save_pretrained(adapter)
            if self.args.export_gguf:
                from aft_sdk.trainers.gguf import export_lora_to_gguf

                export_lora_to_gguf(adapter, out / "adapter.gguf", base=self._base_weights())
            if self.args.merge_lora:
                model.merge_and_unload().save_pretrained(out)
        else:
            model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        meta = {
            "aft_sdk_version": _version(),
            # Read back by backends loading this model (PromptConfig.of_model), so a
            # graph renders the prompt it was trained on.
            "prompt_config": self.prompt.model_dump(mode="json"),
            "preset": self.template.name,
            "base_model": str(self.args.model_name_or_path),
            "data_sources": self.data_sources,
            "rows_skipped": self.row_counter.skipped,
            "rows_with_proposals_trimmed": self.fit_report.proposals_trimmed,
            "rows_with_target_cut": self.fit_report.targets_cut,
            "lora": bool(self.args.use_lora),
            "method": self.method,
            **self.training_record(),
            "config": self.args.to_dict(),  # TrainingArguments masks hub tokens here
        }
        record = json.dumps(meta, indent=2, default=str) + "\n"
        (out / METADATA_FILE).write_text(record)
        if self.args.use_lora:  # the adapter folder is loaded on its own (with_lora)
            (out / "adapter" / METADATA_FILE).write_text(record)
        logger.info("saved aggregator to %s", out)
        return out


    def _base_weights(self) -> str:
        """The base model as a GGUF adapter export needs it: the .gguf file if there is one."""
        name, gguf_file = str(self.args.model_name_or_path), self.args.gguf_file
        if name == "embedded":
            from aft_sdk.backends.embedded_backend import bundled_model_path

            return str(bundled_model_path())
        return str(Path(name) / gguf_file) if gguf_file else name



class AggregatorTrainer(SavesAggregator, SFTTrainer):
    """Trains an aggregator on AFT rows.

    Args:
        args: The configuration (model, data, LoRA, all Trainer flags).
        model: An already loaded model; default: loaded from ``args``.
        tokenizer: Its tokenizer; default: loaded with the model.
        train_rows: Rows to train on; default: read from ``args.dataset_path``.
        eval_rows: Rows to evaluate on; default: ``args.eval_dataset_path`` if set.
        **kwargs: Passed on to ``SFTTrainer`` (callbacks, ...).
    """

    def __init__(
        self,
        args: AggregatorConfig,
        model: Any = None,
        tokenizer: Any = None,
        train_rows: list[AftRow] | None = None,
        eval_rows: list[AftRow] | None = None,
        **kwargs: Any,
    ) -> None:
        model, tokenizer = model_and_tokenizer(args, model, tokenizer)
        self.row_counter = RowCounter()
        if train_rows is None:
            train_rows = load_rows(str(args.dataset_path), args, self.row_counter)
        if eval_rows is None and args.eval_dataset_path:
            eval_rows = load_rows(args.eval_dataset_path, args, self.row_counter)
        self.prompt = args.prompt_config()
        self.template = self.prompt.template_obj()
        self.fit_report = FitReport()
        self.data_sources = [s for s in (args.dataset_path, args.eval_dataset_path) if s]
        peft_config = lora_config(args)
        super().__init__(
            model=model,
            args=args,
            train_dataset=_to_dataset(train_rows, self.template, tokenizer, args.max_length,
                                      self.fit_report),
            eval_dataset=_to_dataset(eval_rows, self.template, tokenizer, args.max_length,
                                     self.fit_report) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            **kwargs,
        )

def _version() -> str:
    """The installed aft-sdk version (from its metadata: ``trainers/`` imports nothing
    from the package root)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aft-sdk")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown"
