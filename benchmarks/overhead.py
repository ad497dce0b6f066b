"""Graph overhead: AggregateGraph vs a hand-written asyncio.gather loop, same calls.

Both run width 16, depth 3 (16 + 16 + 16 + 1 = 49 calls) against our local
OpenAI-compatible fault server, which answers every request after a fixed delay. The two
are alternated in one process so drift hits both alike. Target: ratio <= 1.05.

With ``--otel`` the graph runs traced: the OpenTelemetry SDK with a batch span processor
exporting OTLP/HTTP to a receiver on 127.0.0.1 (``aft_sdk.testing.otlp_receiver``), as an
app that turns tracing on would; the hand-written loop is not traced. Without it no tracer
provider is installed (the spans are the API's no-ops), as a user gets by default.

With ``--vllm FOLDER`` it also runs a graph on an in-process ``VLLMBackend`` and reports,
per layer, the prompt tokens prefilled against what per-output requests would prefill.

    python benchmarks/overhead.py --rounds 10 --delay 0.25
    python benchmarks/overhead.py --otel  # results/overhead_otel.json
    python benchmarks/overhead.py --vllm /path/to/hf-model-folder

Results go to ``benchmarks/results/overhead.json`` (``overhead_otel.json`` with ``--otel``;
``vllm_prefill.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path

from aft_sdk import AggregateGraph, OpenAIBackend, get_template
from aft_sdk.config import AGGREGATOR_SAMPLING, PROPOSER_SAMPLING
from aft_sdk.testing import FaultServer

RESULTS = Path(__file__).parent / "results"
QUESTION = [{"role": "user", "content": "Explain why the sky is blue."}]


async def hand_written(prop: OpenAIBackend, agg: OpenAIBackend, width: int, depth: int) -> str:
    """The same calls as the graph, with nothing but asyncio.gather."""
    template = get_template("aft-v1")
    sampling = PROPOSER_SAMPLING
    agg_sampling = AGGREGATOR_SAMPLING
    layer = await asyncio.gather(*(prop.generate(QUESTION, sampling=sampling) for _ in range(width)))
    texts = [g[0].text for g in layer]
    for index in range(1, depth + 1):
        prompt = template.render(QUESTION, texts)
        n = width if index < depth else 1
        layer = await asyncio.gather(*(agg.generate(prompt, sampling=agg_sampling) for _ in range(n)))
        texts = [g[0].text for g in layer]
    return texts[0]


async def overhead(rounds: int, delay: float, width: int, depth: int) -> dict:
    with FaultServer(delay_s=delay) as srv:
        # Default backend settings (adaptive concurrency, no cap), as a user gets them;
        # native_n=False: one HTTP request per output on both sides.
        prop = OpenAIBackend("p", base_url=srv.base_url, native_n=False)
        agg = OpenAIBackend("a", base_url=srv.base_url, native_n=False)
        graph = AggregateGraph(prop, agg, width=width, depth=depth)
        await graph.ainvoke(QUESTION)  # warm both paths (connections, imports)
        await hand_written(prop, agg, width, depth)
        graph_t, manual_t = [], []
        for _ in range(rounds):
            srv.reset()
            t0 = time.perf_counter()
            result = await graph.ainvoke(QUESTION)
            graph_t.append(time.perf_counter() - t0)
            graph_calls = srv.count()
            srv.reset()
            t0 = time.perf_counter()
            await hand_written(prop, agg, width, depth)
            manual_t.append(time.perf_counter() - t0)
            assert srv.count() == graph_calls == result.usage.generations
    g, m = statistics.median(graph_t), statistics.median(manual_t)
    return {
        "width": width, "depth": depth, "calls_per_run": graph_calls, "server_delay_s": delay,
        "rounds": rounds, "backend_settings": "defaults (adaptive concurrency, no cap)",
        "peak_in_flight": srv.max_in_flight("p"), "graph_median_s": round(g, 4), "hand_written_median_s": round(m, 4),
        "ratio": round(g / m, 4), "target_ratio": 1.05,
        "graph_s": [round(x, 4) for x in graph_t], "hand_written_s": [round(x, 4) for x in manual_t],
    }


async def vllm_prefill(folder: str, width: int, depth: int) -> dict:
    from aft_sdk import VLLMBackend

    backend = VLLMBackend(folder, max_model_len=1024, dtype="bfloat16")
    graph = AggregateGraph(backend, backend, width=width, depth=depth,
                           proposer_sampling={"max_tokens": 48, "seed": 0},
                           aggregator_sampling={"max_tokens": 48, "seed": 1})
    await graph.ainvoke(QUESTION)  # warm-up (engine start)
    calls = backend.engine.requests
    result = await graph.ainvoke(QUESTION)
    layers = []
    for layer in result.layers:
        per_prompt = max(r.prompt_tokens for r in layer.outputs)
        layers.append({
            "layer": layer.index, "outputs": len(layer.outputs),
            "prompt_tokens_prefilled": layer.usage.prompt_tokens,
            "prompt_tokens_if_one_request_per_output": per_prompt * len(layer.outputs),
            "distinct_prompts": sum(1 for r in layer.outputs if r.prompt_tokens > 0),
        })
    backend.shutdown()
    return {"width": width, "depth": depth, "engine_requests": backend.engine.requests - calls,
            "layers": layers}


def traced(args: argparse.Namespace, env: dict) -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from aft_sdk.testing.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as otlp:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{otlp.endpoint}/v1/traces")))
        trace.set_tracer_provider(provider)
        res = asyncio.run(overhead(args.rounds, args.delay, args.width, args.depth))
        provider.shutdown()  # flushes
        runs = sum(s["name"] == "invoke_agent aft-sdk" for s in otlp.spans)
        res.update(tracing="SDK TracerProvider, BatchSpanProcessor, OTLP/HTTP to 127.0.0.1",
                   spans_received=len(otlp.spans), traced_runs=runs)
    (RESULTS / "overhead_otel.json").write_text(json.dumps({**res, "env": env}, indent=2) + "\n")
    print(f"traced: graph {res['graph_median_s']}s vs hand-written {res['hand_written_median_s']}s:"
          f" ratio {res['ratio']}; {res['spans_received']} spans from {runs} runs received")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--delay", type=float, default=0.25, help="server delay per request (s)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--vllm", metavar="FOLDER", help="also measure prefill on VLLMBackend")
    ap.add_argument("--otel", action="store_true",
                    help="trace the graph (SDK, batch processor, OTLP/HTTP to a local receiver)")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {"python": platform.python_version(), "machine": platform.machine(),
           "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.otel:
        return traced(args, env)
    res = asyncio.run(overhead(args.rounds, args.delay, args.width, args.depth))
    (RESULTS / "overhead.json").write_text(json.dumps({**res, "env": env}, indent=2) + "\n")
    print(f"graph {res['graph_median_s']}s vs hand-written {res['hand_written_median_s']}s: "
          f"ratio {res['ratio']} (target <= 1.05)")
    if args.vllm:
        pre = asyncio.run(vllm_prefill(args.vllm, 4, 2))
        (RESULTS / "vllm_prefill.json").write_text(json.dumps({**pre, "env": env}, indent=2) + "\n")
        for row in pre["layers"]:
            print(row)
        print(f"engine requests per run: {pre['engine_requests']}")


if __name__ == "__main__":
    main()
