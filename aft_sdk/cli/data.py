"""``aft data build``: make AFT training rows (JSONL) from datasets, models or traces.

    aft data build off-policy tests/data/multi_response.jsonl -o rows.jsonl --target best
    aft data build on-policy prompts.jsonl -o rows.jsonl --proposer embedded -k 4
    aft data build traces answers.jsonl -o rows.jsonl
    aft data build records served-runs/ -o rows.jsonl --min-score 0.5 --width 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aft_sdk.cli.args import SPEC_HELP, add_prompt_args, executor_of
from aft_sdk.runner import DEFAULT_CONCURRENCY


def register(sub: Any) -> None:
    """Adds ``aft data build`` to the ``aft`` subcommands."""
    p = sub.add_parser("data", help="build AFT training rows")
    data_sub = p.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    b = data_sub.add_parser("build", help="build rows into a JSONL file")
    b.add_argument("mode", choices=["off-policy", "on-policy", "traces", "records"],
                   help="off-policy: multi-response data; on-policy: sample proposals; "
                        "traces: graph results / aft batch output; records: the folder "
                        "aft serve --record wrote (targets: feedback's better answer, else "
                        "the served one; --target teacher for a teacher's)")
    b.add_argument("source", help="a .jsonl/.json/.parquet file or a Hub dataset id")
    b.add_argument("-o", "--output", required=True, help="JSONL rows (on-policy: resumable)")
    b.add_argument("--split", default="train", help="Hub dataset split")
    b.add_argument("--prompt-field", default="prompt", help="question or messages field")
    b.add_argument("--responses-field", default="completions", help="list of responses")
    b.add_argument("--text-field", default="response", help="text key inside a response")
    b.add_argument("--rating-field", default="rating", help="score key inside a response")
    b.add_argument("--reference-field", default="reference", help="reference answer field")
    b.add_argument("--id-field", default="id")
    b.add_argument("--target", choices=["best", "reference", "teacher"], default="reference",
                   help="what the model should write (default: the reference)")
    b.add_argument("--teacher", metavar="SPEC", help="teacher backend for --target teacher. "
                   + SPEC_HELP)
    add_prompt_args(b.add_argument_group(
        "teacher prompt", "the aggregation prompt the teacher reads (use the flags you "
        "will train and serve with)"))
    b.add_argument("--num-proposals", "-k", type=int, default=4, help="proposals per row")
    b.add_argument("--proposer", action="append", metavar="SPEC",
                   help="on-policy proposer(s); default: the embedded model")
    b.add_argument("--max-tokens", type=int, default=256, help="on-policy proposal cap")
    b.add_argument("--temperature", type=float, default=0.8)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-shuffle", action="store_true", help="keep response order")
    b.add_argument("--skip-bad", action="store_true",
                   help="skip and count bad records (and lines that are not JSON) in every mode")
    b.add_argument("--sft-ratio", type=float, default=0.0,
                   help="add this many plain SFT rows per AFT row (off-policy/traces)")
    r = b.add_argument_group("records", "which recorded runs become rows")
    r.add_argument("--model", metavar="NAME", help="the runs of this served model id (or "
                   "config hash prefix)")
    r.add_argument("--since", metavar="YYYY-MM-DD", help="the runs from this UTC day on")
    r.add_argument("--min-score", type=float, help="the runs whose feedback score is at least this")
    r.add_argument("--width", type=int, help="proposals per row, sampled from the run's drafts")
    r.add_argument("--reward", metavar="VERIFIER", help="rows for aft train --method grpo: "
                   "the runs whose feedback gives a reference, with the served answer's "
                   "reward under VERIFIER (number, math, normalized, ...)")
    b.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="rows in flight")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--ray", action="store_true",
                   help="on-policy: sample proposals in Ray actors (pip install 'aft-sdk[ray]')")
    b.add_argument("--workers", type=int, default=2, help="Ray actors with --ray")
    b.add_argument("--ray-address", help="Ray cluster to join (default RAY_ADDRESS or local)")
    b.add_argument("--ray-gpus", type=float, default=0, help="GPUs per Ray actor (default 0)")
    b.set_defaults(func=cmd_data_build)


def cmd_data_build(args: argparse.Namespace) -> int:
    from aft_sdk.aio import run_sync
    from aft_sdk.cli.args import prompt_fields
    from aft_sdk.config import PromptConfig, SamplingConfig
    from aft_sdk.errors import ConfigError
    from aft_sdk import trainers
    from aft_sdk.outputs import check_output
    from aft_sdk.trainers.rows import RowCounter, load_records, looks_local

    if args.target == "teacher" and not args.teacher:
        raise ConfigError("--target teacher needs --teacher SPEC")
    if args.target == "teacher" and getattr(args, "reward", None):
        raise ConfigError("--reward makes each row's target its feedback reference (for "
                          "GRPO); a teacher's target would replace it: leave one out")
    if args.ray and args.mode != "on-policy":
        raise ConfigError("--ray applies to on-policy builds, the only mode that samples "
                          "from models in bulk")
    records_only = [f for f in ("model", "since", "min_score", "width", "reward")
                    if getattr(args, f) is not None]
    if records_only and args.mode != "records":
        raise ConfigError(f"--{records_only[0].replace('_', '-')} applies to records builds "
                          "(aft data build records DIR)")
    if args.sft_ratio and (args.mode == "on-policy" or args.target == "teacher"):
        raise ConfigError("--sft-ratio applies to off-policy, traces and records builds without a "
                          "teacher: mix SFT rows into this output with a second build, or "
                          "leave it out")
    counter = RowCounter()
    inputs = [args.source] if looks_local(args.source) else []
    if args.mode == "records" and Path(args.source).is_dir():  # never write over a record
        inputs += sorted(Path(args.source).glob("*.jsonl"))
    # The output is checked before any source is read or model called.
    check_output(args.output, inputs=inputs)
    if args.mode == "traces":
        rows = list(trainers.trace_rows(args.source, skip_bad=args.skip_bad, counter=counter))
    elif args.mode == "records":
        rows = list(trainers.record_rows(
            args.source, config=args.model, since=args.since, min_score=args.min_score,
            width=args.width, seed=args.seed, reward=args.reward, skip_bad=args.skip_bad,
            counter=counter))
    elif args.mode == "off-policy":
        records = load_records(args.source, split=args.split, skip_bad=args.skip_bad,
                               counter=counter)
        rows = list(trainers.off_policy_rows(
            records, prompt_field=args.prompt_field, responses_field=args.responses_field,
            text_field=args.text_field, rating_field=args.rating_field,
            reference_field=args.reference_field,
            target="best" if args.target in ("best", "teacher") else "reference",
            num_proposals=args.num_proposals, shuffle=not args.no_shuffle, seed=args.seed,
            id_field=args.id_field, skip_bad=args.skip_bad, counter=counter,
        ))
    else:
        records = load_records(args.source, split=args.split, skip_bad=args.skip_bad,
                               counter=counter)
        stats = run_sync(trainers.abuild_on_policy(
            records, args.proposer or None, args.output, k=args.num_proposals,
            sampling=SamplingConfig(max_tokens=args.max_tokens, temperature=args.temperature,
                                    seed=args.seed),
            prompt_field=args.prompt_field,
            reference_field=None if args.target == "teacher" else args.reference_field,
            teacher=args.teacher if args.target == "teacher" else None,
            prompt=PromptConfig(**prompt_fields(args)),
            id_field=args.id_field, skip_bad=args.skip_bad, counter=counter, inputs=inputs,
            max_concurrency=args.concurrency,
            progress=not args.no_progress, executor=executor_of(args),
        ))
        print(f"{stats['written']} rows written, {stats['skipped']} already there, "
              f"{stats['failed']} failed{_skipped(counter)} -> {args.output}", file=sys.stderr)
        return 0 if not stats["failed"] else 1
    if args.target == "teacher":
        stats = run_sync(trainers.abuild_teacher_targets(
            rows, args.teacher, args.output, prompt=PromptConfig(**prompt_fields(args)),
            max_concurrency=args.concurrency,
            progress=not args.no_progress, inputs=inputs))
        print(f"{stats['written']} rows with teacher targets -> {args.output}", file=sys.stderr)
        return 0 if not stats["failed"] else 1
    if args.sft_ratio:
        sft = list(trainers.sft_rows(rows))
        rows = trainers.mix_sft(rows, sft, args.sft_ratio, seed=args.seed)
    n = trainers.write_rows(rows, args.output, progress=not args.no_progress, inputs=inputs)
    print(f"{n} rows -> {args.output}{_skipped(counter)}", file=sys.stderr)
    return 0


def _skipped(counter: Any) -> str:
    return f", {counter.skipped} bad records skipped" if counter.skipped else ""
