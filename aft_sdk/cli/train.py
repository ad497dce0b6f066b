"""``aft train`` / ``aft-train``: fine-tune an aggregator from a YAML config plus flags.

    aft train --config recipes/configs/train_smollm2_lora.yaml --max_steps 20

The YAML holds :class:`~aft_sdk.trainers.AggregatorConfig` fields (every
``TrainingArguments`` flag included) and command-line flags override it: TRL's own
``TrlParser`` does the parsing (``--config``, an ``env:`` mapping), so ``aft train``
behaves exactly like ``trl sft``. As in TRL's CLI, the ``aft`` command registers
``train`` as a placeholder and hands everything after it to :func:`make_parser`'s parser.
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from aft_sdk.cli.args import user_errors
from aft_sdk.errors import ConfigError

HELP = "fine-tune an aggregator (aft train --help for all flags)"


def register(sub: Any) -> None:
    """Adds the ``train`` placeholder to the ``aft`` subcommands."""
    sub.add_parser("train", help=HELP, add_help=False)


def make_parser(prog: str = "aft train") -> Any:
    """TRL's parser for :class:`~aft_sdk.trainers.AggregatorConfig`.

    Raises:
        ConfigError: The training extra is not installed.
    """
    try:
        from trl import TrlParser

        from aft_sdk.trainers.config import AggregatorConfig
    except ImportError as e:
        raise ConfigError(f"aft train needs the training extra: pip install 'aft-sdk[train]' ({e})") from e
    return TrlParser(dataclass_types=[AggregatorConfig], prog=prog)


def parse_config(argv: Sequence[str]) -> Any:
    """An AggregatorConfig from ``--config FILE`` (optional) and command-line flags.

    Raises:
        ConfigError: Missing file, unknown fields or flags (named, values never shown),
            or a value ``TrainingArguments`` rejects.
    """
    parser = make_parser()
    argv = list(argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path")
        from pathlib import Path

        if not Path(argv[i + 1]).is_file():
            raise ConfigError(f"config file not found: {argv[i + 1]}")
    try:
        args, from_file, from_flags = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except ValueError as e:  # TrainingArguments.__post_init__ and TrlParser raise ValueError
        raise ConfigError(str(e)) from e
    known = {a.dest for a in parser._actions}
    for where, rest in (("in the config file", from_file), ("on the command line", from_flags)):
        names = [x.lstrip("-") for x in rest if x.startswith("--")]
        if names:
            raise ConfigError(f"unknown field {_hints(names, known)} {where}")
    return args


def _hints(names: list[str], known: set[str]) -> str:
    # Names only: a misspelt field may hold a secret, so its value is never echoed.
    out = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        out.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return ", ".join(out)


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aft train`` and the ``aft-train`` console script.

    User errors (bad config, YAML, paths, an output_dir holding an earlier run) are one
    line and exit 2 before any model loads; Ctrl-C exits 130 naming the last checkpoint.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with user_errors(debug):
            return _train(argv)
    except SystemExit as e:
        return int(e.code or 0)


def _train(argv: list[str]) -> int:
    from aft_sdk.trainers.config import check_data_paths
    from aft_sdk.trainers.output_dir import last_checkpoint, prepare_output_dir

    args = parse_config(argv)
    check_data_paths(args)
    resume, line = prepare_output_dir(args)
    print(f"aft train: {line}", file=sys.stderr, flush=True)
    from aft_sdk.trainers.trainer import AggregatorTrainer

    trainer = AggregatorTrainer(args)
    if trainer.row_counter.skipped:
        print(f"skipped {trainer.row_counter.skipped} bad rows, e.g. "
              f"{trainer.row_counter.examples[0]}", file=sys.stderr)
    if trainer.eval_dataset is not None and resume is None:
        print(f"eval before: {trainer.evaluate()}", file=sys.stderr)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except KeyboardInterrupt:
        ckpt = last_checkpoint(args.output_dir)
        where = (f"the last checkpoint is {ckpt}: continue with --resume_from_checkpoint "
                 "true" if ckpt else "no checkpoint was saved (set save_strategy/save_steps "
                 "to be able to resume)")
        print(f"interrupted; {where}", file=sys.stderr)
        return 130
    if trainer.eval_dataset is not None:
        print(f"eval after: {trainer.evaluate()}", file=sys.stderr)
    out = trainer.save_aggregator()
    print(f"saved aggregator to {out}")
    return 0


def main() -> None:
    """The ``aft-train`` console script."""
    sys.exit(train_main())


if __name__ == "__main__":  # `accelerate launch -m aft_sdk.cli.train --config ...`
    main()
