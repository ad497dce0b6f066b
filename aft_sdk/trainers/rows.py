"""AFT rows: (conversation, proposals, target), their validation, and dataset loading.

A row on disk (JSONL, JSON or Parquet) looks like::

    {"id": "q17", "messages": [{"role": "user", "content": "..."}],
     "proposals": ["draft 1", "draft 2"], "target": "the refined answer",
     "kind": "aft", "source": "ultrafeedback"}

``kind`` is ``aft`` (learn to aggregate) or ``sft`` (plain conversation -> answer, no
proposals), so one model can learn both to propose and to aggregate.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from tqdm.auto import tqdm

from aft_sdk.errors import ConfigError, TrainingError
from aft_sdk.jsonl import read_jsonl
from aft_sdk.messages import normalize_messages
from aft_sdk.outputs import check_output, output_lock
from aft_sdk.runner import RunItem, run_resumable

logger = logging.getLogger(__name__)

LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class AftRow(BaseModel):
    """One training row.

    Attributes:
        id: Stable key (resumable building, deduplication).
        messages: The conversation up to the turn being answered.
        proposals: Drafts the aggregator sees (empty for ``sft`` rows).
        target: What the model should write.
        kind: ``aft`` or ``sft``.
        source: Where the row came from (dataset, builder, teacher model).
        meta: Extras such as the proposal models and token usage of on-policy sampling.
    """

    id: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    proposals: list[str] = Field(default_factory=list)
    target: str = Field(min_length=1)
    kind: Literal["aft", "sft"] = "aft"
    source: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class RowError(TrainingError):
    """A dataset row is unusable; the message names the row and the field."""


def validate_row(raw: Any, where: str) -> AftRow:
    """Validates one raw row, raising :class:`RowError` that names row and field."""
    if not isinstance(raw, dict):
        raise RowError(f"{where}: a row must be an object, got {type(raw).__name__}")
    try:
        row = AftRow.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(row)"
        raise RowError(f"{where}: field '{field}': {first['msg']}") from e
    try:
        row.messages = normalize_messages(row.messages)
    except ConfigError as e:
        raise RowError(f"{where}: field 'messages': {e}") from e
    if row.kind == "aft" and not row.proposals:
        raise RowError(f"{where}: field 'proposals': an aft row needs at least one proposal")
    if any(not isinstance(p, str) or not p.strip() for p in row.proposals):
        raise RowError(f"{where}: field 'proposals': proposals must be non-empty strings")
    return row


class RowCounter:
    """Counts rows skipped for being bad, for the caller's report."""

    def __init__(self) -> None:
        self.skipped = 0
        self.examples: list[str] = []

    def add(self, message: str) -> None:
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(message)


def validate_rows(
    raws: Iterable[Any], *, skip_bad: bool = False, counter: RowCounter | None = None,
    source: str = "dataset",
) -> Iterator[AftRow]:
    """Validates rows in order. Bad rows raise, or with ``skip_bad`` are counted."""
    for i, raw in enumerate(raws, start=1):
        try:
            yield validate_row(raw, f"{source} row {i}")
        except RowError as e:
            skip_or_raise(e, skip_bad=skip_bad, counter=counter)


def skip_or_raise(err: RowError, *, skip_bad: bool, counter: RowCounter | None) -> None:
    """Raises ``err``; with ``skip_bad`` logs and counts it instead (never silently)."""
    if not skip_bad:
        raise err
    logger.warning("skipping bad row: %s", err)
    if counter is not None:
        counter.add(str(err))


