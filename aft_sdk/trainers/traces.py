"""Rows from graph results: proposals are layer 0, the target the final answer."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from aft_sdk.graphs.trace import OutputRecord, drafts_of
from aft_sdk.jsonl import read_jsonl
from aft_sdk.trainers.rows import AftRow, RowCounter, RowError, skip_or_raise, validate_row


def trace_rows(
    results: Iterable[Any] | str | os.PathLike[str], *, references: dict[str, str] | None = None,
    skip_bad: bool = False, counter: RowCounter | None = None,
) -> Iterator[AftRow]:
    """Rows from graph results: proposals are layer 0, the target the final answer.

    Args:
        results: ``AggregateResult`` objects, their dicts, ``aft batch`` output rows,
            or the path of an ``aft batch`` output file.
        references: Optional ``{id: reference}``; a reference replaces the answer as target.
        skip_bad: Count and skip unusable traces (and lines that are not JSON, such as the
            torn last line a killed batch leaves) instead of raising.
        counter: Where skipped traces are counted.
    """
    if isinstance(results, (str, os.PathLike)):
        results = read_jsonl(results, skip_bad=skip_bad,
                             on_bad=counter.add if counter is not None else None)
    for i, item in enumerate(results):
        try:
            yield _trace_row(item, i, references)
        except RowError as e:
            skip_or_raise(e, skip_bad=skip_bad, counter=counter)


def _trace_row(item: Any, i: int, references: dict[str, str] | None) -> AftRow:
    where = f"trace {i + 1}"
    data = item.model_dump() if hasattr(item, "model_dump") else item
    if not isinstance(data, dict):
        raise RowError(f"{where}: a trace must be an object, got {type(data).__name__}")
    row_id = str(data.get("id", f"trace-{i}"))
    result = data.get("result", data)
    layers = result.get("layers") if isinstance(result, dict) else None
    if not layers or not isinstance(layers, list):
        raise RowError(f"{where}: field 'layers' is missing; pass graph results")
    try:
        layers[0]["outputs"]  # noqa: B018 - a result has layer 0 (a clear error otherwise)
        # Drafts: layer 0's outputs; of a step-level search, the paths its answer read.
        proposals = drafts_of(OutputRecord.model_validate(r) for layer in layers
                              for r in layer["outputs"])
    except (KeyError, TypeError, IndexError, ValidationError) as e:
        raise RowError(f"{where}: layer 0 is not a graph result's ({e!r})") from e
    target = (references or {}).get(row_id) or result.get("answer", "")
    return validate_row(
        {"id": row_id, "messages": result.get("messages"), "proposals": proposals,
         "target": target, "source": "trace", "meta": {"usage": result.get("usage", {})}},
        where,
    )
