"""AggregatorGRPOTrainer vs plain TRL GRPOTrainer: steps/s and tokens/s on the same data.

Both train the same model (the bundled SmolLM2-135M, dequantised; LoRA r=16) on the same
draft sets with the same GRPO arguments and the same reward (the ``number`` verifier):
TRL's run gets the prompts our trainer renders (the aft-v1 aggregation prompt over each
row's drafts) as a ready dataset, so the difference is our wrapper alone (rows, the
render-on-access dataset, reward plumbing). Our run keeps every row (``hard_ratio`` unset)
so both see the same prompts in the same seeded order. Each run is its own subprocess;
the two alternate for ``--rounds`` rounds. Target: ratio (ours / TRL) >= 0.95.

    python benchmarks/grpo_throughput.py --rounds 2 --steps 6

Data: the study's SFT-model draft sets (``recipes/results/grpo_aggregator/data``), or
``--rows FILE``. Results: ``benchmarks/results/grpo_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROWS = (Path(__file__).parent.parent / "recipes" / "results" / "grpo_aggregator" / "data"
        / "aft_rows_sft_drafts.jsonl")


def common_args(out: str, steps: int) -> dict:
    # The study's GRPO settings (recipes/grpo_aggregator.py FULL), for both runs.
    return dict(output_dir=out, max_steps=steps, per_device_train_batch_size=8,
                num_generations=4, max_completion_length=64, learning_rate=2e-4, beta=0.0,
                use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                logging_steps=1, save_strategy="no", seed=0)


def run_one(which: str, steps: int, rows_path: str) -> dict:
    from peft import LoraConfig

    from aft_sdk.backends.embedded_backend import bundled_model_path
    from aft_sdk.trainers import AftRow, load_gguf, read_jsonl
    from aft_sdk.trainers.rewards import correctness_reward

    rows = [AftRow.model_validate(r) for r in read_jsonl(rows_path)]
    model, tok = load_gguf(bundled_model_path())
    out = tempfile.mkdtemp()
    if which == "ours":
        from aft_sdk.trainers import AggregatorGRPOConfig, AggregatorGRPOTrainer

        args = AggregatorGRPOConfig(model_name_or_path="embedded", dataset_path=rows_path,
                                    use_lora=True, lora_r=16, lora_alpha=32, hard_ratio=None,
                                    **common_args(out, steps))
        trainer = AggregatorGRPOTrainer(args, model=model, tokenizer=tok, train_rows=rows)
    else:
        import datasets
        from trl import GRPOConfig, GRPOTrainer

        from aft_sdk import get_template

        template = get_template("aft-v1")
        ds = datasets.Dataset.from_list([
            {"prompt": template.render(r.messages, r.proposals), "reference": r.target}
            for r in rows])
        tok.pad_token = tok.pad_token or tok.eos_token
        trainer = GRPOTrainer(model=model, reward_funcs=[correctness_reward("number")],
                              args=GRPOConfig(**common_args(out, steps)), train_dataset=ds,
                              processing_class=tok,
                              peft_config=LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32,
                                                     lora_dropout=0.05,
                                                     target_modules="all-linear"))
    t0 = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "reward" in h]
    completion_tokens = sum(h["completions/mean_length"] * 8 for h in logs)
    return {"which": which, "train_s": elapsed, "steps_per_s": steps / elapsed,
            "tokens_per_s": logs[-1]["num_tokens"] / elapsed,
            "completion_tokens_per_s": completion_tokens / elapsed,
            "mean_reward": statistics.mean(h["reward"] for h in logs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rows", default=str(ROWS), help="AFT rows with drafts and targets")
    ap.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_one(args.child, args.steps, args.rows)))
        return
    if not Path(args.rows).is_file():
        sys.exit(f"no rows at {args.rows}: run recipes/grpo_aggregator.py first or give --rows")
    runs = []
    for r in range(args.rounds):
        for which in ("ours", "trl") if r % 2 == 0 else ("trl", "ours"):
            proc = subprocess.run([sys.executable, __file__, "--child", which, "--steps",
                                   str(args.steps), "--rows", args.rows],
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{which} run failed:\n{proc.stderr[-3000:]}")
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            runs.append(json.loads(line[7:]))
            print(runs[-1], flush=True)

    def med(which: str, key: str) -> float:
        return statistics.median(x[key] for x in runs if x["which"] == which)

    summary = {
        "model": "SmolLM2-135M-Instruct (GGUF, dequantised), LoRA r=16",
        "data": args.rows, "steps": args.steps, "rounds": args.rounds,
        "settings": {k: v for k, v in common_args("-", args.steps).items()
                     if k not in ("output_dir",)},
        "ours_steps_per_s": round(med("ours", "steps_per_s"), 5),
        "trl_steps_per_s": round(med("trl", "steps_per_s"), 5),
        "steps_ratio": round(med("ours", "steps_per_s") / med("trl", "steps_per_s"), 4),
        "ours_tokens_per_s": round(med("ours", "tokens_per_s"), 2),
        "trl_tokens_per_s": round(med("trl", "tokens_per_s"), 2),
        "tokens_ratio": round(med("ours", "tokens_per_s") / med("trl", "tokens_per_s"), 4),
        "target_ratio": 0.95,
        "runs": runs,
        "env": {"python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S")},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "grpo_throughput.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"steps/s ours {summary['ours_steps_per_s']} vs TRL {summary['trl_steps_per_s']}: "
          f"ratio {summary['steps_ratio']}; tokens/s ratio {summary['tokens_ratio']}")


if __name__ == "__main__":
    main()
