"""Run methods over a task, resumably, and write a token-costed table and plots.

Per method, answers (with each run's cost in dollars and its whole result, which
``aft view OUT`` shows) go to ``OUT/runs/METHOD.jsonl`` as they finish (re-running skips
finished items); items whose run failed go to ``OUT/runs/METHOD.jsonl.errors.jsonl``
and are retried by the next run. Scores and token costs average successful items only;
the table's ``errors`` column counts the failures. The table (``table.json``,
``table.csv``) has one row per method with its score and its token and dollar cost,
counted from the traces (``cost_per_item`` is empty where some call's price is unknown).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from aft_sdk.aio import run_sync
from aft_sdk.errors import ConfigError
from aft_sdk.eval.methods import Method
from aft_sdk.eval.shared import backend_identity
from aft_sdk.eval.stats import bootstrap_interval
from aft_sdk.jsonl import read_jsonl
from aft_sdk.scale import as_executor
from aft_sdk.runner import DEFAULT_CONCURRENCY, RunItem, run_resumable

logger = logging.getLogger(__name__)

COLUMNS = ["method", "kind", "width", "depth", "items", "score", "score_low", "score_high",
           "tokens_per_item", "generations_per_item", "cost_per_item", "errors"]


def check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The evaluation's output folder; refuses a path that is a file (never touched)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; the evaluation output is a folder (give a new "
                          "or an earlier evaluation's folder)")
    return out


def run_path(out_dir: str | os.PathLike[str], method: str) -> Path:
    """Where :func:`aevaluate` writes ``method``'s per-item results under ``out_dir``."""
    return Path(out_dir) / "runs" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', method)}.jsonl"


async def _run_method(task: Any, method: Method, path: Path, max_concurrency: int,
                      progress: bool, executor: Any) -> int:
    """Runs ``method`` on the items not yet in ``path``; returns how many errored.

    An item whose run raised goes to ``path``'s error side file, not into ``path``: it
    is retried by the next run and left out of the averages until it succeeds.
    """
    check_same_method(method, path)
    runs = as_executor(executor).bind(method.graph)

    async def work(item: RunItem) -> dict[str, Any]:
        run = await method.run(task, item.payload, runs)
        score = await task.score(item.payload, run.answer)
        return {"method": method.name, "answer": run.answer, "score": score.value,
                "key": score.key, "tokens": run.tokens, "generations": run.generations,
                "cost_usd": run.cost_usd, "detail": {**run.detail, **score.detail},
                "result": run.result}

    items = [RunItem(str(it["id"]), it) for it in task.items]
    try:
        summary = await run_resumable(items, work, path, max_concurrency=max_concurrency,
                                      bad=getattr(task, "bad", ()), desc=method.name,
                                      progress=progress)
    finally:
        runs.close()
    return summary.failed + summary.bad_rows


def method_fingerprint(method: Method) -> dict[str, Any]:
    """What a method's per-item results depend on: its kind, the graph's config, and each
    layer's backends (by identity: label and adapter bytes) and sampling."""
    graph = method.graph
    verifier = method.verifier
    return json.loads(json.dumps({
        "kind": method.kind,
        "config": graph.config.model_dump(mode="json"),
        "layers": [{"backends": [backend_identity(b) for b in layer.backends],
                    "sampling": layer.sampling.model_dump(mode="json")}
                   for layer in graph.plan.layers],
        "verifier": None if verifier is None else getattr(verifier, "__qualname__", repr(verifier)),
    }, default=str))


