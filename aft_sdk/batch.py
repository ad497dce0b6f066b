"""Run a graph over a JSONL dataset, resumably.

Each input line is a JSON object with an ``id`` and either ``messages`` (chat messages)
or ``question`` / ``prompt`` (a string), and optionally the request fields ``tools``,
``tool_choice``, ``parallel_tool_calls`` and ``response_format`` (OpenAI's names; the
answer's calls are in the output row's ``tool_calls``). Results are appended to the output file one
line per row as soon as each finishes, keyed by ``id``. Running the same command again
after a crash or Ctrl-C skips ids already in the output: no duplicates, no lost rows.
Bad rows and failed runs go to an errors file with their line number; the run goes on.
The mechanics (resume, errors file, concurrency, progress, cancellation) are
:mod:`aft_sdk.runner`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aft_sdk.aio import run_sync
from aft_sdk.config import GraphConfig, load_yaml
from aft_sdk.errors import ConfigError
from aft_sdk.jsonl import iter_lines
from aft_sdk.messages import normalize_messages
from aft_sdk.record import as_recorder, graph_identity
from aft_sdk.runner import DEFAULT_CONCURRENCY, RunItem, RunSummary, fingerprint, run_resumable
from aft_sdk.tools import options_of

BatchSummary = RunSummary  # the name batch callers know

_TEXT_FIELDS = ("question", "prompt", "input")


def _rows(input_path: Path) -> Iterator[tuple[int, str | None, Any, str | None]]:
    """Yields ``(line_no, id, (messages, call), error)`` per non-blank input line."""
    for line_no, line in iter_lines(input_path.read_bytes()):
        try:
            row = json.loads(line)
        except ValueError as e:  # not JSON, or not UTF-8 (UnicodeDecodeError)
            yield line_no, None, None, f"not valid JSON: {e}"
            continue
        if not isinstance(row, dict):
            yield line_no, None, None, "each line must be a JSON object"
            continue
        raw_id = row.get("id", f"line-{line_no}")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            yield line_no, None, None, (f"'id' must be a non-empty string or an integer, got "
                                        f"{json.dumps(raw_id)[:40]}")
            continue
        row_id = str(raw_id)
        source = row.get("messages")
        if source is None:
            source = next((row[k] for k in _TEXT_FIELDS if k in row), None)
        if source is None:
            yield line_no, row_id, None, "row has none of 'messages', 'question', 'prompt', 'input'"
            continue
        try:
            options = options_of(row, source=f"line {line_no}")
            call = None if options is None else options.model_dump(exclude_none=True)
            yield line_no, row_id, (normalize_messages(source), call), None
        except ConfigError as e:
            yield line_no, row_id, None, str(e)


async def arun_batch(
    graph: Any,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    errors_path: str | os.PathLike[str] | None = None,
    max_concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool = True,
    executor: Any = "local",
    record: Any = None,
) -> RunSummary:
    """Runs ``graph`` (an :class:`~aft_sdk.graphs.AggregateGraph`) over a JSONL file.

    Args:
        graph: The graph to run on every row (an ``AggregateGraph``, or a
            ``GraphConfig`` / YAML path to build it from).
        input_path: JSONL input (see the module docstring for the row format).
        output_path: JSONL output; appended to, one ``{"id", "answer", "cost_usd", "result"}``
            per row (``cost_usd`` in dollars; ``None`` where some call's price is unknown).
        errors_path: Where bad rows and failed runs go; default ``OUTPUT.errors.jsonl``.
        max_concurrency: Rows in flight at once (in all, over every worker).
        progress: Show a progress bar on stderr (rows done, failed, tokens so far).
        executor: Where the graph runs: ``"local"`` (this process), ``"ray"``, or an
            executor object (``LocalExecutor()``, ``RayExecutor(workers=4, ...)``; see
            :mod:`aft_sdk.scale`). On Ray the graph runs in actors built from its config
            (``graph`` may then be a ``GraphConfig`` or YAML path, never built here),
            keys from the workers' environment; this process reads, writes and resumes
            exactly as locally.
        record: A folder (or :class:`~aft_sdk.record.Recorder`) where each answered row's
            run is also kept as a training record (route ``batch``; see
            :mod:`aft_sdk.record`), written here whatever the executor.
    """
    src = Path(input_path)
    if not src.is_file():
        raise ConfigError(f"input file not found: {src}")
    items, bad = [], []
    for line_no, row_id, payload, error in _rows(src):
        if error is not None:
            bad.append({"line": line_no, "id": row_id, "error": error})
        else:
            messages, call = payload
            items.append(RunItem(row_id, payload, {"line": line_no}, fingerprint=fingerprint(
                messages if call is None else [messages, call])))

    from aft_sdk.scale import as_executor

    if record is not None and getattr(graph, "recorder", None) is not None:
        raise ConfigError("the graph records its runs already (AggregateGraph(record=...)): "
                          "give record= to one of the graph and run_batch")
    recorder = as_recorder(record)  # one per folder, kept: nothing to close if bind fails
    if recorder is not None:  # what names the rows (a YAML graph read here for it only)
        config = load_yaml(graph, GraphConfig) if isinstance(graph, (str, os.PathLike)) \
            else getattr(graph, "config", graph)
        name = getattr(config, "name", None) or "batch"
        identity = graph_identity(graph if hasattr(graph, "_live") else config)
    runs = as_executor(executor).bind(graph)

    async def work(item: RunItem) -> dict[str, Any]:
        messages, call = item.payload
        result = await runs.run(messages, call)
        if recorder is not None:
            recorder.add(result, model=name, config=identity, route="batch")
        row = {"answer": result.answer, "cost_usd": result.usage.known_cost_usd,
               "result": result.model_dump(mode="json")}
        return row if not result.tool_calls else {**row, "tool_calls": result.tool_calls}

    try:
        return await run_resumable(
            items, work, output_path, errors_path=errors_path, inputs=[src], bad=bad,
            max_concurrency=max_concurrency, desc="aft batch", progress=progress,
            tokens_of=lambda row: row["result"]["usage"]["total_tokens"])
    finally:
        runs.close()
        if recorder is not None:
            recorder.flush()  # every row on disk before returning


def run_batch(graph: Any, input_path: str | os.PathLike[str], output_path: str | os.PathLike[str],
              **kwargs: Any) -> RunSummary:
    """Blocking twin of :func:`arun_batch`."""
    return run_sync(arun_batch(graph, input_path, output_path, **kwargs))
