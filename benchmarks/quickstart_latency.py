"""Quick-start latency: ``aft run``'s default graph, warm, with the shipped adapter vs another.

The default graph (embedded SmolLM2-135M proposing 3 drafts, the bundled model plus an
AFT adapter aggregating; default sampling, unseeded, as a user gets it) answers the
README's question ``--rounds`` times per adapter, alternated in one process so drift hits
both alike, after one warm-up run each. Reported: median and p90 seconds, the median
ratio (shipped / baseline; the quick-start bar is <= 2), and the answers' lengths.

    python benchmarks/quickstart_latency.py --baseline runs/adapter_v1/smollm2-135m-aft.gguf

Results go to ``benchmarks/results/quickstart_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from aft_sdk import AggregateGraph, EmbeddedBackend

RESULTS = Path(__file__).parent / "results"
QUESTION = "What is the capital of France? Answer in one sentence."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="the adapter to compare with (GGUF)")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    proposer = EmbeddedBackend()
    graphs = {"shipped": AggregateGraph(proposer, EmbeddedBackend(lora_path="bundled")),
              "baseline": AggregateGraph(proposer, EmbeddedBackend(lora_path=args.baseline))}
    times: dict[str, list[float]] = {k: [] for k in graphs}
    lengths: dict[str, list[int]] = {k: [] for k in graphs}
    for name, graph in graphs.items():
        graph.invoke(QUESTION)  # load the model and adapter, warm the caches
    for i in range(args.rounds):
        for name, graph in graphs.items():
            start = time.perf_counter()
            result = graph.invoke(QUESTION)
            times[name].append(time.perf_counter() - start)
            lengths[name].append(len(result.answer))
        print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
              flush=True)

    def stats(v: list[float]) -> dict[str, float]:
        return {"median_s": round(statistics.median(v), 3),
                "p90_s": round(sorted(v)[int(0.9 * (len(v) - 1))], 3)}

    out = {"question": QUESTION, "rounds": args.rounds, "machine": platform.machine(),
           "cpus": __import__("os").cpu_count(), "baseline": str(args.baseline),
           **{k: {**stats(v), "answer_chars_mean": round(statistics.mean(lengths[k]), 1)}
              for k, v in times.items()},
           "median_ratio": round(statistics.median(times["shipped"]) / statistics.median(times["baseline"]), 3),
           "target": "median ratio <= 2 (the quick-start bar)"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quickstart_latency.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