def check_same_method(method: Method, path: Path) -> None:
    """Refuses to resume ``path`` with a method set up differently from the one that
    wrote it (same name, another adapter, model, width or sampling): its rows would be
    mixed with, or stand in for, the new method's. Records the setup beside ``path``."""
    record = path.with_name(path.name.removesuffix(".jsonl") + ".method.json")
    want = method_fingerprint(method)
    has_rows = path.is_file() and path.stat().st_size > 0
    if has_rows and record.is_file():
        have = json.loads(record.read_text(encoding="utf-8"))
        if have != want:
            changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ConfigError(
                f"{path} holds results of method {method.name!r} set up differently "
                f"(changed: {', '.join(changed)}); delete it and {record.name} to run the new "
                "setup, or give the method another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(want, indent=1) + "\n", encoding="utf-8")


def summarise(method: Method, rows: list[dict[str, Any]], errors: int = 0) -> dict[str, Any]:
    """One table row from a method's successful per-item results and its error count.

    ``score_low``/``score_high`` bound the score with a 95% bootstrap interval over items.
    """
    n = len(rows)
    low, high = bootstrap_interval([r["score"] for r in rows]) if n else (0.0, 0.0)
    return {
        "method": method.name, "kind": method.kind, "width": method.width,
        "depth": method.depth, "items": n,
        "score": round(sum(r["score"] for r in rows) / n, 4) if n else 0.0,
        "score_low": round(low, 4), "score_high": round(high, 4),
        "tokens_per_item": round(sum(r["tokens"] for r in rows) / n, 1) if n else 0.0,
        "generations_per_item": round(sum(r["generations"] for r in rows) / n, 2) if n else 0.0,
        "cost_per_item": _mean_cost(rows),
        "errors": errors,
    }


def _mean_cost(rows: list[dict[str, Any]]) -> float | None:
    """Dollars per item, where every item's cost is known (rows written before costs were
    recorded, or with an unpriced call, make it unknown: ``None``)."""
    costs = [r.get("cost_usd") for r in rows]
    if not costs or any(c is None for c in costs):
        return None
    return float(f"{sum(costs) / len(costs):.6g}")


async def aevaluate(task: Any, methods: list[Method], out_dir: str | os.PathLike[str], *,
                    max_concurrency: int = DEFAULT_CONCURRENCY, progress: bool = True, plots: bool = True,
                    executor: Any = "local") -> list[dict[str, Any]]:
    """Evaluates every method on every item of ``task``; returns the table rows.

    ``executor`` says where the methods' graphs run (``"local"``, ``"ray"``, or an
    executor object from :mod:`aft_sdk.scale`; Ray needs methods whose backends are
    specs or configs).

    Writes ``runs/*.jsonl``, ``table.json``, ``table.csv`` and (with ``plots``) PNG
    plots under ``out_dir``.
    """
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must be unique, got {names}")
    out = check_out_dir(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    ids = {str(it["id"]) for it in task.items}
    table = []
    for method in methods:
        path = run_path(out, method.name)
        errors = await _run_method(task, method, path, max_concurrency, progress, executor)
        rows = [r for r in read_jsonl(path) if r["id"] in ids and "error" not in r]
        table.append(summarise(method, rows, errors))
    (out / "table.json").write_text(json.dumps({"task": task.name, "rows": table}, indent=2) + "\n")
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    if plots:
        from aft_sdk.eval.plots import plot_all

        plot_all(table, out, title=task.name)
    return table


def evaluate(task: Any, methods: list[Method], out_dir: str | os.PathLike[str], **kwargs: Any
             ) -> list[dict[str, Any]]:
    """Blocking twin of :func:`aevaluate`."""
    return run_sync(aevaluate(task, methods, out_dir, **kwargs))


def format_table(table: list[dict[str, Any]]) -> str:
    """The table as aligned text (for terminals and READMEs)."""
    cols = ["method", "score", "95% interval", "tokens_per_item", "generations_per_item",
            "cost_per_item", "errors"]

    def cell(r: dict[str, Any], c: str) -> str:
        if c == "95% interval":
            return f"{r.get('score_low', 0):.2f}-{r.get('score_high', 0):.2f}"
        if c == "cost_per_item":
            return "unknown" if r.get(c) is None else f"${r[c]:.6g}"
        return str(r[c])

    widths = [max(len(c), *(len(cell(r, c)) for r in table)) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    for r in table:
        lines.append("  ".join(cell(r, c).ljust(w) for c, w in zip(cols, widths)))
    return "\n".join(lines)
