"""AggregatorTrainer vs plain TRL SFTTrainer: samples/s, peak memory, final loss.

Both train the same model on the same rows with the same arguments: prompt-completion
data (the aft-v1 aggregation prompt, then the target), completion-only loss, LoRA.
Each run is its own subprocess so peak memory is that run's alone; the two are
alternated for ``--rounds`` rounds. Target: ratio (ours / TRL) >= 1.0 at equal loss.

    python benchmarks/trainer_throughput.py --rounds 2 --steps 10

Results: ``benchmarks/results/trainer_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).parent.parent / "tests" / "data" / "multi_response.jsonl"


def common_args(out: str, steps: int) -> dict:
    return dict(output_dir=out, max_steps=steps, per_device_train_batch_size=2,
                learning_rate=5e-4, max_length=384, use_cpu=True, bf16=False,
                gradient_checkpointing=False, report_to="none", logging_steps=1,
                save_strategy="no", seed=0, completion_only_loss=True)


def run_one(which: str, steps: int, rows_path: str) -> dict:
    from peft import LoraConfig

    from aft_sdk.backends.embedded_backend import bundled_model_path
    from aft_sdk.trainers import AftRow, load_gguf, read_jsonl

    rows = [AftRow.model_validate(r) for r in read_jsonl(rows_path)]
    lora = dict(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear")
    model, tok = load_gguf(bundled_model_path())
    out = tempfile.mkdtemp()
    if which == "ours":
        from aft_sdk.trainers import AggregatorConfig, AggregatorTrainer

        args = AggregatorConfig(model_name_or_path="embedded", dataset_path=rows_path,
                                use_lora=True, lora_r=8, lora_alpha=16,
                                **common_args(out, steps))
        trainer = AggregatorTrainer(args, model=model, tokenizer=tok, train_rows=rows)
    else:
        import datasets
        from trl import SFTConfig, SFTTrainer

        from aft_sdk import get_template

        template = get_template("aft-v1")
        ds = datasets.Dataset.from_list([
            {"prompt": template.render(r.messages, r.proposals),
             "completion": [{"role": "assistant", "content": r.target}]} for r in rows])
        tok.pad_token = tok.pad_token or tok.eos_token
        trainer = SFTTrainer(model=model, args=SFTConfig(**common_args(out, steps)),
                             train_dataset=ds, processing_class=tok,
                             peft_config=LoraConfig(task_type="CAUSAL_LM", **lora))
    t0 = time.perf_counter()
    result = trainer.train()
    elapsed = time.perf_counter() - t0
    samples = steps * 2
    return {"which": which, "train_s": elapsed, "samples_per_s": samples / elapsed,
            "final_loss": [h["loss"] for h in trainer.state.log_history if "loss" in h][-1],
            "train_loss": result.training_loss,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_one(args.child, args.steps, args.rows)))
        return
    from aft_sdk.trainers import off_policy_rows, read_jsonl, write_rows

    rows = Path(tempfile.mkdtemp()) / "rows.jsonl"
    write_rows(off_policy_rows(read_jsonl(DATA), target="reference",
                               reference_field="reference", num_proposals=3), rows)
    runs = []
    for r in range(args.rounds):
        for which in ("ours", "trl") if r % 2 == 0 else ("trl", "ours"):
            proc = subprocess.run([sys.executable, __file__, "--child", which, "--steps",
                                   str(args.steps), "--rows", str(rows)],
                                  capture_output=True, text=True, check=True)
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            runs.append(json.loads(line[7:]))
            print(runs[-1], flush=True)

    def med(which: str, key: str) -> float:
        return statistics.median(x[key] for x in runs if x["which"] == which)

    summary = {
        "model": "SmolLM2-135M-Instruct (GGUF, dequantised), LoRA r=8",
        "steps": args.steps, "batch_size": 2, "max_length": 384, "rounds": args.rounds,
        "ours_samples_per_s": round(med("ours", "samples_per_s"), 4),
        "trl_samples_per_s": round(med("trl", "samples_per_s"), 4),
        "ratio": round(med("ours", "samples_per_s") / med("trl", "samples_per_s"), 4),
        "target_ratio": 1.0,
        "ours_final_loss": round(med("ours", "final_loss"), 4),
        "trl_final_loss": round(med("trl", "final_loss"), 4),
        "ours_peak_rss_mb": round(med("ours", "peak_rss_mb")),
        "trl_peak_rss_mb": round(med("trl", "peak_rss_mb")),
        "runs": runs,
        "env": {"python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S")},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "trainer_throughput.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"ours {summary['ours_samples_per_s']} vs TRL {summary['trl_samples_per_s']} samples/s: "
          f"ratio {summary['ratio']}; loss {summary['ours_final_loss']} vs "
          f"{summary['trl_final_loss']}")


if __name__ == "__main__":
    main()
