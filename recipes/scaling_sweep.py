"""Sweep width x depth of propose-and-aggregate on any backends; table and plots.

Default grid: width in {1, 2, 4, 8} x depth in {1, 2, 3}, plus a single-sample baseline,
on seeded arithmetic problems (or your own JSONL with id, question, answer). Token cost
per item comes from the traces, so the quality-vs-compute plot is honest about cost.

    python recipes/scaling_sweep.py --out runs/sweep  # not run in the suite: the whole sweep on the embedded model (hours)
    # not run in the suite: needs your server and a trained aggregator for vLLM
    python recipes/scaling_sweep.py --proposer http://127.0.0.1:8080/v1#smollm2 \\
        --aggregator vllm:./aggregator --data problems.jsonl --out runs/sweep
    python recipes/scaling_sweep.py --reduced --out /tmp/sweep  # suite: test_scaling_sweep_reduced
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aft_sdk.eval import ExactMatchTask, Method, evaluate, format_table
from aft_sdk.eval.synthetic import arithmetic_problems
from aft_sdk.jsonl import read_jsonl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (resumable)")
    ap.add_argument("--proposer", action="append", metavar="SPEC",
                    help="proposer backend spec(s); default: the embedded model")
    ap.add_argument("--aggregator", metavar="SPEC", help="aggregator spec; default: embedded")
    ap.add_argument("--data", help="JSONL with id, question, answer (default: generated)")
    ap.add_argument("--items", type=int, default=30, help="generated problems (default 30)")
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-tokens", type=int, default=64, help="cap per generation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--reduced", action="store_true",
                    help="widths 1 2, depth 1, 3 problems, short outputs (for tests)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reduced:
        args.widths, args.depths, args.items, args.max_tokens = [1, 2], [1], 3, 24
    items = list(read_jsonl(args.data)) if args.data else arithmetic_problems(args.items, seed=args.seed)
    task = ExactMatchTask(items)
    common = dict(
        proposer_sampling={"temperature": 0.7, "top_p": 0.95, "max_tokens": args.max_tokens,
                           "seed": args.seed},
        aggregator_sampling={"temperature": 0.0, "max_tokens": args.max_tokens + 16},
    )
    methods = [Method("single", "single", proposers=args.proposer, graph_kwargs=common)]
    methods += [
        Method(f"pa:{w}x{d}", "propose_aggregate", width=w, depth=d, proposers=args.proposer,
               aggregator=args.aggregator, graph_kwargs=common)
        for d in args.depths for w in args.widths
    ]
    table = evaluate(task, methods, Path(args.out), max_concurrency=args.concurrency)
    print(format_table(table))
    print(f"table, runs and plots in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
