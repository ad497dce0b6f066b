"""Run a graph over a JSONL dataset, resumably.

Each input line is a JSON object with an ``id`` and either ``messages`` (chat messages)
or ``question`` / ``prompt`` (a string). Results are appended to the output file one
line per row as soon as each finishes, keyed by ``id``. Running the same command again
after a crash or Ctrl-C skips ids already in the output: no duplicates, no lost rows.
Bad rows and failed runs go to an errors file with their line number; the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from aft_sdk.backends.base import normalize_messages, run_sync
from aft_sdk.errors import AftError, ConfigError

logger = logging.getLogger(__name__)

_TEXT_FIELDS = ("question", "prompt", "input")


@dataclass
class BatchSummary:
    """What a batch run did."""

    total: int = 0
    skipped: int = 0
    written: int = 0
    failed: int = 0
    bad_rows: int = 0
    errors_path: str = ""


def read_done_ids(output_path: Path) -> set[str]:
    """Ids already in the output. A torn last line (killed mid-write) is cut off."""
    if not output_path.exists():
        return set()
    data = output_path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("dropping a partial last line in %s (an interrupted write)", output_path)
        with output_path.open("r+b") as f:
            f.truncate(end)
    done = set()
    for n, line in enumerate(data[:end].splitlines(), start=1):
        if line.strip():
            try:
                done.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(
                    f"{output_path} line {n} is not a result row ({e}); this file is not "
                    "an aft batch output, or it was edited: fix or move that line"
                ) from e
    return done


def _rows(input_path: Path) -> Iterator[tuple[int, str | None, Any, str | None]]:
    """Yields ``(line_no, id, messages, error)`` per non-blank input line."""
    with input_path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, None, None, f"not valid JSON: {e}"
                continue
            if not isinstance(row, dict):
                yield line_no, None, None, "each line must be a JSON object"
                continue
            row_id = str(row["id"]) if "id" in row else f"line-{line_no}"
            source = row.get("messages")
            if source is None:
                source = next((row[k] for k in _TEXT_FIELDS if k in row), None)
            if source is None:
                yield line_no, row_id, None, (
                    "row has none of 'messages', 'question', 'prompt', 'input'"
                )
                continue
            try:
                yield line_no, row_id, normalize_messages(source), None
            except ConfigError as e:
                yield line_no, row_id, None, str(e)


async def arun_batch(
    graph: Any,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    errors_path: str | os.PathLike[str] | None = None,
    max_concurrency: int = 4,
    progress: bool = True,
) -> BatchSummary:
    """Runs ``graph`` (an :class:`~aft_sdk.graphs.AggregateGraph`) over a JSONL file.

    Args:
        graph: The graph to run on every row.
        input_path: JSONL input (see the module docstring for the row format).
        output_path: JSONL output; appended to, one ``{"id", "answer", "result"}`` per row.
        errors_path: Where bad rows and failed runs go; default ``OUTPUT.errors.jsonl``.
        max_concurrency: Rows in flight at once.
        progress: Show a progress bar on stderr.
    """
    src, out = Path(input_path), Path(output_path)
    if not src.is_file():
        raise ConfigError(f"input file not found: {src}")
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
    err_path = Path(errors_path) if errors_path else out.with_name(out.name + ".errors.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_done_ids(out)
    rows = list(_rows(src))
    summary = BatchSummary(total=len(rows), errors_path=str(err_path))
    # Errors describe the latest run only; rows that failed before are retried now.
    err_path.write_text("")
    seen: set[str] = set()
    todo = []
    for line_no, row_id, messages, error in rows:
        if error is None and row_id in seen:
            error = f"duplicate id {row_id!r} (first seen earlier in the file)"
        if error is not None:
            append_jsonl(err_path, {"line": line_no, "id": row_id, "error": error})
            summary.bad_rows += 1
            continue
        seen.add(row_id)
        if row_id in done:
            summary.skipped += 1
        else:
            todo.append((line_no, row_id, messages))
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), disable=not progress,
               desc="aft batch", unit="row")
    sem = asyncio.Semaphore(max_concurrency)

    async def one(line_no: int, row_id: str, messages: list[dict[str, str]]) -> None:
        async with sem:
            try:
                result = await graph.ainvoke(messages)
            except AftError as e:
                append_jsonl(err_path, {"line": line_no, "id": row_id,
                                   "error": f"{type(e).__name__}: {e}"})
                summary.failed += 1
            else:
                append_jsonl(out, {"id": row_id, "answer": result.answer,
                              "result": result.model_dump(mode="json")})
                summary.written += 1
            bar.update(1)

    try:
        await asyncio.gather(*(one(*t) for t in todo))
    finally:
        bar.close()
    return summary


def run_batch(graph: Any, input_path: str | os.PathLike[str], output_path: str | os.PathLike[str],
              **kwargs: Any) -> BatchSummary:
    """Blocking twin of :func:`arun_batch`."""
    return run_sync(arun_batch(graph, input_path, output_path, **kwargs))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    # One write of one full line, flushed and synced: a kill leaves at most a torn
    # last line, which read_done_ids cuts off on the next run.
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
