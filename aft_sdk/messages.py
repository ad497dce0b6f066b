"""Chat messages as users send them, validated once, and each backend's view of them.

The one message model of the package is OpenAI's chat format: a message is a dict with
``role`` (``system``, ``developer``, ``user``, ``assistant``, ``tool``), ``content``
(a string or a list of parts: ``text``, ``image_url``, ``input_audio``, ``file``), and
optionally ``name`` (and ``tool_call_id`` on a tool message). LangChain messages and
their content blocks are converted to it. The graph keeps a conversation as given;
:func:`for_backend` makes the view a backend can take: text-only parts joined into one
string (always; it changes nothing a model sees), ``developer`` turned into ``system``
where a server or chat template does not know it, and a part the backend cannot take
refused by name, never dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aft_sdk.errors import BadRequestError, ConfigError
from aft_sdk.tools import check_tool_calls, openai_call

logger = logging.getLogger(__name__)

Message = dict[str, Any]
ROLES = ("system", "developer", "user", "assistant", "tool")
PART_TYPES = ("text", "image_url", "input_audio", "file")
#: Tokens counted for one non-text part when budgeting a prompt: OpenAI's figure for an
#: image at low detail. A backend that can see images may count more; this is an estimate.
PART_TOKENS = 85


def normalize_messages(messages: str | Sequence[Any]) -> list[Message]:
    """Accepts a question string or chat messages and returns validated chat messages.

    Messages may be dicts or LangChain message objects; content may be a string or a
    list of parts (LangChain content blocks included).

    Raises:
        ConfigError: Empty input, an unknown role or part, or malformed content.
    """
    if isinstance(messages, str):
        if not messages.strip():
            raise ConfigError("the question is empty: pass a non-empty string or messages")
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not messages:
        raise ConfigError(
            "messages must be a non-empty list of {'role': ..., 'content': ...} dicts "
            f"or a question string, got {type(messages).__name__}"
        )
    out = [msg for i, m in enumerate(messages) for msg in _from_blocks(m, i)]
    if out[-1]["role"] == "assistant":
        raise ConfigError("the last message is from the assistant: end with a user turn")
    return out


#: Blocks of other providers and of LangChain's v1 standard content found in histories,
#: which no chat message carries: an earlier turn's reasoning and server-side tool
#: traffic. They are left out (logged), never an error.
DROPPED_BLOCKS = frozenset({"reasoning", "thinking", "redacted_thinking", "server_tool_call",
                            "server_tool_result", "server_tool_call_chunk",
                            "tool_call_chunk", "invalid_tool_call", "web_search_tool_result",
                            "server_tool_use"})


def _from_blocks(m: Any, i: int) -> list[Message]:
    """One message as OpenAI messages: an assistant's call blocks (Anthropic's
    ``tool_use``, LangChain v1's ``tool_call``) become ``tool_calls``, a user's
    ``tool_result`` blocks become tool messages before it, :data:`DROPPED_BLOCKS` go."""
    role, content, extra = _parts_of(m)
    if not isinstance(content, list) or not any(
            isinstance(b, dict) and b.get("type") in _BLOCK_KINDS for b in content):
        return [_message(m, i)]
    kept, calls, results, dropped = [], [], [], []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in DROPPED_BLOCKS:
            dropped.append(kind)
        elif kind in ("tool_use", "tool_call") and role == "assistant":
            calls.append({"id": block.get("id") or f"call_{i}_{len(calls)}", "type": "function",
                          "function": {"name": block.get("name"), "arguments": json.dumps(
                              block.get("input", block.get("args")) or {})}})
        elif kind == "tool_result" and role == "user":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else text_of(
                [_part(b, f"messages[{i}].tool_result") for b in inner or []])
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                            "content": ("error: " if block.get("is_error") else "") + text})
        else:
            kept.append(block)
    if dropped:
        logger.info("messages[%d]: left out %s (no chat message carries them)", i,
                    ", ".join(sorted(set(dropped))))
    known = {c["id"] for c in extra.get("tool_calls") or []}
    calls = (extra.get("tool_calls") or []) + [c for c in calls if c["id"] not in known]
    message = {**extra, "role": role, "content": kept or ("" if not calls else None)}
    if calls:
        message["tool_calls"] = calls
    out = [_message(r, i) for r in results]
    if kept or calls or not results:
        out.append(_message(message, i))
    return out


_BLOCK_KINDS = DROPPED_BLOCKS | {"tool_use", "tool_call", "tool_result"}


def _message(m: Any, i: int) -> Message:
    role, content, extra = _parts_of(m)
    if role not in ROLES:
        raise ConfigError(f"messages[{i}].role must be one of {ROLES}, got {role!r}")
    calls = extra.get("tool_calls") if role == "assistant" else None
    if calls:  # an assistant turn that called tools: OpenAI's format, passed on as is
        return {"role": role, "content": _content(content, f"messages[{i}]") if content else None,
                "tool_calls": check_tool_calls(calls, f"messages[{i}].tool_calls")}
    out: Message = {"role": role, "content": _content(content, f"messages[{i}]")}
    name = extra.get("name")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"messages[{i}].name must be a non-empty string")
        out["name"] = name
    if role == "tool":
        call = extra.get("tool_call_id")
        if not isinstance(call, str) or not call:
            raise ConfigError(f"messages[{i}] is a tool message: it needs tool_call_id, the "
                              "id of the assistant's tool call it answers")
        out["tool_call_id"] = call
    return out


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise ConfigError(f"{where}.content must be a string or a non-empty list of parts, "
                          f"got {type(content).__name__}")
    return [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]


def _part(p: Any, where: str) -> dict[str, Any]:
    if isinstance(p, str):  # LangChain allows bare strings among blocks
        return {"type": "text", "text": p}
    if not isinstance(p, dict):
        raise ConfigError(f"{where} must be a part object, got {type(p).__name__}")
    kind = p.get("type")
    if kind == "text":
        if not isinstance(p.get("text"), str):
            raise ConfigError(f"{where} is a text part without a 'text' string")
        return {"type": "text", "text": p["text"]}
    if kind == "image" or (kind == "image_url" and isinstance(p.get("image_url"), str)):
        return {"type": "image_url", "image_url": {"url": _image_url(p, where)}}
    if kind == "image_url":
        url = (p.get("image_url") or {}).get("url")
        if not isinstance(url, str) or not url:
            raise ConfigError(f"{where} is an image_url part without image_url.url")
        return {"type": "image_url", "image_url": dict(p["image_url"])}
    if kind in PART_TYPES:
        return dict(p)
    raise ConfigError(f"{where} has type {kind!r}; the part types are {PART_TYPES}")


def _image_url(p: dict[str, Any], where: str) -> str:
    """The URL of a LangChain image block (``url``, or ``base64`` with ``mime_type``) or
    of Anthropic's (``source``: ``base64`` with ``media_type``, or ``url``)."""
    if isinstance(p.get("image_url"), str):
        return p["image_url"]
    if isinstance(p.get("url"), str):
        return p["url"]
    source = p.get("source")
    if isinstance(source, dict):  # Anthropic's image block
        p = {"url": source.get("url"), "data": source.get("data"),
             "mime_type": source.get("media_type")}
        if isinstance(p["url"], str):
            return p["url"]
    data = p.get("base64") or p.get("data")
    if isinstance(data, str):
        return f"data:{p.get('mime_type') or 'image/png'};base64,{data}"
    raise ConfigError(f"{where} is an image block without url or base64 data")


