"""JSONL reading and writing: the one implementation every part of aft-sdk uses.

- Lines are split on ``\\n`` only. ``str.splitlines`` also splits on U+2028, U+0085 and
  other separators that ``json.dumps(..., ensure_ascii=False)`` leaves unescaped inside
  strings, so one model answer holding such a character would break every later read.
- Each row is appended as one write of one full line, flushed and ``fsync``-ed: a killed
  process leaves at most a torn last line, which :func:`repair_tail` cuts off.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from aft_sdk.errors import ConfigError

logger = logging.getLogger(__name__)


def iter_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(line_no, line)`` for each non-blank ``\\n``-separated line of ``data``."""
    for n, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield n, line


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yields the JSON objects of a JSONL file.

    Raises:
        ConfigError: The file is missing, or a line is not JSON (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"JSONL file not found: {p} (check the path)")
    for n, line in iter_lines(p.read_bytes()):
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} line {n}: not valid JSON ({e}); fix or remove that line") from e


def repair_tail(path: Path) -> None:
    """Cuts a torn last line (a write interrupted by a kill) off ``path``."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("dropping a partial last line in %s (an interrupted write)", path)
        with path.open("r+b") as f:
            f.truncate(end)


def read_ids(path: str | os.PathLike[str], field: str = "id") -> set[str]:
    """The ``field`` values of every row in ``path`` (after repairing a torn tail).

    Raises:
        ConfigError: A line is not a JSON object with ``field``: the file is not ours.
    """
    p = Path(path)
    repair_tail(p)
    if not p.exists():
        return set()
    ids = set()
    for n, line in iter_lines(p.read_bytes()):
        try:
            ids.add(str(json.loads(line)[field]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConfigError(
                f"{p} line {n} is not a result row ({type(e).__name__}: {e}); this file "
                "was not written by aft-sdk, or it was edited: fix or move that line"
            ) from e
    return ids


def dumps(row: Any) -> str:
    """One JSON line (no trailing newline); non-ASCII text is kept readable."""
    return json.dumps(row, ensure_ascii=False)


def append_jsonl(path: str | os.PathLike[str], row: Any) -> None:
    """Appends one row as one full line, flushed and synced to disk."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> int:
    """Writes ``rows`` to ``path`` (overwriting) and returns how many were written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps(row) + "\n")
            n += 1
    return n