def looks_local(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a local file rather than a Hub dataset id."""
    text = str(source)
    return (Path(text).suffix in LOCAL_SUFFIXES or Path(text).exists()
            or text.startswith((".", "/", "~")))


def load_records(
    source: str | os.PathLike[str], *, split: str = "train", name: str | None = None,
    skip_bad: bool = False, counter: RowCounter | None = None,
) -> Any:
    """Loads a local JSON/JSONL/Parquet file or a Hugging Face Hub dataset.

    Returns a list of records (JSONL, read by :func:`aft_sdk.jsonl.read_jsonl`: a line
    that is not JSON is an error naming it, or skipped with ``skip_bad``) or a
    ``datasets.Dataset``. A path that looks local but does not exist is an error (not a
    silent hub lookup).

    Raises:
        ConfigError: The file is missing or of an unknown type.
    """
    import datasets

    text = str(source)
    path = Path(text)
    if looks_local(text):
        path = path.expanduser()
        if not path.is_file():
            raise ConfigError(f"dataset file not found: {path}")
        if path.suffix not in LOCAL_SUFFIXES:
            raise ConfigError(f"{path}: use a .jsonl, .json or .parquet file")
        if path.suffix == ".jsonl":  # our reader: bad lines named by number, or skipped
            return list(read_jsonl(path, skip_bad=skip_bad,
                                   on_bad=counter.add if counter is not None else None))
        return datasets.load_dataset(
            LOCAL_SUFFIXES[path.suffix], data_files=str(path), split="train"
        )
    # A hub id such as "openbmb/UltraFeedback" (needs network access to the Hub).
    return datasets.load_dataset(text, name, split=split)


def record_id(record: dict[str, Any], id_field: str, default: str, where: str) -> str:
    """The record's id as text (``default`` when it has none); null, empty, boolean or
    structured ids are refused rather than becoming ``"None"`` and the like."""
    value = record.get(id_field, default)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise RowError(f"{where}: field '{id_field}' must be a non-empty string or an "
                       f"integer, got {json.dumps(value, default=str)[:40]}")
    return str(value)


def messages_of(record: dict[str, Any], prompt_field: str, where: str) -> list[dict[str, str]]:
    """The record's ``prompt_field`` as chat messages, naming the record when bad."""
    value = record.get(prompt_field)
    if value is None:
        raise RowError(f"{where}: field '{prompt_field}' is missing")
    try:
        return normalize_messages(value)
    except ConfigError as e:
        raise RowError(f"{where}: field '{prompt_field}': {e}") from e


def write_rows(rows: Iterable[AftRow], path: str | os.PathLike[str], *, progress: bool = False,
               inputs: Sequence[str | os.PathLike[str]] = ()) -> int:
    """Writes rows to JSONL, replacing an earlier build; returns how many.

    The output follows :func:`aft_sdk.outputs.check_output` (not an input, not a file
    aft-sdk did not write) and is locked while written. Rows go to a temporary file
    that replaces the output only when all of them are written, so a failure midway
    leaves the earlier file as it was.
    """
    out = check_output(path, inputs=inputs)
    tmp = out.with_name(out.name + ".partial")
    n = 0
    with output_lock(out):
        try:
            with tmp.open("w", encoding="utf-8") as f:
                for row in tqdm(rows, desc="rows", unit="row", disable=not progress):
                    f.write(row.model_dump_json() + "\n")
                    n += 1
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    return n


def rows_to_dataset(rows: Iterable[AftRow]) -> Any:
    """Rows as a ``datasets.Dataset`` (columns: the AftRow fields, ``meta`` as JSON text)."""
    import datasets

    return datasets.Dataset.from_generator(
        lambda: ({**r.model_dump(), "meta": json.dumps(r.meta)} for r in rows)
    )


async def resumable_rows(
    items: Sequence[RunItem], out_path: str | os.PathLike[str],
    work: Callable[[RunItem], Awaitable[AftRow]], *, max_concurrency: int, desc: str,
    progress: bool, inputs: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, int]:
    """Runs ``work(item) -> AftRow`` through the shared resumable runner."""
    async def row(item: RunItem) -> dict[str, Any]:
        return (await work(item)).model_dump()

    summary = await run_resumable(items, row, out_path, max_concurrency=max_concurrency,
                                  desc=desc, progress=progress, inputs=inputs)
    return {"written": summary.written, "skipped": summary.skipped,
            "failed": summary.failed + summary.bad_rows}
