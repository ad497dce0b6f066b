"""Aggregation Fine-Tuning: build (conversation, proposals, target) rows and train on them.

Rows by source: ``off_policy`` (multi-response datasets), ``on_policy`` (sampled through
the graph), ``teacher`` (targets written by a stronger model), ``traces`` (graph results),
``mixing`` (plain SFT rows); ``rows`` holds the row type, validation and I/O. Training:
``formatting`` (rows to TRL examples), ``config`` and ``trainer`` (supervised AFT),
``grpo_config``, ``grpo`` and ``rewards`` (GRPO on verifiable rewards); ``gguf`` loads the
bundled model.

Data builders and row types load without torch; the trainer needs the ``train`` extra
(``pip install 'aft-sdk[train]'``) and is imported on first use.
"""

from __future__ import annotations

from aft_sdk._lazy import lazy_getattr
from aft_sdk.jsonl import read_jsonl
from aft_sdk.trainers.mixing import mix_sft, sft_rows
from aft_sdk.trainers.off_policy import off_policy_rows
from aft_sdk.trainers.on_policy import abuild_on_policy
from aft_sdk.trainers.rows import (
    AftRow,
    RowCounter,
    RowError,
    load_records,
    rows_to_dataset,
    validate_rows,
    write_rows,
)
from aft_sdk.trainers.teacher import abuild_teacher_targets, awrite_target
from aft_sdk.trainers.records import record_rows
from aft_sdk.trainers.traces import trace_rows

_LAZY = {
    "AggregatorConfig": "aft_sdk.trainers.config",
    "AggregatorTrainer": "aft_sdk.trainers.trainer",
    "AggregatorGRPOConfig": "aft_sdk.trainers.grpo_config",
    "AggregatorGRPOTrainer": "aft_sdk.trainers.grpo",
    "load_model_and_tokenizer": "aft_sdk.trainers.trainer",
    "export_gguf_to_hf": "aft_sdk.trainers.gguf",
    "export_lora_to_gguf": "aft_sdk.trainers.gguf",
    "load_gguf": "aft_sdk.trainers.gguf",
    "to_examples": "aft_sdk.trainers.formatting",
}

__all__ = [
    "AftRow",
    "AggregatorConfig",
    "AggregatorGRPOConfig",
    "AggregatorGRPOTrainer",
    "AggregatorTrainer",
    "RowCounter",
    "RowError",
    "abuild_on_policy",
    "abuild_teacher_targets",
    "awrite_target",
    "export_gguf_to_hf",
    "export_lora_to_gguf",
    "load_gguf",
    "load_model_and_tokenizer",
    "load_records",
    "mix_sft",
    "off_policy_rows",
    "read_jsonl",
    "record_rows",
    "rows_to_dataset",
    "sft_rows",
    "to_examples",
    "trace_rows",
    "validate_rows",
    "write_rows",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
