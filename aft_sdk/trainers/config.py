"""``AggregatorConfig``: every knob of AFT training, as one ``TrainingArguments`` dataclass.

It extends TRL's ``SFTConfig`` (itself a ``transformers.TrainingArguments``), so
``HfArgumentParser`` reads it from YAML and the command line, and every Trainer flag
works. Defaults that differ from the Hugging Face / TRL ones (``output_dir``,
``learning_rate``, ``num_train_epochs``, ``max_length``, ``per_device_train_batch_size``,
``save_strategy``, ``logging_steps``; see each field's help) are our choices for
aggregation data (long prompts with several drafts, small datasets), not values from
the AFT paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trl import SFTConfig

from aft_sdk.config import PromptConfig, validate
from aft_sdk.errors import ConfigError


@dataclass
class AggregatorFields:
    """The fields every aggregator trainer shares (SFT and GRPO): model, data, prompt,
    LoRA and export. Mixed into a TRL config (a ``TrainingArguments``)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Base model: a Hugging Face id, a local folder, a .gguf file, or "
                          "'embedded' for the bundled SmolLM2 GGUF."},
    )
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "GGUF file name inside model_name_or_path (a folder); it is "
                          "dequantised so it can be trained and saved."},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Training rows: a .jsonl/.json/.parquet file of AFT rows "
                          "(id, messages, proposals, target, kind) or a Hub dataset id."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a Hub dataset."})
    eval_dataset_path: str | None = field(
        default=None, metadata={"help": "Optional evaluation rows, same format."}
    )
    preset: str = field(
        default="aft-v1",
        metadata={"help": "Aggregation prompt preset. It is recorded in aft_sdk.json, and a "
                          "graph whose aggregator is the trained model renders it."},
    )
    template_file: str | None = field(
        default=None,
        metadata={"help": "Custom aggregation template file (with {proposals}); wins over preset."},
    )
    item_format: str | None = field(
        default=None,
        metadata={"help": "How one proposal is written ({index}, {text}, {model}); default: "
                          "the preset's. Set it (with separator, placement) to match the "
                          "prompt a model was trained with elsewhere."},
    )
    separator: str | None = field(
        default=None, metadata={"help": "Between proposals; default: the preset's."}
    )
    placement: str | None = field(
        default=None,
        metadata={"help": "'system' (AFT layout) or 'user'; default: the preset's."},
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "Skip and count malformed rows instead of stopping at the first."},
    )
    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={"help": "Modules to adapt: 'all-linear' or a comma-separated list."},
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "With LoRA, also save the merged model in output_dir (the "
                          "adapter goes to output_dir/adapter either way)."},
    )
    export_gguf: bool = field(
        default=False,
        metadata={"help": "With LoRA, also write the adapter as a llama.cpp GGUF adapter "
                          "(output_dir/adapter.gguf) for EmbeddedBackend(lora_path=...), "
                          "llama-server --lora and Ollama."},
    )
    output_dir: str | None = field(
        default="aft-aggregator",
        metadata={"help": "Where the trained aggregator is written (an ordinary HF folder)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace an earlier run in output_dir (its model files and "
                          "checkpoints are removed first); without it such a folder is "
                          "refused unless resuming."},
    )

    def check_aggregator_fields(self) -> None:
        """Validation both trainers run before TRL's own (a user error, said plainly)."""
        if self.model_name_or_path is None:
            raise ConfigError("model_name_or_path is required: an HF id, a folder or a .gguf file")
        if self.dataset_path is None:
            raise ConfigError("dataset_path is required: a .jsonl/.json/.parquet file or Hub id")
        if self.export_gguf and not self.use_lora:
            raise ConfigError("export_gguf writes a GGUF LoRA adapter: set use_lora too (a "
                              "full fine-tune converts with llama.cpp's convert_hf_to_gguf.py)")
        if self.template_file and not Path(self.template_file).is_file():
            raise ConfigError(f"template_file not found: {self.template_file}")
        self.prompt_config()  # a bad preset, item format or placement fails now

    def prompt_config(self) -> PromptConfig:
        """The aggregation prompt as the one :class:`~aft_sdk.config.PromptConfig` the
        graph and the data builders take (the flags here are its fields)."""
        template = (Path(self.template_file).read_text(encoding="utf-8")
                    if self.template_file else None)
        return validate(PromptConfig, {
            "preset": None if template else self.preset, "template": template,
            "item_format": self.item_format, "separator": self.separator,
            "placement": self.placement}, source="AggregatorConfig prompt")


@dataclass
class AggregatorConfig(AggregatorFields, SFTConfig):
    """Configuration of :class:`~aft_sdk.trainers.AggregatorTrainer`.

    Everything from ``transformers.TrainingArguments`` and ``trl.SFTConfig`` applies;
    the fields of :class:`AggregatorFields` and below are ours (and the changed defaults
    named in the module docstring).
    """

    sft_ratio: float = field(
        default=0.0,
        metadata={"help": "Add this many plain SFT rows (conversation -> target) per AFT "
                          "row, drawn at random (seed) from the same data, so the model "
                          "also proposes; at most 1."},
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Training epochs."})
    max_length: int | None = field(
        default=4096,
        metadata={"help": "Max tokens per row. Longer rows lose proposal text first; the "
                          "target is never cut unless it alone is too long."},
    )
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Batch per device."})
    save_strategy: str = field(
        default="no",
        metadata={"help": "Checkpointing during training; the final model is always saved."},
    )
    logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})

    def __post_init__(self) -> None:
        self.check_aggregator_fields()
        if not 0 <= self.sft_ratio <= 1:
            raise ConfigError(
                f"sft_ratio must be between 0 and 1 (SFT rows per AFT row, made from the "
                f"same rows), got {self.sft_ratio}"
            )
        if self.bf16 is None:  # TRL would turn None into True even on CPUs
            self.bf16 = _bf16_supported() and not self.fp16
        super().__post_init__()


def check_data_paths(args: AggregatorConfig) -> None:
    """Refuses a local dataset path that does not exist (before any model is loaded).

    Not part of validation: a config may name data that a pipeline has yet to build.
    """
    from aft_sdk.trainers.rows import looks_local

    for name in ("dataset_path", "eval_dataset_path"):
        value = getattr(args, name)
        if value and looks_local(value) and not Path(value).expanduser().is_file():
            raise ConfigError(f"{name} not found: {value} (a .jsonl/.json/.parquet file, "
                              "or a Hub dataset id)")


def _bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
