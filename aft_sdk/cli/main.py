"""The ``aft`` command: ``run``, ``batch``, ``generate``, ``data build``, ``train``, ``eval``, ``serve``,
``presets``.

With no backend named, everything runs on the embedded SmolLM2 model: no key, no GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence

from aft_sdk.cli.args import (
    SPEC_HELP,
    add_graph_args,
    add_sampling_args,
    build_graph,
    executor_of,
    graph_config,
    user_errors,
)
from aft_sdk import tracing
from aft_sdk.runner import DEFAULT_CONCURRENCY
from aft_sdk.lifecycle import exit_on_sigterm

def _call(args: argparse.Namespace) -> dict | None:
    """The run's tools and response format from ``--tools`` / ``--json-schema`` files."""
    from pathlib import Path

    from aft_sdk.errors import ConfigError

    def load(path: str, what: str) -> object:
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{what} {path!r} is not a readable JSON file: {e}") from e

    call: dict = {}
    if args.tools:
        call["tools"] = load(args.tools, "--tools")
    if args.json_schema:
        call["response_format"] = {"type": "json_schema", "json_schema": {
            "name": Path(args.json_schema).stem, "schema": load(args.json_schema,
                                                                "--json-schema")}}
    return call or None


def cmd_run(args: argparse.Namespace) -> int:
    graph = build_graph(args)
    call = _call(args)
    result = None
    show_tokens = args.stream and not args.json
    with Waiting() as waiting:
        for event in graph.stream(args.question, call=call):
            waiting.saw(event)
            if event["event"] == "token" and show_tokens:
                print(event["text"], end="", flush=True)
            elif event["event"] == "layer" and show_tokens:
                print(f"[layer {event['layer']}: {event['ok']} ok, {event['failed']} failed]",
                      file=sys.stderr)
            elif event["event"] == "result":
                result = event["result"]
    assert result is not None  # a stream always ends with its result, or raises
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return 0
    if result.tool_calls:
        print(json.dumps(result.tool_calls, indent=2, ensure_ascii=False))
    else:
        print() if show_tokens else print(result.answer)
    print(result.summary(), file=sys.stderr)
    return 0


