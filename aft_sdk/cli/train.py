"""``aft train`` / ``aft-train``: fine-tune an aggregator from a YAML config plus flags.

    aft train --config recipes/configs/train_smollm2_lora.yaml --max_steps 20

The YAML holds :class:`~aft_sdk.trainers.AggregatorConfig` fields (every
``TrainingArguments`` flag included); command-line flags override it. Parsing is
``transformers.HfArgumentParser``.
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aft_sdk.errors import AftError, ConfigError


def _read_yaml(path: str, known: set[str]) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of settings")
    unknown = sorted(set(data) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(f"{p}: unknown field {', '.join(hints)}")
    return data


def parse_config(argv: Sequence[str]) -> Any:
    """An AggregatorConfig from ``--config FILE`` (optional) and command-line flags."""
    import dataclasses

    from transformers import HfArgumentParser

    from aft_sdk.trainers.config import AggregatorConfig

    argv = list(argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path")
        config_path = argv[i + 1]
        del argv[i : i + 2]
    parser = HfArgumentParser(AggregatorConfig)
    parser.prog = "aft train"
    if config_path:
        known = {f.name for f in dataclasses.fields(AggregatorConfig)}
        parser.set_defaults(**_read_yaml(config_path, known))
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as e:  # TrainingArguments.__post_init__ raises ValueError
        raise ConfigError(str(e)) from e
    return args


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aft train`` and the ``aft-train`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_config(argv)
        from aft_sdk.trainers.trainer import AggregatorTrainer

        trainer = AggregatorTrainer(args)
        if trainer.row_counter.skipped:
            print(f"skipped {trainer.row_counter.skipped} bad rows, e.g. "
                  f"{trainer.row_counter.examples[0]}", file=sys.stderr)
        if trainer.eval_dataset is not None:
            print(f"eval before: {trainer.evaluate()}", file=sys.stderr)
        trainer.train()
        if trainer.eval_dataset is not None:
            print(f"eval after: {trainer.evaluate()}", file=sys.stderr)
        out = trainer.save_aggregator()
        print(f"saved aggregator to {out}")
        return 0
    except AftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def main() -> None:
    """The ``aft-train`` console script."""
    sys.exit(train_main())


if __name__ == "__main__":  # `accelerate launch -m aft_sdk.cli.train --config ...`
    main()
