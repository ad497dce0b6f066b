"""Strategies side by side: latency, calls and accuracy per answer, and tail latency.

Part 1 runs every strategy with its defaults on one llama.cpp server (the bundled
SmolLM2-135M model) over short held-out questions (``recipes/data/easy_questions.jsonl``,
keyword scoring), the strategies interleaved question by question so drift hits all
alike: single, self-consistency (vote, 4), adaptive vote (up to 4, rounds of 2),
propose-and-aggregate 3x1, adaptive propose-and-aggregate 3x1 (skips the aggregation
when the drafts agree), and quorum 3-of-4 x1. With ``its-hub`` importable, its
self-consistency (budget 4) runs in the same loop.

Part 2 (tail latency) uses our fault server: four proposers, one of them slow on a
share of calls; propose-and-aggregate 4x1 waiting for all against quorum 3-of-4.

    python benchmarks/strategies.py --questions 12 --passes 3

Results go to ``benchmarks/results/strategies.json`` and ``strategies.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

from aft_sdk.backends.embedded_backend import bundled_model_path
from aft_sdk.config import GraphConfig
from aft_sdk.eval.tasks import KeywordTask
from aft_sdk.graphs import AggregateGraph
from aft_sdk.jsonl import read_jsonl
from aft_sdk.testing import FaultServer
from aft_sdk.testing.servers import LocalServer

RESULTS = Path(__file__).parent / "results"
QUESTIONS = Path(__file__).resolve().parents[1] / "recipes" / "data" / "easy_questions.jsonl"

STRATEGIES: dict[str, dict[str, Any]] = {
    "single": {"width": 1, "depth": 0},
    "vote x4": {"strategy": "vote", "width": 4},
    "adaptive vote <=4": {"strategy": "vote", "width": 4, "adaptive": {"round_size": 2}},
    "P&A 3x1": {"width": 3, "depth": 1},
    "adaptive P&A 3x1": {"width": 3, "depth": 1, "adaptive": {}},
    "quorum 3-of-4 x1": {"width": 4, "depth": 1, "quorum": 3},
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_ours(server: LocalServer, items: list[dict], passes: int) -> dict[str, Any]:
    backend = {"type": "openai", "model": server.model, "base_url": server.base_url}
    graphs = {name: AggregateGraph.from_config(GraphConfig(
        proposers=[backend], aggregator=[backend], **shape)) for name, shape in STRATEGIES.items()}
    task = KeywordTask(items)
    stats: dict[str, dict[str, list[float]]] = {
        n: {"latency": [], "score": [], "generations": [], "tokens": []} for n in graphs}
    peers = _its_hub(server)
    for name in peers:
        stats[name] = {"latency": [], "score": [], "generations": [], "tokens": []}
    await graphs["single"].ainvoke("Warm up.")
    order = [*graphs, *peers]
    for p in range(passes):
        for i, item in enumerate(items):
            random.Random(f"{p}:{i}").shuffle(order)  # no strategy always goes first
            for name in order:
                t0 = time.perf_counter()
                s = stats[name]
                if name in peers:  # its calls and tokens are not reported to us
                    answer, calls, tokens = await peers[name](task.prompt(item)), 0, 0
                else:
                    result = await graphs[name].ainvoke(task.prompt(item))
                    answer = result.answer
                    calls, tokens = result.usage.generations, result.usage.total_tokens
                s["latency"].append(time.perf_counter() - t0)
                s["score"].append((await task.score(item, answer)).value)
                s["generations"].append(calls)
                s["tokens"].append(tokens)
            print(f"pass {p + 1}/{passes}, question {i + 1}/{len(items)}", flush=True)
    return {name: {"median_s": round(statistics.median(s["latency"]), 3),
                   "p95_s": round(pct(s["latency"], 0.95), 3),
                   "accuracy": round(statistics.mean(s["score"]), 3),
                   "generations": round(statistics.mean(s["generations"]), 2),
                   "tokens": round(statistics.mean(s["tokens"]), 1),
                   "answers": len(s["latency"])}
            for name, s in stats.items()}


def _its_hub(server: LocalServer) -> dict[str, Any]:
    """its-hub's self-consistency and adaptive self-consistency (budget 4) against the
    same server, with our proposers' default sampling; empty if not installed (run
    with ``--its-hub-python`` pointing at an environment that has it, or install it)."""
    try:
        from its_hub.core.algorithms.adaptive_self_consistency import AdaptiveSelfConsistency
        from its_hub.core.algorithms.self_consistency import SelfConsistency
        from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel
    except ImportError:
        return {}
    lm = OpenAICompatibleLanguageModel(endpoint=server.base_url, api_key="none",
                                       model_name=server.model, temperature=0.7, max_tokens=512)

    def runner(algorithm: Any) -> Any:
        async def ask(messages: list[dict[str, str]]) -> str:
            reply = await algorithm.ainfer(lm, messages, budget=4)
            return str(reply.get("content") or "") if isinstance(reply, dict) else str(reply)
        return ask

    return {"its-hub SC (budget 4)": runner(SelfConsistency()),
            "its-hub adaptive SC (budget 4)": runner(AdaptiveSelfConsistency())}


async def tail_latency(rounds: int, slow_share: float, slow_s: float) -> dict[str, Any]:
    """4 proposers, one slow on ``slow_share`` of its calls: wait-for-all vs 3-of-4."""
    out: dict[str, Any] = {}
    with FaultServer(delay_s=0.05) as srv:
        def shape(**kw: Any) -> AggregateGraph:
            props = [{"type": "openai", "model": m, "base_url": srv.base_url}
                     for m in ("p1", "p2", "p3", "slow")]
            return AggregateGraph.from_config(GraphConfig(
                proposers=props, aggregator=[{"type": "openai", "model": "a",
                                              "base_url": srv.base_url}], width=4, **kw))
        graphs = {"wait for all 4": shape(), "quorum 3-of-4": shape(quorum=3)}
        rng = random.Random(0)
        plan = ["delay:%s" % slow_s if rng.random() < slow_share else "ok" for _ in range(rounds)]
        times: dict[str, list[float]] = {name: [] for name in graphs}
        answers: dict[str, list[str]] = {name: [] for name in graphs}
        for action in plan:
            for name, graph in graphs.items():
                srv.script("slow", [action])
                t0 = time.perf_counter()
                result = await graph.ainvoke("hi")
                times[name].append(time.perf_counter() - t0)
                answers[name].append(result.answer)
        for name in graphs:
            out[name] = {"median_s": round(statistics.median(times[name]), 3),
                         "p95_s": round(pct(times[name], 0.95), 3)}
        out["p95_ratio"] = round(out["wait for all 4"]["p95_s"] / out["quorum 3-of-4"]["p95_s"], 2)
        out["same_answers"] = answers["wait for all 4"] == answers["quorum 3-of-4"]
        out["setup"] = {"rounds": rounds, "slow_share": slow_share, "slow_s": slow_s}
    return out


def plot(table: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in table.items():
        ax.scatter(row["median_s"], row["accuracy"], s=30 + 20 * row["generations"])
        calls = f" ({row['generations']:g} calls)" if row["generations"] else ""
        ax.annotate(f"{name}{calls}", (row["median_s"], row["accuracy"]),
                    fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("median seconds per answer (llama.cpp, 2 CPU cores)")
    ax.set_ylabel("accuracy (keywords)")
    ax.set_title("Strategies on the bundled SmolLM2-135M")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--tail-rounds", type=int, default=40)
    args = ap.parse_args()
    items = [dict(q) for q in read_jsonl(QUESTIONS)][: args.questions]
    with LocalServer.llama_cpp(bundled_model_path(), n_ctx=2048) as server:
        table = asyncio.run(run_ours(server, items, args.passes))
    tail = asyncio.run(tail_latency(args.tail_rounds, slow_share=0.3, slow_s=1.0))
    RESULTS.mkdir(exist_ok=True)
    out = {"strategies": table, "tail_latency": tail,
           "setup": {"questions": len(items), "passes": args.passes, "model": "SmolLM2-135M Q4_1",
                     "server": "llama-cpp-python", "python": platform.python_version(),
                     "defaults": "each strategy with its defaults (role sampling, no seed)",
                     "its_hub": "its-hub 1.2.0 in its own venv; it imports backoff without "
                                "declaring it (pip install backoff); its calls and tokens "
                                "are not reported, so they read 0"}}
    (RESULTS / "strategies.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(table, RESULTS / "strategies.png")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