_LC_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
             "HumanMessageChunk": "user", "AIMessageChunk": "assistant",
             "SystemMessageChunk": "system", "ToolMessageChunk": "tool"}


def _parts_of(m: Any) -> tuple[Any, Any, dict[str, Any]]:
    if isinstance(m, dict):
        return m.get("role"), m.get("content"), m
    kind = getattr(m, "type", None)  # LangChain BaseMessage
    if kind is not None:
        extra = {"name": getattr(m, "name", None),
                 "tool_call_id": getattr(m, "tool_call_id", None),
                 "tool_calls": [openai_call(c) for c in getattr(m, "tool_calls", None) or []]}
        if kind == "system" and (getattr(m, "additional_kwargs", None) or {}).get(
                "__openai_role__") == "developer":
            kind = "developer"
        return _LC_ROLES.get(kind, kind), getattr(m, "content", None), extra
    raise ConfigError(f"unsupported message type {type(m).__name__}: use dicts")


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a message's content (text parts joined by newlines)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text")


def content_tokens(content: str | list[dict[str, Any]] | None,
                   count: Callable[[str], int]) -> int:
    """Tokens of a message's content: text counted, other parts :data:`PART_TOKENS` each."""
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    return sum(count(p["text"]) if p.get("type") == "text" else PART_TOKENS for p in content)


