"""What the fault server's permissive mode answers: a model that always complies.

``FaultServer(permissive=True)`` makes unscripted answers (and ``ok`` / ``delay``) follow
what the request asks, so a client's tool and format plumbing can be tested end to end
(LangChain's standard chat-model suite):

- tools offered, ``tool_choice`` not ``"none"`` and the last message not a tool result:
  one call of the named tool (``tool_choice`` naming a function), else of the first tool;
  any other request with tools gets the canned text (so after a tool result, text);
- else ``response_format`` ``json_schema``: a JSON object valid for the schema;
  ``json_object``: an object whose keys are the phrases quoted (``'...'`` or ``"..."``) in
  the last user turn, each ``"a"`` (``{}`` when none are quoted).

Arguments and JSON answers follow the schema with placeholders: required properties only,
strings the first phrase quoted in the last user turn (else ``"a"``), integers and numbers
3 (moved into ``minimum``/``maximum``), booleans ``true``, arrays ``minItems`` items,
enums and ``anyOf``/``oneOf`` their first (non-null) choice, ``$ref`` followed.

Log-probabilities (``logprobs: true``): one entry per space-separated piece of the
answer (the streamed pieces), deterministic and negative, led by itself in its
``top_logprobs``.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any


def _logprob(token: str, rank: int) -> dict[str, Any]:
    value = -((zlib.crc32(token.encode()) % 997 + 1) / 1000 + rank)  # deterministic, < 0
    return {"token": token, "logprob": round(value, 4), "bytes": list(token.encode())}


def logprobs(pieces: list[str], top: int) -> dict[str, Any]:
    """OpenAI's ``choices[].logprobs``: each piece's entry, led by itself in its
    ``top_logprobs`` (``top`` entries, alternatives less likely)."""
    content = []
    for piece in pieces:
        alternatives = [_logprob(piece if r == 0 else f"{piece.strip()}~{r}", r)
                        for r in range(top)]
        content.append({**_logprob(piece, 0), "top_logprobs": alternatives})
    return {"content": content, "refusal": None}


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # parts: their text
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")


def _quoted(text: str) -> list[str]:
    return [a or b for a, b in _QUOTED.findall(text)]


def comply(body: dict[str, Any]) -> list[dict[str, Any]] | str | None:
    """What a permissive model answers: tool calls, a JSON text, or ``None`` (the canned
    text). The rule is in the module's notes."""
    messages = body.get("messages") or []
    quoted = _quoted(_last_user(body))
    tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice", "auto")
    last_role = messages[-1].get("role") if messages and isinstance(messages[-1], dict) else None
    if tools and choice != "none" and last_role != "tool":
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        fn = next((t for t in tools if t.get("name") == named), tools[0])
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
        args = _example(schema, schema, quoted[0] if quoted else "a")
        return [{"id": f"call_0_{fn.get('name')}", "type": "function",
                 "function": {"name": fn.get("name"),
                              "arguments": json.dumps(args, ensure_ascii=False)}}]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return json.dumps(_example(schema, schema, quoted[0] if quoted else "a"),
                          ensure_ascii=False)
    if fmt.get("type") == "json_object":
        return json.dumps({k: "a" for k in quoted}, ensure_ascii=False)
    return None


def _example(schema: Any, root: dict[str, Any], text: str) -> Any:
    """A placeholder value valid for a JSON schema (the rule in the module's notes)."""
    if not isinstance(schema, dict):
        return text
    if "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _example({**_resolved(schema, root), **rest}, root, text)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options:
            pick = next((o for o in options if o.get("type") != "null"), options[0])
            return _example(pick, root, text)
    if schema.get("allOf"):
        merged: dict[str, Any] = {"properties": {}, "required": []}
        for part in schema["allOf"]:
            part = _resolved(part, root)
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return _example({"type": "object", **merged}, root, text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _example(props.get(k, {}), root, text) for k in schema.get("required", [])}
    if kind == "array":
        return [_example(schema.get("items", {}), root, text)
                for _ in range(int(schema.get("minItems", 0)))]
    if kind in ("integer", "number"):
        value = max(3, schema.get("minimum", 3), schema.get("exclusiveMinimum", 2) + 1)
        value = min(value, schema.get("maximum", value),
                    schema.get("exclusiveMaximum", value + 1) - 1)
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text.ljust(int(schema.get("minLength", 0)), "a")


def _resolved(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema if isinstance(schema, dict) else {}
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return target if isinstance(target, dict) else {}


def pieces(text: str) -> list[str]:
    """The answer as streamed: one piece per space-separated word, joined exactly."""
    words = text.split(" ")
    return [w + " " if i < len(words) - 1 else w for i, w in enumerate(words)]