class Waiting:
    """Says on stderr which layer a run is waiting for when it has been quiet a while
    (a slow or unreachable server otherwise looks like a hang)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.layer = 0
        self.since = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def saw(self, event: dict) -> None:
        if event["event"] == "layer":
            self.layer = event["layer"] + 1
        self.since = time.monotonic()

    def _tick(self) -> None:
        said = 0  # multiples of every_s already reported for the current quiet spell
        since = self.since
        while not self._done.wait(0.5):
            if self.since != since:
                said, since = 0, self.since
            quiet = time.monotonic() - since
            if quiet >= (said + 1) * self.every_s:
                said = int(quiet // self.every_s)
                what = "the proposals" if self.layer == 0 else f"aggregation layer {self.layer}"
                print(f"[waiting for {what}: {said * self.every_s:.0f} s so far]",
                      file=sys.stderr, flush=True)

    def __enter__(self) -> Waiting:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()


def cmd_batch(args: argparse.Namespace) -> int:
    from aft_sdk.batch import run_batch

    # On Ray the graph is built in the workers only (a vLLM graph needs no vLLM here).
    graph = graph_config(args) if args.ray else build_graph(args)
    s = run_batch(graph, args.input, args.output, errors_path=args.errors,
                  max_concurrency=args.concurrency, progress=not args.no_progress,
                  executor=executor_of(args), record=args.record)
    print(
        f"{s.written} written, {s.skipped} already done, {s.failed} failed, "
        f"{s.bad_rows} bad rows (of {s.total}); errors: {s.errors_path}",
        file=sys.stderr,
    )
    if s.changed:
        print(f"warning: {s.changed} ids already in {args.output} were answered for a "
              "different question than the input has now; their old rows were kept. Write "
              "to a new output file, or delete those rows, to answer the new questions",
              file=sys.stderr)
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


def cmd_strategies(args: argparse.Namespace) -> int:
    from aft_sdk.errors import ConfigError
    from aft_sdk.plugins import get_strategy, strategy_names, strategy_targets

    targets = strategy_targets()
    for name in strategy_names():
        try:
            strategy = get_strategy(name)
        except ConfigError as e:  # one broken plug-in does not hide the others
            print(f"{name}: cannot be loaded ({e})")
            continue
        print(f"{name}: {strategy.summary}  [{targets[name]}]")
        if strategy.settings is not None:
            for field, info in strategy.settings.model_fields.items():
                print(f"    {name.replace('-', '_')}.{field} = {info.default!r}"
                      f"{'  ' + info.description if info.description else ''}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aft", description="Propose-and-aggregate test-time compute and AFT training."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks for every error (also AFT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="propose-and-aggregate on one question")
    p.add_argument("question")
    add_graph_args(p)
    p.add_argument("--json", action="store_true", help="print the whole result with its trace")
    p.add_argument("--stream", action="store_true", help="print the answer as it is written")
    p.add_argument("--tools", metavar="JSON",
                   help="a JSON file of OpenAI function tools offered to every draft; an "
                        "answer that calls them is printed as JSON tool calls")
    p.add_argument("--json-schema", metavar="JSON",
                   help="a JSON schema file the answer must meet (structured output)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("batch", help="run a graph over a JSONL file, resumably")
    p.add_argument("input", help="JSONL rows with id and messages/question/prompt")
    p.add_argument("-o", "--output", required=True, help="JSONL output (appended, resumable)")
    p.add_argument("--errors", help="errors JSONL (default OUTPUT.errors.jsonl)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                   help=f"rows in flight (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--record", metavar="DIR", help="also keep each answered run in DIR as a "
                   "training record (aft data build records DIR)")
    p.add_argument("--ray", action="store_true",
                   help="run the graphs in Ray actors (pip install 'aft-sdk[ray]')")
    p.add_argument("--workers", type=int, default=2, help="Ray actors with --ray (default 2)")
    p.add_argument("--ray-address", help="Ray cluster to join (default RAY_ADDRESS or local)")
    p.add_argument("--ray-gpus", type=float, default=0,
                   help="GPUs per Ray actor, for a local vLLM engine inside it (default 0)")
    add_graph_args(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("generate", help="sample from one backend, no aggregation")
    p.add_argument("question")
    p.add_argument("--backend", default="embedded", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("-n", type=int, default=1, help="outputs to sample")
    p.add_argument("--json", action="store_true", help="print generations with usage")
    add_sampling_args(p)
    p.set_defaults(func=cmd_generate)

    from aft_sdk.cli import data, evaluate, serve, train, view

    data.register(sub)
    evaluate.register(sub)
    serve.register(sub)
    train.register(sub)
    view.register(sub)

    p = sub.add_parser("strategies", help="list strategies (plug-ins too) and their settings")
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("presets", help="list aggregation prompt presets")
    p.add_argument("--show", metavar="NAME", help="print one preset's template")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aft`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    exit_on_sigterm()  # a `timeout` or a scheduler's SIGTERM stops engines cleanly
    parser = make_parser()
    known, _ = parser.parse_known_args(argv)
    if known.command == "train":  # TRL's parser reads its flags and --config (see cli/train)
        from aft_sdk.cli.train import train_main

        return train_main(argv[argv.index("train") + 1:])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    with user_errors(args.debug):
        # OTEL_EXPORTER_OTLP_ENDPOINT set: the run's spans go there (flushed at the end).
        provider = tracing.configure_from_env()
        try:
            return int(args.func(args) or 0)
        finally:
            if provider is not None:
                provider.shutdown()
    return 2  # user_errors printed the error


if __name__ == "__main__":
    sys.exit(main())