def for_backend(messages: Sequence[Message] | str, label: str, *, developer: bool = False,
                parts: Sequence[str] = ()) -> list[Message]:
    """The view of ``messages`` a backend takes (a question string is one user turn, as
    ``generate_sync`` takes it).

    Args:
        label: The backend, for error messages.
        developer: Whether it knows the ``developer`` role (else it becomes ``system``).
        parts: Non-text part types it takes (``image_url``, ...); text-only content is
            always sent as one string.

    Raises:
        BadRequestError: A part it cannot take (named with the message and the backend).
    """
    if isinstance(messages, str):
        messages = normalize_messages(messages)
    out = []
    for i, m in enumerate(messages):
        m = dict(m)
        if m["role"] == "developer" and not developer:
            m["role"] = "system"
        content = m["content"]
        if content is None:  # an assistant turn of tool calls only: servers such as
            del m["content"]  # llama.cpp refuse null content, and OpenAI allows it unset
        if isinstance(content, list):
            other = [p["type"] for p in content if p.get("type") != "text"]
            refused = [t for t in other if t not in parts]
            if refused:
                raise BadRequestError(
                    f"messages[{i}] has a {refused[0]} part, which {label} cannot take "
                    f"({'it takes text only' if not parts else 'it takes ' + ', '.join(parts)}"
                    "); send it to a backend that can, or remove the part",
                    status_code=400, backend=label)
            m["content"] = text_of(content) if not other else content
        out.append(m)
    return out


def non_text_parts(messages: Sequence[Message]) -> list[str]:
    """The types of the non-text parts in ``messages``."""
    return [p["type"] for m in messages if isinstance(m["content"], list)
            for p in m["content"] if p.get("type") != "text"]


def text_view(messages: Sequence[Message], parts: Sequence[str] = ()) -> list[Message]:
    """``messages`` with every part a backend cannot take (types not in ``parts``)
    written as a bracketed note, e.g. ``[an image_url part this model cannot see]``:
    the documented view an aggregator without vision gets of an image question."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [p if p.get("type") == "text" or p.get("type") in parts else
                       {"type": "text", "text": f"[an {p['type']} part this model cannot see]"}
                       for p in content]
            if all(p.get("type") == "text" for p in content):
                content = text_of(content)
        out.append({**m, "content": content})
    return out


def tool_view(messages: Sequence[Message]) -> list[Message]:
    """``messages`` for a chat template without a ``tool`` role: each tool result becomes
    a user turn that names the tool and call it answers (``Result of add (call_1): 5``)."""
    names = {c["id"]: c["function"]["name"] for m in messages
             for c in m.get("tool_calls") or []}
    out = []
    for m in messages:
        if m["role"] == "tool":
            name = names.get(m["tool_call_id"], "a tool")
            m = {"role": "user", "content": f"Result of {name} ({m['tool_call_id']}): "
                 f"{text_of(m['content'])}"}
        out.append(m)
    return out


def calls_as_text(messages: Sequence[Message]) -> list[Message]:
    """``messages`` for a chat template that knows neither tool calls nor results: an
    assistant's calls written as text, tool results as user turns (:func:`tool_view`)."""
    if not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return list(messages)
    out = []
    for m in tool_view(messages):
        if m.get("tool_calls"):
            calls = "\n".join(f"[calls tool] {c['function']['name']}"
                              f"({c['function']['arguments']})" for c in m["tool_calls"])
            text = text_of(m.get("content"))
            m = {"role": "assistant", "content": f"{text}\n{calls}" if text else calls}
        out.append(m)
    return out


def as_dicts(messages: Sequence[Any]) -> list[Message]:
    """Role/content dicts for dicts or LangChain messages, without checking the turn order."""
    out = []
    for m in messages:
        role, content, extra = _parts_of(m)
        d: Message = {"role": str(role), "content": content if isinstance(content, (str, list))
                      or (content is None and extra.get("tool_calls")) else str(content)}
        if extra.get("tool_calls"):
            d["tool_calls"] = list(extra["tool_calls"])
        if role == "tool" and extra.get("tool_call_id"):
            d["tool_call_id"] = extra["tool_call_id"]
        out.append(d)
    return out
