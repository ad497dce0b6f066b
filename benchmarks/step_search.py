"""Step-level search with process rewards, against whole-answer baselines and its-hub.

Task: chained arithmetic (:mod:`aft_sdk.eval.chain`, generated offline from a seed),
scored by exact match of the stated answer; the process reward is its programmatic step
verifier (it checks each stated intermediate result against the chain). Model: the
bundled SmolLM2-135M-Instruct behind llama-cpp-python's server (our searches continue
partial answers through ``/v1/completions`` with the GGUF's chat template).

At each budget N (paths per step, as its-hub counts its budget), on the same problems,
methods interleaved per problem (shuffled order): one sample; vote over N; best-of-N by
the verifier's score of the whole answer; beam search (N/2 beams x 2 expansions, the
best path); particle filtering (N particles, the best path); particle filtering whose
survivors the aggregator (the same base model, untrained) reads as drafts; its-hub
1.2.0's beam search and particle filtering with the same step scorer; and, at the
smallest N, our two searches with an LLM judge (the same model) as the step scorer.
Every method runs at the defaults a user gets (sampling, step length, separator, particle
weights ``softmax(logit(score))`` as its-hub's), with ``done: "Answer:"`` ending a path at
its stated answer and at most 6 steps. Differences that remain: llama-cpp-python's server
cannot continue an assistant message, so ours continue through ``/v1/completions`` with
the GGUF's template while its-hub's peer gets the steps so far in the user turn ("Write
only the next step", :mod:`its_hub_peer`); its-hub's beam opens ``N / beam_width`` paths
at the first step where ours opens ``N``. Generations count every call made (a judge's
too, failed ones too) and are reported beside accuracy.

    python benchmarks/step_search.py --problems 20 --budgets 4 8
    python benchmarks/step_search.py --table benchmarks/results/step_search.json

Results: ``benchmarks/results/step_search.json`` (per-problem rows included) and
``step_search.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from aft_sdk.backends.embedded_backend import bundled_model_path
from aft_sdk.config import GraphConfig
from aft_sdk.eval.chain import ChainTask, chain_problems, step_score
from aft_sdk.eval.stats import bootstrap_interval, paired_difference
from aft_sdk.graphs import AggregateGraph
from aft_sdk.testing.servers import LocalServer

RESULTS = Path(__file__).parent / "results"
SCORER = "import:aft_sdk.eval.chain:step_score"
MAX_STEPS = 6


def methods(server: LocalServer, n: int, judge: bool) -> dict[str, GraphConfig]:
    plain = {"type": "openai", "model": server.model, "base_url": server.base_url}
    stepper = {**plain, "continuation": "completions", "chat_template": str(bundled_model_path())}
    search = {"max_steps": MAX_STEPS, "done": "Answer:", "scorer": SCORER}
    out = {
        "single": GraphConfig(width=1, depth=0, proposers=[plain]),
        f"vote x{n}": GraphConfig(strategy="vote", width=n, proposers=[plain],
                                  vote={"extractor": "regex:(?i)answer\\s*:?\\s*(-?\\d+)"}),
        f"best-of-{n} (verifier)": GraphConfig(
            strategy="best-of-n", width=n, proposers=[plain],
            vote={"verifier": "import:aft_sdk.eval.chain:answer_score"}),
        f"beam {n // 2}x2": GraphConfig(strategy="beam", width=n // 2, proposers=[stepper],
                                        beam={**search, "expansions": 2, "final": "best"}),
        f"particles {n}": GraphConfig(strategy="particle-filtering", width=n, proposers=[stepper],
                                      particle_filtering={**search, "final": "best"}),
        f"particles {n} + aggregate": GraphConfig(
            strategy="particle-filtering", width=n, proposers=[stepper], aggregator=[plain],
            particle_filtering={**search, "final": "aggregate"}),
    }
    if judge:
        out[f"beam {n // 2}x2 (judge)"] = out[f"beam {n // 2}x2"].with_changes(
            beam={**search, "expansions": 2, "final": "best", "scorer": "judge"})
        out[f"particles {n} (judge)"] = out[f"particles {n}"].with_changes(
            particle_filtering={**search, "final": "best", "scorer": "judge"})
    return out


def its_hub(server: LocalServer, n: int) -> dict[str, Any]:
    """its-hub's searches with our step scorer (empty when its-hub is not installed)."""
    if importlib.util.find_spec("its_hub") is None:
        return {}
    from its_hub_peer import run_its_hub

    def peer(method: str) -> Any:
        async def ask(question: str) -> dict[str, Any]:
            return await asyncio.to_thread(
                run_its_hub, method, base_url=server.base_url, model=server.model,
                question=question, budget=n, step_scorer=step_score, max_steps=MAX_STEPS,
                step_max_tokens=256, temperature=0.7, done="Answer:", beam_width=n // 2,
                continuation="user")
        return ask

    return {f"its-hub beam {n // 2}x2": peer("beam"),
            f"its-hub particles {n}": peer("particle-filtering")}


