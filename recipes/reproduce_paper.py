"""The AFT paper's setup on a multi-GPU machine: data, training, propose-and-aggregate,
AlpacaEval 2.

Stages (``--stage all`` runs them in order):

1. ``data``: off-policy AFT rows from UltraFeedback (``openbmb/UltraFeedback``, ~64k
   prompts): proposals are its responses; the target is the best-rated response, or, as
   in the paper, written by a stronger model (``--teacher SPEC``). ``--on-policy`` samples
   the proposals from the base model instead (vLLM).
2. ``train``: full fine-tuning with ``accelerate launch`` and
   ``recipes/configs/paper_llama31_8b_aft.yaml``.
3. ``generate``: propose-and-aggregate (``recipes/configs/paper_graph.yaml``: width 5,
   temperature 0.7, top_p 0.95) on the AlpacaEval 2 instructions, written in AlpacaEval's
   model-outputs format.
4. ``evaluate``: ``alpaca_eval`` on those outputs (needs the judge's API key).

    python recipes/reproduce_paper.py --stage all  # not run in the suite: 8 GPUs, the paper's data and a judge's API key
    python recipes/reproduce_paper.py --dry-run  # suite: test_reproduce_paper_dry_run_checks_configs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

from aft_sdk import AggregateGraph, GraphConfig, load_yaml, run_batch
from aft_sdk.config import SamplingConfig
from aft_sdk.jsonl import read_jsonl
from aft_sdk.trainers import off_policy_rows, write_rows

CONFIGS = Path(__file__).parent / "configs"
TRAIN_CFG = CONFIGS / "paper_llama31_8b_aft.yaml"
GRAPH_CFG = CONFIGS / "paper_graph.yaml"
ACCEL_CFG = CONFIGS / "accelerate_fsdp_8gpu.yaml"
ULTRAFEEDBACK = "openbmb/UltraFeedback"
ALPACA_EVAL = "tatsu-lab/alpaca_eval"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["data", "train", "generate", "evaluate", "all"],
                    default="all")
    ap.add_argument("--dry-run", action="store_true",
                    help="check configs, data paths and tools; run nothing heavy")
    ap.add_argument("--work", default="data/paper", help="folder for data and outputs")
    ap.add_argument("--train-config", default=str(TRAIN_CFG))
    ap.add_argument("--graph-config", default=str(GRAPH_CFG))
    ap.add_argument("--accelerate-config", default=str(ACCEL_CFG))
    ap.add_argument("--teacher", metavar="SPEC", help="stronger model writing the targets")
    ap.add_argument("--on-policy", action="store_true", help="sample proposals from the base model")
    ap.add_argument("--num-proposals", type=int, default=4)
    ap.add_argument("--limit", type=int, help="use only the first N prompts (smoke runs)")
    return ap.parse_args(argv)


def train_command(args: argparse.Namespace) -> list[str]:
    return ["accelerate", "launch", "--config_file", args.accelerate_config, "-m",
            "aft_sdk.cli.train", "--config", args.train_config,
            "--dataset_path", str(Path(args.work) / "aft_rows.jsonl")]


def check(args: argparse.Namespace) -> list[str]:
    """Validates every config and path the stages need; returns problems found."""
    from aft_sdk.cli.train import parse_config

    problems = []
    # Hardware flags (bf16 on GPUs) are checked on the training machine itself.
    cfg = parse_config(["--config", args.train_config, "--use_cpu", "true", "--bf16", "false"])
    template = Path(cfg.chat_template_path or "")
    if cfg.chat_template_path and not template.is_file():
        problems.append(f"chat template not found: {template}")
    graph = load_yaml(args.graph_config, GraphConfig)
    if graph.width != 5:
        problems.append(f"{args.graph_config}: width is {graph.width}, the paper uses 5")
    for p in (args.accelerate_config,):
        if not Path(p).is_file():
            problems.append(f"missing {p}")
    for module, why in (("accelerate", "training"), ("alpaca_eval", "evaluation")):
        if importlib.util.find_spec(module) is None:
            problems.append(f"{module} is not installed (needed for {why}; pip install "
                            f"{module.replace('_', '-')})")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"train config ok: {cfg.model_name_or_path}, lr {cfg.learning_rate}, "
          f"{cfg.num_train_epochs} epochs, max_length {cfg.max_length}")
    print(f"graph config ok: width {graph.width}, depth {graph.depth}, "
          f"top_p {graph.proposer_sampling.top_p}")
    print("train command:", shlex.join(train_command(args)))
    return problems


def stage_data(args: argparse.Namespace) -> None:
    import datasets

    from aft_sdk.backends.base import run_sync
    from aft_sdk.trainers import abuild_on_policy, abuild_teacher_targets

    split = "train" if args.limit is None else f"train[:{args.limit}]"
    records = datasets.load_dataset(ULTRAFEEDBACK, split=split)
    out = Path(args.work) / "aft_rows.jsonl"
    if args.on_policy:
        graph = load_yaml(args.graph_config, GraphConfig)
        prompts = [{"id": str(i), "prompt": r["instruction"],
                    "reference": max(r["completions"], key=lambda c: c["overall_score"])["response"]}
                   for i, r in enumerate(records)]
        run_sync(abuild_on_policy(prompts, graph.proposers[0], out, k=args.num_proposals,
                                  sampling=graph.proposer_sampling,
                                  teacher=args.teacher, reference_field=None if args.teacher else "reference"))
        return
    rows = off_policy_rows(records, prompt_field="instruction", responses_field="completions",
                           text_field="response", rating_field="overall_score", target="best",
                           num_proposals=args.num_proposals, source="ultrafeedback",
                           skip_bad=True)
    if args.teacher:
        run_sync(abuild_teacher_targets(list(rows), args.teacher, out,
                                  sampling=SamplingConfig(temperature=0.7, max_tokens=4096)))
    else:
        write_rows(rows, out)


def stage_generate(args: argparse.Namespace) -> Path:
    import datasets

    prompts = datasets.load_dataset(ALPACA_EVAL, "alpaca_eval", split="eval", trust_remote_code=False)
    work = Path(args.work)
    questions = work / "alpaca_eval_questions.jsonl"
    questions.write_text("".join(json.dumps({"id": str(i), "question": r["instruction"]}) + "\n"
                                 for i, r in enumerate(prompts)))
    graph = AggregateGraph.from_config(args.graph_config)
    answers = work / "alpaca_eval_answers.jsonl"
    run_batch(graph, questions, answers, max_concurrency=64)
    by_id = {row["id"]: row["answer"] for row in read_jsonl(answers)}
    outputs = [{"instruction": r["instruction"], "output": by_id.get(str(i), ""),
                "generator": "aft-llama31-8b-pa-w5"} for i, r in enumerate(prompts)]
    path = work / "model_outputs.json"
    path.write_text(json.dumps(outputs, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        problems = check(args)
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        missing_tools = [p for p in problems if "is not installed" in p]
        # Missing GPU-side tools are reported, not fatal, on a CPU machine.
        return 1 if len(problems) > len(missing_tools) else 0
    stages = ["data", "train", "generate", "evaluate"] if args.stage == "all" else [args.stage]
    Path(args.work).mkdir(parents=True, exist_ok=True)
    for stage in stages:
        print(f"== {stage}", flush=True)
        if stage == "data":
            stage_data(args)
        elif stage == "train":
            subprocess.run(train_command(args), check=True)
        elif stage == "generate":
            print(f"outputs: {stage_generate(args)}")
        else:
            outputs = Path(args.work) / "model_outputs.json"
            subprocess.run(["alpaca_eval", "--model_outputs", str(outputs),
                            "--output_path", str(Path(args.work) / "alpaca_eval")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
