"""``view``: read a run, a batch output or an evaluation folder and write its pages."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aft_sdk.errors import ConfigError
from aft_sdk.graphs.trace import AggregateResult
from aft_sdk.jsonl import iter_lines
from aft_sdk.view.index_page import render_index
from aft_sdk.view.run_page import render_run

#: What the viewer reads, for error messages.
WHAT = ("give the JSON that `aft run --json` prints (one result with its layers), an "
        "`aft batch` output (JSONL rows with id, answer and result) or an `aft eval` "
        "output folder (with runs/*.jsonl)")


def view(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Writes the HTML page(s) of a run, a batch output or an evaluation; returns the page
    to open.

    Args:
        path: A JSON file of one result (``aft run --json``), a JSONL output of
            ``aft batch`` (its ``OUTPUT.errors.jsonl`` beside it is read too), or an
            ``aft eval`` output folder.
        out: The page to write; default ``NAME.html`` beside the input. The pages of a
            batch's or an evaluation's runs go in the folder ``NAME_runs`` beside it.

    Raises:
        ConfigError: The input is none of these.
    """
    src = Path(path)
    if not src.exists():
        raise ConfigError(f"{src} not found: {WHAT}")
    if src.is_dir():
        rows, table, title = _eval_rows(src)
        default = src.resolve().with_name(src.resolve().name + ".html")
        kind = "index"
    else:
        kind, loaded = _read_file(src)
        default = src.with_name(src.name.removesuffix(".jsonl").removesuffix(".json") + ".html")
        rows, table, title = loaded, None, f"aft batch: {src.name}"
    target = Path(out) if out is not None else default
    if target.exists() and target.resolve() == src.resolve():
        raise ConfigError(f"the page would overwrite its input {src}: give -o PAGE.html")
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "run":
        target.write_text(render_run(rows), encoding="utf-8")
        return target
    runs_dir = target.with_name(target.stem + "_runs")
    index, pages = render_index(rows, title=title, runs_dir_name=runs_dir.name, table=table,
                                index_name=target.name)
    if pages:
        runs_dir.mkdir(exist_ok=True)
        for name, html in pages.items():
            (runs_dir / name).write_text(html, encoding="utf-8")
    target.write_text(index, encoding="utf-8")
    return target


def _read_file(src: Path) -> tuple[str, Any]:
    """``("run", result)`` or ``("index", rows)`` from a file."""
    try:
        text = src.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{src} is not UTF-8 text: {WHAT}") from None
    if not text.strip():
        raise ConfigError(f"{src} is empty: {WHAT}")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    else:
        if isinstance(whole, dict) and "layers" in whole:
            return "run", _result(whole, src)
        if isinstance(whole, dict):  # one row of a batch, or no run at all
            return "index", _rows([(1, whole)], src)
        if isinstance(whole, list) and whole and all(isinstance(r, dict) for r in whole):
            return "index", _rows(list(enumerate(whole, start=1)), src)
        raise ConfigError(f"{src} holds JSON that is not a run: {WHAT}")
    rows = _jsonl(src, text.encode("utf-8"))
    errors = src.with_name(src.name + ".errors.jsonl")
    found = _rows(rows, src)
    if not src.name.endswith(".errors.jsonl") and errors.is_file():
        found += _rows(_jsonl(errors, errors.read_bytes()), errors, failed=True)
    return "index", found


def _jsonl(src: Path, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    lines = list(iter_lines(data))
    found = []
    for n, (line_no, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError as e:
            if n == len(lines) - 1 and n and line.lstrip().startswith(b"{"):
                break  # a last line cut short by a kill: the rows before it stand
            raise ConfigError(f"{src}, line {line_no}: not JSON ({e}): {WHAT}") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{src}, line {line_no}: not a JSON object: {WHAT}")
        found.append((line_no, row))
    return found


def _rows(rows: list[tuple[int, dict[str, Any]]], src: Path, *, failed: bool = False
          ) -> list[dict[str, Any]]:
    """Output rows with each result checked (a bare result becomes a row of its own)."""
    out = []
    for line_no, row in rows:
        if "layers" in row and "answer" in row:  # a result per line
            row = {"id": f"line-{line_no}", "answer": row["answer"], "result": row}
        elif failed and "error" not in row:
            raise ConfigError(f"{src}, line {line_no}: an errors file's rows have 'error'")
        elif not ({"result", "error"} & row.keys() or {"method", "score"} <= row.keys()):
            hint = (" (an input row? view the output of `aft batch`, not its input)"
                    if {"question", "messages", "prompt"} & row.keys() else "")
            raise ConfigError(f"{src}, line {line_no}: a row with none of 'layers', 'result',"
                              f" 'error' (its keys: {', '.join(sorted(row)[:8])}){hint}: {WHAT}")
        if isinstance(row.get("result"), dict):
            row = {**row, "result": _result(row["result"], src, line_no)}
        out.append(row)
    return out


def _result(data: dict[str, Any], src: Path, line_no: int | None = None) -> dict[str, Any]:
    """The result's JSON as the current version writes it (older traces are read too)."""
    where = f"{src}, line {line_no}" if line_no is not None else str(src)
    try:
        return AggregateResult.model_validate(data).model_dump(mode="json")
    except ValueError as e:  # pydantic's ValidationError
        first = str(e).splitlines()[1:3]
        raise ConfigError(f"{where}: not a valid run result ({'; '.join(first)}): {WHAT}"
                          ) from None


def _eval_rows(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
    """An evaluation's rows (each method's, its failures after them), table and title."""
    runs = sorted(p for p in (folder / "runs").glob("*.jsonl")
                  if not p.name.endswith(".errors.jsonl"))
    if not runs:
        raise ConfigError(f"{folder} is a folder without runs/*.jsonl: {WHAT}")
    rows: list[dict[str, Any]] = []
    for path in runs:
        method = path.name.removesuffix(".jsonl")
        for row in _rows(_jsonl(path, path.read_bytes()), path):
            rows.append({"method": method, **row})
        errors = path.with_name(path.name + ".errors.jsonl")
        if errors.is_file():
            for row in _rows(_jsonl(errors, errors.read_bytes()), errors, failed=True):
                rows.append({"method": method, **row})
    table, task = None, None
    table_path = folder / "table.json"
    if table_path.is_file():
        try:
            data = json.loads(table_path.read_text(encoding="utf-8"))
            table, task = data.get("rows"), data.get("task")
        except (ValueError, AttributeError):
            table = None
    name = folder.resolve().name
    return rows, table, f"aft eval: {name}" + (f" ({task})" if task else "")
