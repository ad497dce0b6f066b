"""The index of many runs (an ``aft batch`` output, an ``aft eval`` folder): one line
per row with its status, cost and time, filters and sorts in the page, and a link to
each run's own page."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aft_sdk.view.assets import INDEX_JS, page
from aft_sdk.view.fmt import (cost_sort_key, esc, number, record_cost, safe_name, seconds,
                              short_json, usage_cost)
from aft_sdk.view.run_page import render_run

_NUMERIC = {"#", "score", "tokens", "cost", "elapsed", "generations"}


def render_index(rows: list[dict[str, Any]], *, title: str, runs_dir_name: str,
                 table: list[dict[str, Any]] | None = None, index_name: str | None = None,
                 pages: bool = True) -> tuple[str, dict[str, str]]:
    """The index page of ``rows`` and the pages of the runs it links to.

    Args:
        rows: Output rows (``{"id", "answer", "result"}``, eval rows with ``method`` and
            ``score``) and failed rows (with ``error``), in the order to list them.
        title: The page's heading.
        runs_dir_name: The folder, beside the index, that the run pages go in.
        table: An evaluation's table rows (``table.json``), shown above the list.
        index_name: The index's file name, for the run pages' links back (default
            ``NAME.html`` for a ``runs_dir_name`` of ``NAME_runs``).
        pages: Render the run pages too (``False``: the index only; a row's ``page``,
            where it has one, names its page's file).

    Returns:
        The index page, and each run page by its file name inside ``runs_dir_name``.
    """
    out: dict[str, str] = {}
    back = index_name or runs_dir_name.removesuffix("_runs") + ".html"
    lines = []
    has_method = any("method" in r for r in rows)
    has_score = any("score" in r for r in rows)
    for pos, row in enumerate(rows):
        result = row.get("result") if isinstance(row.get("result"), dict) else None
        link = None
        if result is not None and "error" not in row:
            name = row.get("page") or safe_name(_label(row), pos)
            link = f"{quote(runs_dir_name)}/{quote(name)}"
            if pages:
                out[name] = run_page(row, back)
        lines.append(_line(row, pos, result, link, has_method, has_score))
    n_failed = sum("error" in r for r in rows)
    heads = ["#", "id"] + (["method"] if has_method else []) + ["status"] + \
        (["score"] if has_score else []) + \
        ["answer / error", "tokens", "cost", "elapsed", "generations"]
    sorts = [("input", "input order"), ("elapsed", "slowest first"),
             ("cost", "most expensive first"), ("tokens", "most tokens first")]
    if has_score:
        sorts.append(("-score", "lowest score first"))
    options = "".join(f'<option value="{v}">{esc(t)}</option>' for v, t in sorts)
    body = [f"<h1>{esc(title)}</h1>",
            f'<div class="facts" id="facts"><div><b>rows</b> {len(rows)}</div>'
            f'<div><b>ok</b> {len(rows) - n_failed}</div><div><b>failed</b> {n_failed}</div>'
            f"{_total_cost(rows)}</div>",
            _table(table) if table else "",
            '<div class="toolbar">'
            '<label><input type="checkbox" id="failed-only"> failed only</label>'
            f'<label>sort <select id="sort">{options}</select></label>'
            '<input type="search" id="filter" placeholder="filter by any text">'
            '<span id="shown" class="note"></span></div>',
            '<table class="rows"><thead><tr>'
            + "".join(f'<th class="num">{esc(h)}</th>' if h in _NUMERIC else f"<th>{esc(h)}</th>"
                      for h in heads)
            + f'</tr></thead><tbody id="rows">{"".join(lines)}</tbody></table>']
    return page(esc(title), "\n".join(body), INDEX_JS), out


def run_page(row: dict[str, Any], back: str) -> str:
    """The page of one row's run (an evaluation's row: with the method's own answer)."""
    result = row["result"]
    answer = row.get("answer") if row.get("method") else None
    return render_run(result, title=_run_title(row, result), back=f"../{quote(back)}",
                      answer=answer)


def _label(row: dict[str, Any]) -> str:
    rid = row.get("id")
    text = f"line {row['line']}" if rid is None and row.get("line") is not None else str(rid)
    return f"{row['method']}-{text}" if row.get("method") else text


def _run_title(row: dict[str, Any], result: dict[str, Any]) -> str:
    who = f"{row['method']} · " if row.get("method") else ""
    return f"{who}{row.get('id')}"


def _line(row: dict[str, Any], pos: int, result: dict[str, Any] | None, link: str | None,
          has_method: bool, has_score: bool) -> str:
    failed = "error" in row
    usage = (result or {}).get("usage") or {}
    tokens = usage.get("total_tokens", row.get("tokens"))
    generations = usage.get("generations", row.get("generations"))
    elapsed = (result or {}).get("elapsed_s")
    if result is not None:
        cost_text, cost_key = usage_cost(usage), cost_sort_key(usage)
    elif "cost_usd" in row:
        cost_text = record_cost({"cost_usd": row["cost_usd"], "prompt_tokens": tokens})
        cost_key = cost_sort_key(None, row["cost_usd"])
    else:
        cost_text, cost_key = "—", ""
    if failed:
        cost_text = "—"
    rid = row.get("id")
    shown_id = esc(rid) if rid is not None else f'<span class="note">line {esc(row.get("line"))}</span>'
    id_cell = f'<a class="run-link" href="{esc(link)}">{shown_id}</a>' if link else shown_id
    status = "failed" if failed else "ok"
    cells = [f'<td class="num">{pos + 1}</td>', f'<td class="id">{id_cell}</td>']
    if has_method:
        cells.append(f'<td>{esc(row.get("method", ""))}</td>')
    cells.append(f'<td class="status-{status}">{status}</td>')
    if has_score:
        cells.append(f'<td class="num">{esc(row.get("score", ""))}</td>')
    if failed:
        cells.append(f'<td class="err">{esc(short_json(row.get("error"), 400))}</td>')
    else:
        cells.append(f'<td class="preview">{esc(_preview(row, result))}</td>')
    cells += [f'<td class="num">{number(tokens) if tokens is not None else "—"}</td>',
              f'<td class="num cost">{esc(cost_text)}</td>',
              f'<td class="num">{seconds(elapsed) if elapsed is not None else "—"}</td>',
              f'<td class="num">{number(generations) if generations is not None else "—"}</td>']
    data = {"pos": pos, "status": status, "cost": "" if failed else cost_key,
            "elapsed": "" if elapsed is None else repr(float(elapsed)),
            "tokens": tokens if isinstance(tokens, int) else "",
            "score": row.get("score") if isinstance(row.get("score"), (int, float)) else ""}
    attrs = " ".join(f'data-{k}="{esc(v)}"' for k, v in data.items())
    return f'<tr class="{status}" {attrs}>{"".join(cells)}</tr>'


def _preview(row: dict[str, Any], result: dict[str, Any] | None) -> str:
    answer = row.get("answer")
    if answer is None and result is not None:
        answer = result.get("answer")
    text = " ".join(str(answer or "").split())
    calls = row.get("tool_calls")
    if calls:
        names = ", ".join(str((c.get("function") or {}).get("name", "?"))
                          for c in calls if isinstance(c, dict))
        text = f"[calls {names}] {text}".strip()
    return text if len(text) <= 160 else text[:159] + "…"


def _total_cost(rows: list[dict[str, Any]]) -> str:
    """The rows' summed cost: a lower bound where a row's cost is unknown."""
    total, unknown = 0.0, False
    for r in rows:
        if "error" in r:
            continue
        usage = (r.get("result") or {}).get("usage") if isinstance(r.get("result"), dict) else None
        if usage is not None:
            total += float(usage.get("cost_usd") or 0.0)
            unknown = unknown or bool(usage.get("unpriced"))
        elif r.get("cost_usd") is not None:
            total += float(r["cost_usd"])
        else:
            unknown = True
    if unknown:
        text = f"≥ {usage_cost({'cost_usd': total})} (some calls unpriced)" if total else "unknown"
    else:
        text = usage_cost({"cost_usd": total})
    return f'<div><b>cost</b> {esc(text)}</div>'


def _table(table: list[dict[str, Any]]) -> str:
    """An evaluation's comparison table, as ``aft eval`` wrote it."""
    cols = [c for c in ("method", "kind", "width", "depth", "items", "score", "score_low",
                        "score_high", "tokens_per_item", "generations_per_item", "errors",
                        "cost_usd", "cost_per_item")
            if any(c in r for r in table)]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{esc(short_json(r.get(c, ''), 80))}</td>"
                                    for c in cols) + "</tr>" for r in table)
    return (f'<section class="block" id="table"><div class="head"><h2>Methods</h2></div>'
            f'<table class="rows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            "</section>")
