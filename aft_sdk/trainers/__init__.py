"""Aggregation Fine-Tuning: build (conversation, proposals, target) rows and train on them.

Data builders and row types load without torch; the trainer needs the ``train`` extra
(``pip install 'aft-sdk[train]'``) and is imported on first use.
"""

from __future__ import annotations

from aft_sdk._lazy import lazy_getattr


from aft_sdk.trainers.builders import (
    abuild_on_policy,
    ateacher_target,
    ateacher_targets,
    mix_sft,
    off_policy_rows,
    rows_from_traces,
    rows_to_dataset,
    sft_rows_from,
    write_rows,
)
from aft_sdk.jsonl import read_jsonl
from aft_sdk.trainers.rows import AftRow, RowCounter, RowError, load_records, validate_rows

_LAZY = {
    "AggregatorConfig": "aft_sdk.trainers.config",
    "AggregatorTrainer": "aft_sdk.trainers.trainer",
    "load_model_and_tokenizer": "aft_sdk.trainers.trainer",
    "export_gguf_to_hf": "aft_sdk.trainers.gguf",
    "load_gguf": "aft_sdk.trainers.gguf",
    "to_examples": "aft_sdk.trainers.formatting",
}

__all__ = [
    "AftRow",
    "AggregatorConfig",
    "AggregatorTrainer",
    "RowCounter",
    "RowError",
    "abuild_on_policy",
    "ateacher_target",
    "ateacher_targets",
    "export_gguf_to_hf",
    "load_gguf",
    "load_model_and_tokenizer",
    "load_records",
    "mix_sft",
    "off_policy_rows",
    "read_jsonl",
    "rows_from_traces",
    "rows_to_dataset",
    "sft_rows_from",
    "to_examples",
    "validate_rows",
    "write_rows",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
