"""The ``aft`` command: ``run``, ``batch``, ``generate``, ``data build``, ``train``, ``eval``,
``presets``.

With no backend named, everything runs on the embedded SmolLM2 model: no key, no GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from aft_sdk.errors import AftError

SPEC_HELP = (
    "backend spec: 'embedded', 'embedded:FILE.gguf', 'vllm:MODEL_OR_FOLDER[+lora:ADAPTER]', "
    "'openai:MODEL' or 'http://HOST:PORT/v1#MODEL' (repeat to mix several)"
)


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, help="proposer temperature (default 0.7)")
    g.add_argument("--top-p", type=float, help="proposer top_p")
    g.add_argument("--max-tokens", type=int, help="cap on each proposal's tokens (default 512)")
    g.add_argument("--aggregator-temperature", type=float, help="aggregator temperature")
    g.add_argument("--aggregator-max-tokens", type=int,
                   help="cap on each aggregation's tokens (default 1024)")
    g.add_argument("--seed", type=int, help="base seed for proposers and aggregators")


def _add_graph_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("graph")
    g.add_argument("--config", help="graph YAML (GraphConfig); flags below override it")
    g.add_argument("--width", type=int, help="proposals per run (default 3)")
    g.add_argument("--depth", type=int, help="aggregation layers (default 1)")
    g.add_argument("--proposer", action="append", metavar="SPEC", help=SPEC_HELP)
    g.add_argument("--aggregator", action="append", metavar="SPEC", help=SPEC_HELP)
    g.add_argument("--preset", help="aggregation prompt preset: aft-v1, moa-v1, select-v1")
    g.add_argument("--template-file", help="custom aggregation template (uses {proposals})")
    g.add_argument("--shuffle", action="store_true", default=None,
                   help="shuffle proposal order per aggregator (seeded)")
    g.add_argument("--min-proposals", type=int, help="proposals that must succeed (default 1)")
    g.add_argument("--deadline", type=float, help="seconds a whole run may take")
    _add_sampling_args(p)


def _sampling(args: argparse.Namespace, base: Any, *, aggregator: bool) -> Any:
    if aggregator:
        over = {"temperature": args.aggregator_temperature,
                "max_tokens": args.aggregator_max_tokens, "seed": args.seed}
    else:
        over = {"temperature": args.temperature, "top_p": args.top_p,
                "max_tokens": args.max_tokens, "seed": args.seed}
    return base.merged(**over)


def build_graph(args: argparse.Namespace) -> Any:
    """An AggregateGraph from a YAML config (if any) and the command-line flags."""
    from pathlib import Path

    from aft_sdk.config import GraphConfig, load_yaml
    from aft_sdk.graphs import AggregateGraph

    cfg = load_yaml(args.config, GraphConfig) if args.config else GraphConfig()
    kwargs: dict[str, Any] = {
        k: v for k, v in {
            "width": args.width, "depth": args.depth, "preset": args.preset,
            "shuffle": args.shuffle, "min_proposals": args.min_proposals,
            "deadline_s": args.deadline,
        }.items() if v is not None
    }
    if args.template_file:
        kwargs["template"] = Path(args.template_file).read_text(encoding="utf-8")
    if args.proposer:
        kwargs["proposers"] = args.proposer
    if args.aggregator:
        kwargs["aggregator"] = args.aggregator
    kwargs["proposer_sampling"] = _sampling(args, cfg.proposer_sampling, aggregator=False)
    kwargs["aggregator_sampling"] = _sampling(args, cfg.aggregator_sampling, aggregator=True)
    return AggregateGraph.from_config(cfg, **kwargs)


def cmd_run(args: argparse.Namespace) -> int:
    graph = build_graph(args)
    if args.stream and not args.json:
        result = None
        for event in graph.stream(args.question):
            if event["event"] == "token":
                print(event["text"], end="", flush=True)
            elif event["event"] == "layer":
                print(f"[layer {event['layer']}: {event['ok']} ok, {event['failed']} failed]",
                      file=sys.stderr)
            elif event["event"] == "result":
                result = event["result"]
        print()
    else:
        result = graph.invoke(args.question)
        if args.json:
            print(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False))
            return 0
        print(result.answer)
    if result is not None:
        print(result.summary(), file=sys.stderr)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from aft_sdk.batch import run_batch

    graph = build_graph(args)
    s = run_batch(graph, args.input, args.output, errors_path=args.errors,
                  max_concurrency=args.concurrency, progress=not args.no_progress)
    print(
        f"{s.written} written, {s.skipped} already done, {s.failed} failed, "
        f"{s.bad_rows} bad rows (of {s.total}); errors: {s.errors_path}",
        file=sys.stderr,
    )
    return 0 if not (s.failed or s.bad_rows) else 1


def cmd_generate(args: argparse.Namespace) -> int:
    from aft_sdk.backends import make_backend
    from aft_sdk.config import SamplingConfig

    backend = make_backend(args.backend)
    sampling = SamplingConfig().merged(temperature=args.temperature, top_p=args.top_p,
                                       max_tokens=args.max_tokens, seed=args.seed)
    gens = backend.generate_sync(args.question, n=args.n, sampling=sampling)
    if args.json:
        print(json.dumps([g.model_dump() for g in gens], indent=2, ensure_ascii=False))
    else:
        for i, g in enumerate(gens):
            if len(gens) > 1:
                print(f"--- {i + 1} ---")
            print(g.text)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from aft_sdk.prompts import PRESETS

    for name, t in PRESETS.items():
        if args.show and name != args.show:
            continue
        print(f"== {name} (placement: {t.placement}{', selects' if t.selects else ''})")
        if args.show:
            print(t.template)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aft", description="Propose-and-aggregate test-time compute and AFT training."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="propose-and-aggregate on one question")
    p.add_argument("question")
    _add_graph_args(p)
    p.add_argument("--json", action="store_true", help="print the whole result with its trace")
    p.add_argument("--stream", action="store_true", help="print the answer as it is written")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("batch", help="run a graph over a JSONL file, resumably")
    p.add_argument("input", help="JSONL rows with id and messages/question/prompt")
    p.add_argument("-o", "--output", required=True, help="JSONL output (appended, resumable)")
    p.add_argument("--errors", help="errors JSONL (default OUTPUT.errors.jsonl)")
    p.add_argument("--concurrency", type=int, default=4, help="rows in flight (default 4)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_graph_args(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("generate", help="sample from one backend, no aggregation")
    p.add_argument("question")
    p.add_argument("--backend", default="embedded", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("-n", type=int, default=1, help="outputs to sample")
    p.add_argument("--json", action="store_true", help="print generations with usage")
    _add_sampling_args(p)
    p.set_defaults(func=cmd_generate)

    from aft_sdk.cli.data import add_data_parser
    from aft_sdk.cli.evaluate import add_eval_parser

    add_data_parser(sub)
    add_eval_parser(sub, SPEC_HELP)
    sub.add_parser("train", help="fine-tune an aggregator (aft train --help for all flags)",
                   add_help=False)

    p = sub.add_parser("presets", help="list aggregation prompt presets")
    p.add_argument("--show", metavar="NAME", help="print one preset's template")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aft`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # its flags are TrainingArguments', parsed by HfArgumentParser
        from aft_sdk.cli.train import train_main

        return train_main(argv[1:])
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except AftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
