"""Close the loop: serve an expensive graph with recording on, distill it into a cheap one.

The production loop the SDK is for, end to end on the bundled model:

1. The quick-start questions (``recipes/data/quickstart_questions.jsonl``) split by
   subject (seeded): the recorded questions and the held-out ones never share a subject.
2. ``aft serve --record DIR`` serves the *teacher*: width 3, depth 2, the shipped AFT
   adapter aggregating (7 generations a question). The recorded questions go through it
   with the official ``openai`` client, as an application's traffic would.
3. ``record_rows`` (``aft data build records DIR --width 2``) turns the records into AFT
   rows: each answer's drafts, sampled down to the cheap graph's width, and the teacher's
   served answer as the target.
4. A LoRA aggregator is trained on them (``AggregatorTrainer``, exported as GGUF).
5. The served config is rewritten to the *cheap* graph (width 2, depth 1: 3 generations)
   with the distilled adapter and the server reloads (``POST /admin/reload``) without a
   restart; a few held-out questions go through it, and their records show the new graph.
6. On the held-out questions, in this process: the teacher graph, the cheap graph with the
   shipped adapter, and the cheap graph with the distilled adapter. Keyword scores with
   95% intervals, paired differences, tokens and cost per question (every call priced at
   one nominal rate, $0.15 / $0.60 per million input / output tokens, so cost follows
   tokens), and a plot of quality against tokens.

The question it answers: does the distilled cheap graph close at least half of the gap
between the cheap graph with the shipped adapter and the teacher, at under half the
teacher's tokens? Sampling is what ``aft serve`` does by default (unseeded).

    # not run in the suite: about 30 minutes on 2 CPU cores (the committed result); its reduced run is
    python recipes/distill_aggregation.py --out recipes/results/distill_aggregation
    python recipes/distill_aggregation.py --reduced --out /tmp/distill_aggregation   # suite: test_distill_aggregation_reduced
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai

from aft_sdk.eval import KeywordTask, Method, evaluate, format_table, paired_difference, run_path
from aft_sdk.jsonl import read_jsonl
from aft_sdk.testing import LocalServer
from aft_sdk.timing import Stages
from aft_sdk.trainers import AggregatorConfig, AggregatorTrainer, record_rows, write_rows

ROOT = Path(__file__).parent.parent
QUESTIONS = ROOT / "recipes" / "data" / "quickstart_questions.jsonl"
PRICE = {"input": 0.15, "output": 0.60}  # nominal, the same for every call
MODEL_ID = "assistant"  # what clients ask for, before and after the reload
# Fixed before the full run.
FULL = dict(recorded=48, held_out=48, teacher_width=3, cheap_width=2, max_tokens=None,
            steps=36, lora_r=8, learning_rate=5e-4, batch=4, smoke=4, clients=4)
REDUCED = dict(recorded=3, held_out=3, teacher_width=2, cheap_width=2, max_tokens=24,
               steps=2, lora_r=4, learning_rate=5e-4, batch=2, smoke=1, clients=2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="recipes/results/distill_aggregation",
                    help="records, rows, adapter, per-item runs, table, plot, summary")
    ap.add_argument("--work", help="training output (default: runs/distill_aggregation, or "
                                   "OUT/work with --reduced)")
    ap.add_argument("--reduced", action="store_true", help="tiny sizes, for tests")
    ap.add_argument("--seed", type=int, default=0, help="the subject split and the training")
    return ap.parse_args(argv)


def split_by_subject(items: list[dict], seed: int, recorded: int, held_out: int
                     ) -> tuple[list[dict], list[dict]]:
    """Two question sets with no subject in common (each subject wholly on one side)."""
    subjects = sorted({q["subject"] for q in items})
    random.Random(seed).shuffle(subjects)
    first = set(subjects[: len(subjects) // 2])
    rng = random.Random(seed + 1)
    a = [q for q in items if q["subject"] in first]
    b = [q for q in items if q["subject"] not in first]
    rng.shuffle(a)
    rng.shuffle(b)
    a, b = a[:recorded], b[:held_out]
    assert not {q["subject"] for q in a} & {q["subject"] for q in b}
    return a, b


def graph_config(width: int, depth: int, adapter: str, size: dict) -> dict[str, Any]:
    """A graph on the bundled model: embedded proposers, an embedded aggregator with
    ``adapter`` (``bundled``: the shipped one), every call priced the same."""
    cfg: dict[str, Any] = {
        "name": MODEL_ID, "width": width, "depth": depth,
        "proposers": [{"type": "embedded", "price": PRICE}],
        "aggregator": [{"type": "embedded", "lora_path": adapter, "price": PRICE}]}
    if size["max_tokens"]:
        cfg["proposer_sampling"] = {"max_tokens": size["max_tokens"]}
        cfg["aggregator_sampling"] = {"max_tokens": size["max_tokens"]}
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is YAML
    return path


def ask_all(client: openai.OpenAI, questions: list[dict], clients: int) -> list[str]:
    """Each question through the server (``clients`` at once); the response ids."""
    def one(q: dict) -> str:
        r = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": q["question"]}])
        return r.id

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, questions))


def records_of(folder: Path) -> list[dict]:
    return [row for p in sorted(folder.glob("runs-*.jsonl")) for row in read_jsonl(p)]


def wait_for_records(folder: Path, ids: list[str], timeout_s: float = 60) -> None:
    """Until every response in ``ids`` has its row (the server writes them in a thread)."""
    end = time.monotonic() + timeout_s
    while not set(ids) <= {r["id"] for r in records_of(folder)}:
        if time.monotonic() > end:
            raise SystemExit(f"the server recorded only part of {len(ids)} answers")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = dict(REDUCED if args.reduced else FULL)
    out = Path(args.out)
    work = Path(args.work or (out / "work" if args.reduced else "runs/distill_aggregation"))
    records = out / "records"
    if records.exists():  # a run records afresh: rows from an earlier run would mix in
        shutil.rmtree(records)
    stage = Stages()
    recorded, held_out = split_by_subject(list(read_jsonl(QUESTIONS)), args.seed,
                                          size["recorded"], size["held_out"])
    tw, cw = size["teacher_width"], size["cheap_width"]
    teacher = graph_config(tw, 2, "bundled", size)
    cheap = graph_config(cw, 1, "bundled", size)
    distilled_adapter = out / "distilled-aggregator.gguf"
    distilled = graph_config(cw, 1, str(distilled_adapter.resolve()), size)
    served = write_config(out / "configs" / "served.yaml", teacher)

    with LocalServer.aft_serve([served], extra_args=["--record", str(records)]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        with stage("1. serve the teacher with recording on"):
            ids = ask_all(client, recorded, size["clients"])
        with stage("2. rows from the records"):
            wait_for_records(records, ids)  # written by the server's writer thread
            rows = list(record_rows(records, config=MODEL_ID, width=cw, seed=args.seed))
            assert sorted(r.id for r in rows) == sorted(ids), "every answered run is a row"
            rows_path = out / "data" / "rows.jsonl"
            write_rows(rows, rows_path, progress=False)
        with stage("3. train the distilled aggregator (LoRA, GGUF)"):
            cfg = AggregatorConfig(
                model_name_or_path="embedded", dataset_path=str(rows_path), output_dir=str(work),
                use_lora=True, lora_r=size["lora_r"], lora_alpha=2 * size["lora_r"],
                merge_lora=False, export_gguf=True, learning_rate=size["learning_rate"],
                max_steps=size["steps"], per_device_train_batch_size=size["batch"],
                max_length=1024, use_cpu=True, bf16=False, gradient_checkpointing=False,
                logging_steps=min(8, size["steps"]), report_to="none", seed=args.seed)
            trainer = AggregatorTrainer(cfg)
            trainer.train()
            folder = trainer.save_aggregator()
            losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
            del trainer
            shutil.copyfile(folder / "adapter.gguf", distilled_adapter)
            # The prompt it was trained with travels beside it.
            shutil.copyfile(folder / "aft_sdk.json",
                            distilled_adapter.with_name(f"{distilled_adapter.stem}.aft_sdk.json"))
        with stage("4. reload the server onto the cheap distilled graph"):
            write_config(served, distilled)
            reload = httpx.post(server.base_url.removesuffix("/v1") + "/admin/reload",
                                timeout=600)
            reload.raise_for_status()
            smoke_ids = ask_all(client, held_out[: size["smoke"]], size["clients"])
    after = [r for r in records_of(records) if r["id"] in set(smoke_ids)]
    assert len(after) == len(smoke_ids), "every answer after the reload is recorded"
    served_after = {o["backend"] for r in after for o in r["result"]["layers"][-1]["outputs"]}
    assert all(b.endswith("+" + distilled_adapter.stem) for b in served_after), served_after

    names = {"teacher": f"teacher {tw}x2 (shipped adapter)",
             "cheap": f"cheap {cw}x1 (shipped adapter)",
             "distilled": f"cheap {cw}x1 (distilled adapter)"}
    methods = [Method(names[k], "graph", graph_kwargs={"config": c})
               for k, c in (("teacher", teacher), ("cheap", cheap), ("distilled", distilled))]
    for m in methods:  # a new adapter must not read an earlier run's items
        path = run_path(out / "eval", m.name)
        for p in (path, path.with_name(path.name + ".errors.jsonl")):
            p.unlink(missing_ok=True)
    with stage("5. evaluate on the held-out questions"):
        table = evaluate(KeywordTask(held_out), methods, out / "eval", progress=False)
    print(format_table(table))

    def scores(name: str) -> dict[str, float]:
        return {r["id"]: r["score"] for r in read_jsonl(run_path(out / "eval", name))
                if "error" not in r}

    s = {k: scores(n) for k, n in names.items()}
    ids_all = sorted(set.intersection(*(set(v) for v in s.values())))

    def diff(a: str, b: str) -> dict[str, float]:
        d = paired_difference([s[a][i] for i in ids_all], [s[b][i] for i in ids_all])
        return {k: round(v, 4) for k, v in d.items()}

    comparisons = {"teacher - cheap": diff("teacher", "cheap"),
                   "distilled - cheap": diff("distilled", "cheap"),
                   "distilled - teacher": diff("distilled", "teacher")}
    row = {k: next(r for r in table if r["method"] == n) for k, n in names.items()}
    gap = row["teacher"]["score"] - row["cheap"]["score"]
    closed = None if gap <= 0 else round((row["distilled"]["score"] - row["cheap"]["score"]) / gap, 3)
    token_ratio = round(row["distilled"]["tokens_per_item"] / row["teacher"]["tokens_per_item"], 3)
    command = "python recipes/distill_aggregation.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    summary = {
        "command": command.strip(), "seed": args.seed, "sizes": size,
        "recorded_questions": len(recorded), "held_out_questions": len(held_out),
        "rows": len(rows), "train_losses": losses, "timings_s": stage.timings,
        "served_after_reload": sorted(served_after), "table": table,
        "comparisons": comparisons, "gap_closed": closed,
        "distilled_tokens_over_teacher": token_ratio,
        "goal": "distilled closes >= half of the cheap-to-teacher gap at < half the "
                "teacher's tokens",
        "goal_met": closed is not None and closed >= 0.5 and token_ratio < 0.5}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"| {k} | {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |"
             for k, d in comparisons.items()]
    (out / "summary.md").write_text(
        f"# Distilling a served aggregation graph\n\nCommand: `{summary['command']}`\n\n"
        f"Sizes (fixed before the run): {size}; {len(recorded)} recorded questions, "
        f"{len(held_out)} held-out ones (no subject in common); {len(rows)} rows\n\n"
        f"Stage wall times (s): {stage.timings}\n\nTraining loss: {losses}\n\n"
        f"```\n{format_table(table)}\n```\n\n"
        "| paired difference | mean [95% CI] |\n|---|---:|\n" + "\n".join(lines) +
        f"\n\nGap closed by the distilled adapter: {closed if closed is not None else 'no gap to close'}"
        f"; its tokens per question over the teacher's: {token_ratio}. Goal "
        f"({summary['goal']}): {'met' if summary['goal_met'] else 'not met'}.\n\n"
        "![quality vs tokens](eval/quality_vs_tokens.png)\n")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
