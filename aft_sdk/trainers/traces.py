"""Rows from graph results: proposals are layer 0, the target the final answer."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from aft_sdk.jsonl import read_jsonl
from aft_sdk.trainers.rows import AftRow, RowError, validate_row


def trace_rows(
    results: Iterable[Any] | str | os.PathLike[str], *, references: dict[str, str] | None = None,
) -> Iterator[AftRow]:
    """Rows from graph results: proposals are layer 0, the target the final answer.

    Args:
        results: ``AggregateResult`` objects, their dicts, ``aft batch`` output rows,
            or the path of an ``aft batch`` output file.
        references: Optional ``{id: reference}``; a reference replaces the answer as target.
    """
    if isinstance(results, (str, os.PathLike)):
        results = read_jsonl(results)
    for i, item in enumerate(results):
        data = item.model_dump() if hasattr(item, "model_dump") else dict(item)
        row_id = str(data.get("id", f"trace-{i}"))
        result = data.get("result", data)
        layers = result.get("layers") or []
        if not layers:
            raise RowError(f"trace {i}: field 'layers' is missing; pass graph results")
        proposals = [r["text"] for r in layers[0]["outputs"] if r["ok"]]
        target = (references or {}).get(row_id) or result.get("answer", "")
        yield validate_row(
            {"id": row_id, "messages": result.get("messages"), "proposals": proposals,
             "target": target, "source": "trace",
             "meta": {"usage": result.get("usage", {})}},
            f"trace {i}",
        )