async def run(server: LocalServer, items: list[dict], n: int, judge: bool) -> dict[str, Any]:
    task = ChainTask(items)
    graphs = {k: AggregateGraph.from_config(c) for k, c in methods(server, n, judge).items()}
    peers = its_hub(server, n)
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in [*graphs, *peers]}
    order = list(rows)
    for i, item in enumerate(items):
        random.Random(f"{n}:{i}").shuffle(order)
        for name in order:
            messages = task.prompt(item)
            t0 = time.perf_counter()
            if name in peers:
                out = await peers[name](messages[0]["content"])
                answer, gens, tokens = out["answer"], out["generations"], out["completion_tokens"]
            else:
                result = await graphs[name].ainvoke(messages)
                # Calls made (failed ones too, as its-hub counts them), a judge's included.
                answer, gens = result.answer, result.usage.generations + result.usage.failures
                tokens = result.usage.completion_tokens
            latency = time.perf_counter() - t0
            score = await task.score(item, answer)
            rows[name].append({"id": item["id"], "correct": score.value, "key": score.key,
                               "latency_s": round(latency, 3), "generations": gens,
                               "completion_tokens": tokens, "answer": answer[:400]})
        print(f"N={n}: problem {i + 1}/{len(items)}", flush=True)
    return rows


def summary(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    base = [r["correct"] for r in rows["single"]]
    vote = next(k for k in rows if k.startswith("vote"))
    out = {}
    for name, rs in rows.items():
        acc = [r["correct"] for r in rs]
        low, high = bootstrap_interval(acc)
        out[name] = {
            "accuracy": round(statistics.mean(acc), 3), "low": round(low, 3),
            "high": round(high, 3),
            "vs_single": {k: round(v, 3) for k, v in paired_difference(acc, base).items()},
            "vs_vote": {k: round(v, 3) for k, v in paired_difference(
                acc, [r["correct"] for r in rows[vote]]).items()},
            "median_latency_s": round(statistics.median(r["latency_s"] for r in rs), 3),
            "generations": round(statistics.mean(r["generations"] or 0 for r in rs), 2),
            "completion_tokens": round(statistics.mean(r["completion_tokens"] or 0 for r in rs), 1),
        }
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = results["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(6.5 * len(budgets), 5), squeeze=False)
    for ax, n in zip(axes[0], budgets):
        s = results["summary"][str(n)]
        names = list(s)
        acc = [s[k]["accuracy"] for k in names]
        err = [[a - s[k]["low"] for a, k in zip(acc, names)],
               [s[k]["high"] - a for a, k in zip(acc, names)]]
        lat = [s[k]["median_latency_s"] for k in names]
        ax.scatter(lat, acc)
        ax.errorbar(lat, acc, yerr=err, fmt="none", alpha=0.4)
        for x, y, k in zip(lat, acc, names):
            ax.annotate(k, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("median latency per problem (s, log)")
        ax.set_ylabel("exact match (95% bootstrap interval)")
        ax.set_title(f"budget N={n}, {results['setup']['problems']} chained-arithmetic problems")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: dict[str, Any]) -> str:
    """The results as the Markdown table of docs/benchmarks.md."""
    lines = ["| N | method | exact match [95%] | vs one sample | vs vote | median s | calls "
             "| completion tokens |", "|---|---|---|---|---|---:|---:|---:|"]
    for n in results["budgets"]:
        for name, r in results["summary"][str(n)].items():
            d, v = r["vs_single"], r["vs_vote"]
            lines.append(f"| {n} | {name} | {r['accuracy']:.2f} [{r['low']:.2f}, {r['high']:.2f}] "
                         f"| {d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] "
                         f"| {v['difference']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}] "
                         f"| {r['median_latency_s']:.1f} | {r['generations']:.1f} "
                         f"| {r['completion_tokens']:.0f} |")
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, help="print a results file as a Markdown table")
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--budgets", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "step_search.json")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    items = chain_problems(args.problems, seed=args.seed)
    results: dict[str, Any] = {"budgets": args.budgets, "rows": {}, "summary": {}}
    t0 = time.perf_counter()
    with LocalServer.llama_cpp(bundled_model_path(), alias="smollm2", n_ctx=2048) as server:
        for n in args.budgets:
            rows = await run(server, items, n, judge=n == min(args.budgets))
            results["rows"][str(n)] = rows
            results["summary"][str(n)] = summary(rows)
            print(json.dumps(results["summary"][str(n)], indent=1), flush=True)
    results["setup"] = {"problems": len(items), "seed": args.seed, "max_steps": MAX_STEPS,
                        "model": "SmolLM2-135M-Instruct Q4_1, llama-cpp-python server",
                        "sampling": "defaults (temperature 0.7, 512 tokens per answer, 256 "
                                    "per step), unseeded", "minutes": round(
                                        (time.perf_counter() - t0) / 60, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
