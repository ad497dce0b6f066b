"""The one resumable runner: batch runs, data building and evaluation all go through it.

Given items with ids and an async ``work(item) -> row``, it appends each row to a JSONL
output as soon as it is ready, skips ids already in the output (so re-running a crashed
or interrupted command continues where it stopped), writes failures to an error side
file (failed ids are retried by the next run), bounds concurrency, and shows progress.
On an interrupt or an unexpected error the work still in flight is cancelled, so
nothing keeps calling models in the background and no id is ever written twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from aft_sdk.aio import gather_all
from aft_sdk.errors import AftError, ConfigError
from aft_sdk.jsonl import append_jsonl, read_rows
from aft_sdk.outputs import check_output, output_lock


@dataclass(frozen=True)
class RunItem:
    """One unit of work.

    Attributes:
        id: Stable key; written into the output row and the error file.
        payload: What ``work`` receives.
        info: Extra fields for this item's error record (for example its input line).
    """

    id: str
    payload: Any
    info: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None


def fingerprint(value: Any) -> str:
    """A short stable hash of an item's input (JSON-able), kept in its output row so a
    resumed run can tell when the input under an id changed."""
    data = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        total: Items given (bad input rows included).
        skipped: Already in the output from an earlier run.
        written: Rows written by this run.
        failed: Items whose work raised an :class:`AftError` (see ``errors_path``).
        bad_rows: Input rows that could not be run at all (also in ``errors_path``).
        changed: Skipped ids whose stored row was made from a different input (the old
            row is kept; a warning says so).
        errors_path: The error side file of this run.
    """

    total: int = 0
    skipped: int = 0
    written: int = 0
    failed: int = 0
    bad_rows: int = 0
    changed: int = 0
    errors_path: str = ""


def default_errors_path(output: Path) -> Path:
    """``OUTPUT.errors.jsonl`` beside the output."""
    return output.with_name(output.name + ".errors.jsonl")


#: Items (rows, questions) in flight at once unless a caller says otherwise: enough that a
#: local engine's batch stays full; API backends protect themselves (adaptive limits).
DEFAULT_CONCURRENCY = 32

async def run_resumable(
    items: Sequence[RunItem],
    work: Callable[[RunItem], Awaitable[dict[str, Any]]],
    output_path: str | os.PathLike[str],
    *,
    errors_path: str | os.PathLike[str] | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    bad: Sequence[dict[str, Any]] = (),
    max_concurrency: int = DEFAULT_CONCURRENCY,
    desc: str = "aft",
    progress: bool = True,
    tokens_of: Callable[[dict[str, Any]], int] | None = None,
) -> RunSummary:
    """Runs ``work`` on every item whose id is not yet in ``output_path``.

    Args:
        items: The work; ids must be unique (a repeated id is recorded as a bad row).
        work: Returns the output row for an item; an ``"id"`` key is added if missing.
            An :class:`AftError` it raises is recorded in the error file; any other
            exception cancels the run and propagates.
        output_path: JSONL output, appended to.
        errors_path: Error side file; default ``OUTPUT.errors.jsonl``. It describes
            the latest run only, so it is cleared at the start.
        inputs: Files the run reads; neither output may be one of them.
        bad: Input rows rejected before the run (each with at least ``error``).
        max_concurrency: Items in flight at once.
        desc: Progress bar label.
        progress: Show a progress bar on stderr.
        tokens_of: Tokens a row cost, summed into the bar (``tokens`` so far).

    Both outputs follow :func:`aft_sdk.outputs.check_output` (checked before anything
    is written), and the output is locked while the run writes it.

    Raises:
        ConfigError: Bad ``max_concurrency``; an output that is an input, the other
            output, a directory, or a file aft-sdk did not write; or another run (in
            any process) writing the same output.
    """
    if not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
    out = Path(output_path)
    err = Path(errors_path) if errors_path else default_errors_path(out)
    out = check_output(out, inputs=inputs, others=[("errors file", err)])
    err = check_output(err, inputs=inputs, key="error", what="errors file")
    with output_lock(out):
        return await _run(items, work, out, err, bad, max_concurrency, desc, progress, tokens_of)


async def _run(
    items: Sequence[RunItem], work: Callable[[RunItem], Awaitable[dict[str, Any]]],
    out: Path, err: Path, bad: Sequence[dict[str, Any]], max_concurrency: int, desc: str,
    progress: bool, tokens_of: Callable[[dict[str, Any]], int] | None,
) -> RunSummary:
    done = read_rows(out)
    err.write_text("")
    summary = RunSummary(total=len(items) + len(bad), errors_path=str(err))
    for record in bad:
        append_jsonl(err, record)
    summary.bad_rows = len(bad)
    seen: set[str] = set()
    todo = []
    for item in items:
        if item.id in seen:
            append_jsonl(err, {"id": item.id, **item.info,
                               "error": f"duplicate id {item.id!r} (first seen earlier)"})
            summary.bad_rows += 1
        elif item.id in done:
            seen.add(item.id)
            summary.skipped += 1
            stored = done[item.id].get("input_sha")
            if item.fingerprint and stored and stored != item.fingerprint:
                summary.changed += 1
        else:
            seen.add(item.id)
            todo.append(item)
    bar = tqdm(total=summary.total, initial=summary.total - len(todo), desc=desc, unit="row",
               disable=not progress)
    sem = asyncio.Semaphore(max_concurrency)
    tokens = 0

    async def one(item: RunItem) -> None:
        nonlocal tokens
        async with sem:
            try:
                row = await work(item)
            except AftError as e:
                append_jsonl(err, {"id": item.id, **item.info,
                                   "error": f"{type(e).__name__}: {e}"})
                summary.failed += 1
            else:
                extra = {"input_sha": item.fingerprint} if item.fingerprint else {}
                append_jsonl(out, {"id": item.id, **row, **extra})
                summary.written += 1
                tokens += tokens_of(row) if tokens_of else 0
            bar.set_postfix(failed=summary.failed, **({"tokens": tokens} if tokens_of else {}),
                            refresh=False)
            bar.update(1)

    try:
        await gather_all(one(it) for it in todo)
    finally:
        bar.close()
    return summary
