"""``aft eval``: compare methods (single, sc:N, bon:N, pa:WxD) on a task, with plots.

    aft eval exact_match problems.jsonl -o eval_out --methods single sc:5 pa:4x1
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aft_sdk.cli.args import SPEC_HELP
from aft_sdk.runner import DEFAULT_CONCURRENCY


def register(sub: Any) -> None:
    """Adds ``aft eval`` to the ``aft`` subcommands."""
    p = sub.add_parser("eval", help="compare test-time methods on a task; table and plots")
    p.add_argument("task", choices=["exact_match", "multiple_choice", "pairwise"])
    p.add_argument("data", help="JSONL items: id, question, and answer / choices / reference")
    p.add_argument("-o", "--output", required=True, help="output folder (resumable)")
    p.add_argument("--methods", nargs="+", default=["single", "sc:3", "pa:3x1"],
                   help="single, sc:N (self-consistency), bon:N (judge picks), pa:WxD, "
                        "config:PATH (a graph YAML: any strategy)")
    p.add_argument("--proposer", action="append", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--aggregator", metavar="SPEC", help="aggregator / best-of-N judge")
    p.add_argument("--judge", metavar="SPEC", help="pairwise judge (default: the aggregator)")
    p.add_argument("--max-tokens", type=int, default=256, help="proposal cap")
    p.add_argument("--aggregator-max-tokens", type=int, default=384)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int)
    p.add_argument("--limit", type=int, help="evaluate only the first N items")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="items in flight")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from aft_sdk.backends import make_backend
    from aft_sdk.errors import ConfigError
    from aft_sdk.eval import (
        ExactMatchTask,
        MultipleChoiceTask,
        PairwiseJudgeTask,
        evaluate,
        format_table,
        parse_method,
    )
    from aft_sdk.eval.runner import check_out_dir
    from aft_sdk.jsonl import read_jsonl

    check_out_dir(args.output)  # before anything is read or run
    items = list(read_jsonl(args.data))[: args.limit]
    if args.task == "exact_match":
        task: Any = ExactMatchTask(items)
    elif args.task == "multiple_choice":
        task = MultipleChoiceTask(items)
    else:
        judge = args.judge or args.aggregator
        if not judge:
            raise ConfigError("pairwise needs --judge SPEC (or --aggregator)")
        task = PairwiseJudgeTask(items, make_backend(judge))
    sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    agg_sampling = {"max_tokens": args.aggregator_max_tokens, "seed": args.seed}
    methods = [parse_method(m, proposers=args.proposer or None, aggregator=args.aggregator,
                            proposer_sampling={k: v for k, v in sampling.items() if v is not None},
                            aggregator_sampling={k: v for k, v in agg_sampling.items()
                                                 if v is not None})
               for m in args.methods]
    table = evaluate(task, methods, args.output, max_concurrency=args.concurrency,
                     progress=not args.no_progress)
    print(format_table(table))
    print(f"table and plots in {args.output}", file=sys.stderr)
    failed = [row["method"] for row in table if row["items"] == 0]
    if failed:  # a score of 0.0 over no items is not a result
        print(f"error: {', '.join(failed)} failed on every item; see "
              f"{args.output}/runs/*.errors.jsonl", file=sys.stderr)
        return 1
    return 0
