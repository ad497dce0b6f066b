"""One run's page: its shape and totals, the conversation, the answer, and each layer's
outputs side by side with their costs, failures and decisions."""

from __future__ import annotations

from typing import Any

from aft_sdk.tools import render_calls
from aft_sdk.view.assets import RUN_JS, page
from aft_sdk.view.fmt import (esc, money, number, pretty_json, record_cost, seconds,
                              short_json, same_text, tool_calls_html, usage_cost, word_diff)

#: Decision keys shown as badges of their own; the rest are in the decision's details.
_SHOWN = {"rule", "stopped", "skipped", "picked", "tie", "share", "votes", "scores",
          "selection", "fallback", "winner", "no_answer"}


#: Decision keys shown as a badge of their plain value / of their JSON cut to a size.
_PLAIN = (("rule", "rule", "rule: "), ("stopped", "warn", "stopped by "),
          ("skipped", "warn", "skipped "))
_JSON = (("fallback", "warn", "fallback: ", 160), ("winner", "event", "winner: ", 80),
         ("no_answer", "warn", "no answer from ", 80))


def render_run(result: dict[str, Any], *, title: str | None = None,
               back: str | None = None, answer: str | None = None) -> str:
    """One self-contained HTML page of a run (an :class:`AggregateResult` as JSON).

    Args:
        result: The result's JSON (``AggregateResult.model_dump(mode="json")``).
        title: The page's heading; default: the start of the last user message.
        back: Where a "back" link goes (an index page), if anywhere.
        answer: The answer a method gave from this run when it is not the run's own (an
            evaluation's majority or verifier pick over the drafts): shown as the answer,
            from the draft that holds it.
    """
    layers = result.get("layers") or []
    final = _final(layers)
    if answer is not None and answer != result.get("answer"):
        result = {**result, "answer": answer}
        final = next((r for la in layers for r in la.get("outputs") or []
                      if r.get("ok") and r.get("text") == answer), final)
    answer_draft = _draft(final) if final and answer is None else str(result.get("answer", ""))
    picked = _picked(layers)
    heading = title or _default_title(result.get("messages") or [])
    parts = []
    if back:
        parts.append(f'<p><a href="{esc(back)}" id="back">← all rows</a></p>')
    parts += [f"<h1>{esc(heading)}</h1>", _facts(result),
              '<div class="toolbar"><label><input type="checkbox" id="show-diff"> '
              "show each output's word differences from the answer</label>"
              '<span class="note">in the differences, <del class="rm">struck</del> words are '
              'only in that output, <ins class="add">green</ins> words only in the answer'
              "</span></div>",
              _answer(result, final), _conversation(result.get("messages") or [])]
    for layer in layers:
        parts.append(_layer(layer, final, answer_draft, picked))
    return page(esc(heading), "\n".join(parts), RUN_JS)


