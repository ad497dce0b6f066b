"""``aft train`` / ``aft-train``: fine-tune an aggregator from a YAML config plus flags.

    aft train --config recipes/configs/train_smollm2_lora.yaml --max_steps 20
    aft train --method grpo --config recipes/configs/grpo_smollm2_lora.yaml

``--method sft`` (the default) trains on targets (:class:`~aft_sdk.trainers.AggregatorConfig`),
``--method grpo`` by reinforcement learning on a verifiable reward
(:class:`~aft_sdk.trainers.AggregatorGRPOConfig`, TRL's ``GRPOConfig`` fields included).

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


METHODS = ("sft", "grpo")


def make_parser(prog: str = "aft train", method: str = "sft") -> Any:
    """TRL's parser for the method's config: :class:`~aft_sdk.trainers.AggregatorConfig`
    (``sft``) or :class:`~aft_sdk.trainers.AggregatorGRPOConfig` (``grpo``).

    Raises:
        ConfigError: An unknown method, or the training extra is not installed.
    """
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    try:
        from trl import TrlParser

        if method == "grpo":
            from aft_sdk.trainers.grpo_config import AggregatorGRPOConfig as config
        else:
            from aft_sdk.trainers.config import AggregatorConfig as config
    except ImportError as e:
        raise ConfigError(f"aft train needs the training extra: pip install 'aft-sdk[train]' ({e})") from e
    parser = TrlParser(dataclass_types=[config], prog=f"{prog} --method {method}",
                       description=_DESCRIPTIONS[method])
    return parser


_DESCRIPTIONS = {
    "sft": "(--method sft|grpo picks the trainer; this is sft, the default.) Fine-tune an aggregator on AFT rows (question + drafts -> target), with TRL's "
           "SFTTrainer. Every field can come from --config FILE (YAML) or a flag; flags win.",
    "grpo": "(--method sft|grpo picks the trainer; this is grpo.) Train an aggregator with GRPO (TRL's GRPOTrainer): for each AFT row, sample a "
            "group of aggregated answers over its drafts and reward those the verifier "
            "accepts against the row's target. Every field can come from --config FILE "
            "(YAML) or a flag; flags win.",
}


def pop_method(argv: list[str]) -> tuple[str, list[str]]:
    """``--method NAME`` (or ``--method=NAME``) taken out of ``argv``; default ``sft``."""
    out, method, i = [], "sft", 0
    while i < len(argv):
        a = argv[i]
        if a == "--method":
            if i + 1 >= len(argv):
                raise ConfigError(f"--method needs a value: {' or '.join(METHODS)}")
            method, i = argv[i + 1], i + 2
            continue
        if a.startswith("--method="):
            method = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return method, out


def parse_config(argv: Sequence[str], method: str = "sft") -> Any:
    """The method's config from ``--config FILE`` (optional) and command-line flags.

    Raises:
        ConfigError: Missing file, unknown fields or flags (named, values never shown),
            or a value ``TrainingArguments`` rejects.
    """
    parser = make_parser(method=method)
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

    method, argv = pop_method(argv)
    args = parse_config(argv, method)
    check_data_paths(args)
    resume, line = prepare_output_dir(args)
    print(f"aft train: {line}", file=sys.stderr, flush=True)
    if method == "grpo":
        from aft_sdk.trainers.grpo import AggregatorGRPOTrainer as trainer_class
    else:
        from aft_sdk.trainers.trainer import AggregatorTrainer as trainer_class
    trainer = trainer_class(args)
    if trainer.row_counter.skipped:
        print(f"skipped {trainer.row_counter.skipped} bad rows, e.g. "
              f"{trainer.row_counter.examples[0]}", file=sys.stderr)
    if method == "grpo":
        m = trainer.mix
        print(f"draft sets: {m.easy} easy, {m.hard} hard; training on {m.easy_kept} easy + "
              f"{m.hard_kept} hard" + (f"; {m.sft_rows_skipped} sft rows (no drafts) not used"
                                       if m.sft_rows_skipped else ""), file=sys.stderr)
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
    from aft_sdk.lifecycle import exit_on_sigterm

    exit_on_sigterm()
    sys.exit(train_main())


if __name__ == "__main__":  # `accelerate launch -m aft_sdk.cli.train --config ...`
    main()
