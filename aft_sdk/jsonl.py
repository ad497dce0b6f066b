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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from aft_sdk.errors import ConfigError

logger = logging.getLogger(__name__)


def iter_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(line_no, line)`` for each non-blank ``\\n``-separated line of ``data``."""
    for n, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield n, line


def read_jsonl(path: str | os.PathLike[str], *, skip_bad: bool = False,
               on_bad: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Yields the JSON objects of a JSONL file (lines count from 1 in messages).

    Args:
        skip_bad: Log and skip lines that are not JSON (or not UTF-8) instead of raising.
        on_bad: Told the message of each skipped line (to count it).

    Raises:
        ConfigError: The file is missing, or a line is not JSON (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"JSONL file not found: {p} (check the path)")
    for n, line in iter_lines(p.read_bytes()):
        try:
            yield json.loads(line)
        except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError for non-UTF-8
            message = f"{p} line {n}: not valid JSON ({e}); fix or remove that line"
            if not skip_bad:
                raise ConfigError(message) from e
            logger.warning("skipping a bad line: %s", message)
            if on_bad is not None:
                on_bad(message)


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


def check_ours(path: str | os.PathLike[str], key: str = "id") -> list[dict[str, Any]]:
    """The rows of ``path`` if aft-sdk wrote it; refuses any other file untouched.

    Ours means: every complete line is a JSON object with ``key``, and a torn last
    line (a write cut by a kill) is the start of a JSON object.

    Raises:
        ConfigError: The file is not ours (the message names the line).
    """
    p = Path(path)
    data = p.read_bytes()
    end = data.rfind(b"\n") + 1
    rows = []
    for n, line in iter_lines(data[:end]):
        try:
            row = json.loads(line)
            row[key]  # noqa: B018 - a row without the key is not ours
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ConfigError(
                f"{p} line {n} is not a result row ({type(e).__name__}: {e}); this file "
                "was not written by aft-sdk, or it was edited: fix or move that line, or "
                "write to another file. Nothing was changed"
            ) from e
        rows.append(row)
    tail = data[end:]
    if tail.strip() and not tail.startswith(b'{"'):
        line = data[:end].count(b"\n") + 1
        raise ConfigError(
            f"{p} line {line} is not a result row (text with no newline: {tail[:40]!r}); "
            "this file was not written by aft-sdk: write to another file. Nothing was changed")
    return rows


def read_rows(path: str | os.PathLike[str], key: str = "id") -> dict[str, dict[str, Any]]:
    """Rows of one of our outputs by ``key`` (checked as ours, then a torn tail cut off)."""
    p = Path(path)
    if not p.exists():
        return {}
    rows = check_ours(p, key)
    repair_tail(p)
    return {str(row[key]): row for row in rows}


def read_ids(path: str | os.PathLike[str], field: str = "id") -> set[str]:
    """The ``field`` values of every row in ``path`` (see :func:`read_rows`).

    Raises:
        ConfigError: A line is not a JSON object with ``field``: the file is not ours.
    """
    return set(read_rows(path, field))


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