def _final(layers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record holding the answer: the first surviving output of the last layer."""
    if not layers:
        return None
    outs = sorted(layers[-1].get("outputs") or [], key=lambda r: r.get("slot", 0))
    return next((r for r in outs if r.get("ok")), None)


def _draft(record: dict[str, Any]) -> str:
    text = str(record.get("text") or "")
    calls = record.get("tool_calls")
    if not calls:
        return text
    try:
        listed = render_calls(calls)
    except Exception:  # a hand-edited trace: compare its text only
        return text
    return f"{text}\n{listed}" if text else listed


def _picked(layers: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """``(layer, slot)`` of each output a rule picked, to the layer of its decision.

    A decision reads the nearest earlier layer with surviving outputs."""
    found: dict[tuple[int, int], int] = {}
    for pos, layer in enumerate(layers):
        for r in layer.get("outputs") or []:
            slot = (r.get("decision") or {}).get("picked")
            if not isinstance(slot, int) or isinstance(slot, bool):
                continue
            for earlier in reversed(layers[:pos]):
                if any(o.get("ok") for o in earlier.get("outputs") or []):
                    found[(earlier.get("index", 0), slot)] = layer.get("index", pos)
                    break
    return found


def _default_title(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            text = " ".join(_content_text(m.get("content")).split())
            if text:
                return text if len(text) <= 90 else text[:89] + "…"
    return "aft run"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _facts(result: dict[str, Any]) -> str:
    usage = result.get("usage") or {}
    facts = [("strategy", esc(result.get("strategy", "?"))),
             ("width", number(result.get("width"))), ("depth", number(result.get("depth"))),
             ("preset", esc(result.get("preset", ""))),
             ("elapsed", seconds(result.get("elapsed_s"))),
             ("tokens", f"{number(usage.get('total_tokens', 0))} "
                        f"({number(usage.get('prompt_tokens', 0))} prompt + "
                        f"{number(usage.get('completion_tokens', 0))} completion)"),
             ("generations", number(usage.get("generations", 0))),
             ("failures", number(usage.get("failures", 0))),
             ("cost", esc(usage_cost(usage)))]
    budget = result.get("budget")
    if budget:
        caps = [esc(money(float(v))) if k == "usd" and isinstance(v, (int, float))
                else f"{number(v)} {esc(k)}" for k, v in budget.items() if v is not None]
        facts.append(("budget", ", ".join(caps) or "none"))
    cells = "".join(f'<div class="fact-{esc(k)}"><b>{esc(k)}</b> {v}</div>' for k, v in facts)
    return f'<div class="facts" id="facts">{cells}</div>'


def _answer(result: dict[str, Any], final: dict[str, Any] | None) -> str:
    if final is None:
        where = '<span class="badge fail">no answer</span> every output of the last layer failed'
    else:
        where = (f"from layer {number(final.get('layer'))}, output #{number(final.get('slot'))}"
                 f" ({esc(final.get('backend') or final.get('model') or '?')})")
        if final.get("finish_reason"):
            where += f" · finish: {esc(final['finish_reason'])}"
    calls = tool_calls_html(final.get("tool_calls") if final else None)
    text = str(result.get("answer", ""))
    body = f'<pre id="answer-text">{esc(text)}</pre>' if text or not calls else ""
    return (f'<section class="block answer-box" id="answer"><div class="head"><h2>Answer</h2>'
            f'<span class="sub">{where}</span></div>{body}{calls}</section>')


def _conversation(messages: list[dict[str, Any]]) -> str:
    items = []
    for m in messages:
        role = str(m.get("role", "?")) + (f" · {m['name']}" if m.get("name") else "")
        content = m.get("content")
        if isinstance(content, list):
            shown = []
            for p in content:
                if isinstance(p, dict) and p.get("type") == "text":
                    shown.append(f"<pre>{esc(p.get('text', ''))}</pre>")
                else:  # images, audio, files: named, never loaded
                    kind = p.get("type", "part") if isinstance(p, dict) else "part"
                    shown.append(f'<span class="badge">[{esc(kind)}]</span>')
            body = "".join(shown)
        else:
            body = f"<pre>{esc('' if content is None else content)}</pre>"
        if m.get("tool_call_id"):
            body = f'<span class="label">result of {esc(m["tool_call_id"])}</span>' + body
        body += tool_calls_html(m.get("tool_calls"))
        items.append(f'<div class="msg"><div class="role">{esc(role)}</div>{body}</div>')
    if not items:
        items.append('<p class="note">no messages recorded</p>')
    return (f'<section class="block" id="conversation"><div class="head"><h2>Conversation'
            f'</h2><span class="sub">{len(messages)} message{"s" * (len(messages) != 1)}</span></div>'
            f'{"".join(items)}</section>')


def _layer(layer: dict[str, Any], final: dict[str, Any] | None, answer: str,
           picked: dict[tuple[int, int], int]) -> str:
    index = layer.get("index", 0)
    outs = sorted(layer.get("outputs") or [], key=lambda r: r.get("slot", 0))
    usage = layer.get("usage") or {}
    kind = str(layer.get("kind", ""))
    derived = bool(outs) and all(r.get("derived") for r in outs)
    slowest = max((float(r.get("latency_s") or 0) for r in outs), default=0.0)
    sub = [f"{number(usage.get('generations', 0))} ok",
           f"{number(usage.get('failures', 0))} failed",
           f"{number(usage.get('total_tokens', 0))} tokens",
           f"cost {esc(usage_cost(usage))}", f"slowest {seconds(slowest)}"]
    if derived:
        sub = ["chosen by a rule, no model call"]
    cards = "".join(_card(r, final, answer, picked) for r in outs) or \
        '<p class="note">no outputs</p>'
    label = "drafts" if index == 0 else kind
    return (f'<section class="block layer" id="layer-{esc(index)}" data-kind="{esc(kind)}">'
            f'<div class="head"><h2>Layer {esc(index)} · {esc(label)}</h2>'
            f'<span class="sub">{" · ".join(sub)}</span></div>'
            f'<div class="cards">{cards}</div></section>')


def _card(r: dict[str, Any], final: dict[str, Any] | None, answer: str,
          picked: dict[tuple[int, int], int]) -> str:
    layer, slot = r.get("layer", 0), r.get("slot", 0)
    is_answer = final is not None and final.get("layer") == layer and final.get("slot") == slot
    classes = ["card"] + (["is-answer"] if is_answer else []) + \
        ([] if r.get("ok") else ["failed"]) + (["derived"] if r.get("derived") else [])
    badges = [f"<b>#{esc(slot)}</b>"]
    if is_answer:
        badges.append('<span class="badge answer">answer</span>')
    if not r.get("ok"):
        badges.append('<span class="badge fail">failed</span>')
    if r.get("derived"):
        badges.append('<span class="badge">no model call</span>')
    if (layer, slot) in picked:
        badges.append(f'<span class="badge rule">picked in layer {esc(picked[(layer, slot)])}'
                      "</span>")
    prompt_tokens, completion_tokens = r.get("prompt_tokens", 0), r.get("completion_tokens", 0)
    meta = [("backend", esc(r.get("backend") or "—")), ("model", esc(r.get("model") or "—")),
            ("tokens", f"{number(prompt_tokens)} prompt + {number(completion_tokens)} completion"
                       + (f" ({number(r['cached_tokens'])} cached)" if r.get("cached_tokens") else "")),
            ("latency", seconds(r.get("latency_s"))), ("cost", esc(record_cost(r))),
            ("finish", esc(r.get("finish_reason") or "—"))]
    dl = "".join(f'<dt>{k}</dt><dd class="m-{k}">{v}</dd>' for k, v in meta)
    parts = [f'<div class="title">{" ".join(badges)}</div>', f'<dl class="meta">{dl}</dl>',
             _events(r)]
    if r.get("error"):
        err = r["error"] if isinstance(r["error"], dict) else {"message": r["error"]}
        parts.append(f'<div class="error"><b>✖ {esc(err.get("type", "error"))}</b>'
                     f'{esc(err.get("message", ""))}</div>')
    if r.get("ok"):
        text = str(r.get("text") or "")
        if text or not r.get("tool_calls"):
            own = _draft(r)
            diff = ('<span class="note">same words as the answer</span>\n' + esc(text)
                    if same_text(own, answer) else word_diff(own, answer))
            parts.append(f'<div class="text"><pre class="plain">{esc(text)}</pre>'
                         f'<pre class="diff">{diff}</pre></div>')
        parts.append(tool_calls_html(r.get("tool_calls")))
    return (f'<article class="{" ".join(classes)}" id="out-{esc(layer)}-{esc(slot)}" '
            f'data-layer="{esc(layer)}" data-slot="{esc(slot)}">{"".join(parts)}</article>')


def _events(r: dict[str, Any]) -> str:
    """Badges for how the output was prompted and any decision it records."""
    events = []
    prompt = r.get("prompt") or {}
    if prompt.get("read") is not None:
        events.append(("event", "read " + ", ".join(f"#{s}" for s in prompt["read"])))
    for shown, (before, kept) in _trims(prompt.get("trimmed")):
        events.append(("warn", f"trimmed draft #{shown}: {before} → {kept} tokens"))
    if prompt.get("developer_as"):
        events.append(("event", f"developer turn as {prompt['developer_as']}"))
    decision = r.get("decision") or {}
    events += [(cls, label + str(decision[key])) for key, cls, label in _PLAIN
               if decision.get(key)]
    if isinstance(decision.get("picked"), int):
        events.append(("rule", f"picked #{decision['picked']}"))
    if decision.get("tie"):
        events.append(("warn", "tie"))
    if isinstance(decision.get("share"), (int, float)):
        events.append(("event", f"share {decision['share']:.0%}"))
    if isinstance(decision.get("votes"), dict):
        tally = ", ".join(f"“{short_json(k, 40)}” ×{v}" for k, v in decision["votes"].items())
        events.append(("event", f"votes: {tally}"))
    if decision.get("scores") is not None:
        events.append(("event", f"scores: {short_json(decision['scores'], 120)}"))
    if isinstance(decision.get("selection"), dict):
        sel = decision["selection"]
        pick = "no pick" if sel.get("picked") is None else f"picked #{sel['picked']}"
        events.append(("rule", f"judge said “{short_json(sel.get('raw', ''), 60)}” → {pick}"))
    events += [(cls, label + short_json(decision[key], size)) for key, cls, label, size in _JSON
               if decision.get(key)]
    html_events = "".join(f'<span class="badge {cls}">{esc(text)}</span>'
                          for cls, text in events)
    out = f'<div class="events">{html_events}</div>' if html_events else ""
    if decision:
        rest = {k: v for k, v in decision.items() if k not in _SHOWN}
        out += (f"<details><summary>decision{' (more)' if rest else ''}</summary>"
                f"<pre>{esc(pretty_json(decision))}</pre></details>")
    other = {k: v for k, v in prompt.items() if k not in ("read", "trimmed", "developer_as")}
    if other:
        out += (f"<details><summary>prompt</summary><pre>{esc(pretty_json(other))}</pre>"
                "</details>")
    return out


def _trims(trimmed: Any) -> list[tuple[str, tuple[Any, Any]]]:
    if not isinstance(trimmed, dict):
        return []
    found = []
    for shown, kept in trimmed.items():
        if isinstance(kept, (list, tuple)) and len(kept) == 2:
            found.append((str(shown), (kept[0], kept[1])))
    return found

