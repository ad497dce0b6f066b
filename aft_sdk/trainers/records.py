"""Rows from the runs ``aft serve --record DIR`` kept, with their feedback.

Each recorded answer becomes a row: its conversation, its drafts (layer 0) as the
proposals, and as the target the user's better answer where feedback gave one, else the
answer that was served (distilling the graph that ran). Filters keep the runs of one
config, since a day, or with a feedback score at least some value; ``width`` samples
the drafts down (seeded per row) to the width of the graph the trained model will serve.

For GRPO (``aft train --method grpo``, a verifiable reward), ``reward=VERIFIER`` keeps the
runs whose feedback gives a ``reference`` (the right answer): that is the row's target,
and the row carries the served answer's reward under the verifier (``meta.reward``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aft_sdk.errors import ConfigError
from aft_sdk.jsonl import read_jsonl
from aft_sdk.record import FEEDBACK_SCHEMA, SCHEMA
from aft_sdk.trainers.rewards import make_verifier
from aft_sdk.trainers.rows import AftRow, RowCounter, RowError, skip_or_raise
from aft_sdk.trainers.traces import trace_rows


def record_rows(
    folder: str | os.PathLike[str], *, config: str | None = None, since: str | None = None,
    min_score: float | None = None, width: int | None = None, seed: int = 0,
    reward: str | None = None, skip_bad: bool = False, counter: RowCounter | None = None,
) -> Iterator[AftRow]:
    """Rows from a recording folder.

    Args:
        folder: What ``aft serve --record`` wrote (``runs-*.jsonl``, ``feedback-*.jsonl``).
        config: Keep the runs of this served model id (or config hash prefix).
        since: Keep the runs from this UTC day on (``YYYY-MM-DD``).
        min_score: Keep the runs whose latest feedback score is at least this (each
            feedback field is the latest given for the run).
        width: Proposals per row, sampled (seeded by ``seed`` and the row's id) from the
            run's drafts; ``None``: all of them.
        reward: A verifier spec (``number``, ``math``, ...; see
            :func:`~aft_sdk.trainers.rewards.make_verifier`): rows for GRPO, from the runs
            with a feedback ``reference`` only.
        skip_bad: Count and skip unusable rows instead of raising.
        counter: Where skipped rows are counted.
    """
    root = Path(folder)
    if not root.is_dir() or not any(root.glob("runs-*.jsonl")):
        raise ConfigError(f"{root} holds no recorded runs (runs-*.jsonl): give the folder "
                          "that aft serve --record DIR wrote")
    if width is not None and width < 1:
        raise ConfigError(f"width={width}: give at least 1 proposal per row")
    verifier = None if reward is None else make_verifier(reward)
    feedback: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("feedback-*.jsonl")):
        for row in read_jsonl(path, skip_bad=True):
            if row.get("record") == FEEDBACK_SCHEMA:  # parts add up, the latest wins
                kept = feedback.setdefault(str(row.get("id")), {})
                kept.update({k: v for k, v in row.items() if v is not None})
    kept, better = [], {}
    for path in sorted(root.glob("runs-*.jsonl")):
        for run in read_jsonl(path, skip_bad=True,
                              on_bad=counter.add if counter is not None else None):
            if run.get("record") != SCHEMA:
                skip_or_raise(RowError(f"{path.name}: a row without record: {SCHEMA}"),
                              skip_bad=skip_bad, counter=counter)
                continue
            fb = feedback.get(str(run.get("id")), {})
            if not _wanted(run, fb, config, since, min_score) or (
                    verifier is not None and not fb.get("reference")):
                continue
            row_id = f"{run['id']}" if not run.get("choice") else f"{run['id']}-{run['choice']}"
            meta = {"config": run.get("config"), "time": run.get("time"),
                    "score": fb.get("score"), "label": fb.get("label")}
            if verifier is not None:
                better[row_id] = fb["reference"]
                meta.update(target_from="reference",
                            reward=verifier(str(run.get("answer") or ""), fb["reference"]))
            elif fb.get("better_answer"):
                better[row_id] = fb["better_answer"]
            kept.append({"id": row_id, "result": run.get("result"), "meta": meta})
    metas = {k["id"]: k["meta"] for k in kept}
    for row in trace_rows(kept, references=better, skip_bad=skip_bad, counter=counter):
        proposals = row.proposals
        if width is not None and len(proposals) > width:
            picked = sorted(random.Random(f"{seed}:{row.id}").sample(range(len(proposals)),
                                                                     width))
            proposals = [proposals[i] for i in picked]
        yield row.model_copy(update={
            "proposals": proposals, "source": "record",
            "meta": {**row.meta, "target_from": "feedback" if row.id in better else
                     "served answer", **metas[row.id]}})


def _wanted(run: dict[str, Any], fb: dict[str, Any], config: str | None, since: str | None,
            min_score: float | None) -> bool:
    ident = run.get("config") or {}
    if config is not None and config != ident.get("name") and \
            not str(ident.get("sha256", "")).startswith(config):
        return False
    if since is not None and str(run.get("time", ""))[:10] < since:
        return False
    if min_score is not None:
        score = fb.get("score")
        return isinstance(score, (int, float)) and score >= min_score
    return True
