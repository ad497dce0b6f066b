"""Chat messages: what every entry point accepts, normalised to role/content dicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aft_sdk.errors import ConfigError

Message = dict[str, str]
ROLES = ("system", "user", "assistant")


def normalize_messages(messages: str | Sequence[Any]) -> list[Message]:
    """Accepts a question string or chat messages and returns validated chat messages.

    Messages may be dicts with ``role``/``content`` or LangChain message objects.

    Raises:
        ConfigError: Empty input, an unknown role, or non-string content.
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
    out: list[Message] = []
    for i, m in enumerate(messages):
        role, content = _role_and_content(m)
        if role not in ROLES:
            raise ConfigError(f"messages[{i}].role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ConfigError(
                f"messages[{i}].content must be a string, got {type(content).__name__}"
            )
        out.append({"role": role, "content": content})
    if out[-1]["role"] == "assistant":
        raise ConfigError("the last message is from the assistant: end with a user turn")
    return out


_LC_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def _role_and_content(m: Any) -> tuple[Any, Any]:
    if isinstance(m, dict):
        return m.get("role"), m.get("content")
    kind = getattr(m, "type", None)  # LangChain BaseMessage
    if kind is not None:
        return _LC_ROLES.get(kind, kind), getattr(m, "content", None)
    raise ConfigError(f"unsupported message type {type(m).__name__}: use dicts")


def as_dicts(messages: Sequence[Any]) -> list[Message]:
    """Role/content dicts for dicts or LangChain messages, without checking the turn order."""
    out = []
    for m in messages:
        role, content = _role_and_content(m)
        out.append({"role": str(role), "content": content if isinstance(content, str) else str(content)})
    return out
