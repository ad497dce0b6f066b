"""Small formatting helpers shared by the viewer's pages: escaping, numbers, money, and
the word-level diff of a draft against the answer."""

from __future__ import annotations

import html
import json
import re
from difflib import SequenceMatcher
from typing import Any

#: Word tokens: a run of non-space and the spaces after it.
_TOKENS = re.compile(r"\S+\s*")
#: Past this many tokens on either side a diff is not computed (quadratic at worst).
DIFF_LIMIT = 20_000


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML content and quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def short_json(value: Any, limit: int = 300) -> str:
    """``value`` as compact JSON (strings bare), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                            default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def money(value: float) -> str:
    """Dollars with enough digits to tell small calls apart (``$0.000023``)."""
    if value == 0:
        return "$0"
    if abs(value) < 1e-6:
        return "< $0.000001"
    digits = 4 if abs(value) >= 0.01 else 6
    return "$" + f"{value:.{digits}f}".rstrip("0").rstrip(".")


def seconds(value: Any) -> str:
    try:
        return f"{float(value):.2f} s"
    except (TypeError, ValueError):
        return "—"


def number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else esc(value)


def record_cost(record: dict[str, Any]) -> str:
    """One call's cost: dollars, ``unknown`` (tokens but no price), or ``—`` (no call)."""
    cost = record.get("cost_usd")
    if cost is not None:
        return money(float(cost))
    if record.get("derived"):
        return "no call"
    if record.get("prompt_tokens") or record.get("completion_tokens"):
        return "unknown"
    return "—"


def usage_cost(usage: dict[str, Any]) -> str:
    """A total's cost; a lower bound (and who is unpriced) where some calls had no price,
    never a plain 0 for calls nothing priced."""
    cost = float(usage.get("cost_usd") or 0.0)
    unpriced = [str(u) for u in usage.get("unpriced") or []]
    if not unpriced:
        return money(cost)
    names = ", ".join(unpriced)
    if cost > 0:
        return f"≥ {money(cost)} (unknown for: {names})"
    return f"unknown (no price for: {names})"


def cost_sort_key(usage: dict[str, Any] | None, explicit: Any = "absent") -> str:
    """The number an index sorts "most expensive" by, as text; empty when unknown."""
    if explicit != "absent":
        return "" if explicit is None else repr(float(explicit))
    if not usage:
        return ""
    cost = float(usage.get("cost_usd") or 0.0)
    if usage.get("unpriced") and cost == 0:
        return ""
    return repr(cost)


def tokens_of(text: str) -> list[str]:
    return _TOKENS.findall(text)


def word_diff(draft: str, answer: str) -> str:
    """HTML of ``draft`` against ``answer`` word by word: words only the draft has in
    ``<del class="rm">``, words only the answer has in ``<ins class="add">``."""
    a, b = tokens_of(draft), tokens_of(answer)
    if len(a) > DIFF_LIMIT or len(b) > DIFF_LIMIT:
        return '<span class="note">(too long to compare word by word)</span>' + esc(draft)
    # Words are compared; each keeps the spaces after it (a newline for a space is no
    # change), and equal runs keep the draft's own spacing.
    lead = draft[: len(draft) - len(draft.lstrip())]
    matcher = SequenceMatcher(None, [t.strip() for t in a], [t.strip() for t in b],
                              autojunk=False)
    out, spaced = [esc(lead)], True  # spaced: the text so far ends with a space

    def add(html_text: str, raw: str) -> None:
        nonlocal spaced
        if not spaced and raw[:1].strip():
            out.append(" ")  # the draft's last word, then a word of the answer
        out.append(html_text)
        spaced = not raw[-1:].strip()

    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            add(esc("".join(a[i1:i2])), "".join(a[i1:i2]))
            continue
        if op in ("delete", "replace"):
            add(_marked("del", "rm", a[i1:i2]), "".join(a[i1:i2]))
        if op in ("insert", "replace"):
            add(_marked("ins", "add", b[j1:j2]), "".join(b[j1:j2]))
    return "".join(out)


def _marked(tag: str, cls: str, parts: list[str]) -> str:
    text = "".join(parts)
    if not text.strip():
        return esc(text)
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()):]
    return f'{esc(lead)}<{tag} class="{cls}">{esc(text.strip())}</{tag}>{esc(trail)}'


def same_text(draft: str, answer: str) -> bool:
    return draft.split() == answer.split()


def safe_name(text: str, index: int) -> str:
    """A file name for one row's page: its position (unique) and a readable id."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:60]
    return f"{index:04d}-{slug or 'row'}.html"


def tool_calls_html(calls: list[dict[str, Any]] | None) -> str:
    """Tool calls (OpenAI's format) as ``name(arguments)`` lines."""
    if not calls:
        return ""
    items = []
    for call in calls:
        fn = (call.get("function") or {}) if isinstance(call, dict) else {}
        name = fn.get("name") or "?"
        args = fn.get("arguments", "")
        try:
            args = pretty_json(json.loads(args)) if isinstance(args, str) and args else args
        except ValueError:
            pass
        if not isinstance(args, str):
            args = pretty_json(args)
        items.append(f'<li><code class="fn">{esc(name)}</code>'
                     f'<pre class="args">{esc(args)}</pre></li>')
    return f'<div class="calls"><div class="label">tool calls</div><ul>{"".join(items)}</ul></div>'
