"""Keeping secrets out of labels, messages and logs.

Backend labels end up in traces, batch output, checkpoints and error messages, so any
URL shown there goes through :func:`redact_url` first: user-info (``user:pass@``),
query strings (``?api-key=...``) and fragments are dropped. Text that came from a
server (error messages) goes through :func:`scrub_secrets` with the key that was sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` without user-info, query string or fragment (scheme, host, port, path)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a URL we can parse: show nothing of it
        return "<unparseable url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


class RedactURLs(logging.Filter):
    """Rewrites URL arguments of log records (httpx logs every request URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(str(a)) if type(a).__name__ == "URL" else a for a in record.args
            )
        return True


_MASKS = re.compile(r"\*+|\.{3,}|…+|x{4,}")
_TOKEN = re.compile(r"[^\s\"'`,;()\[\]{}<>]+")
REDACTED = "[redacted]"


def scrub_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every form of each secret replaced by ``[redacted]``.

    Servers echo keys in error messages, exactly (``Bearer sk-...``) or masked
    (``sk-ab***...wxyz``). A word of ``text`` is redacted when it contains a secret, is a
    fragment of one (8+ characters), or is a masked form whose visible pieces all come
    from the secret.
    """
    keys = [s for s in secrets if s and len(s) >= 6]
    if not keys:
        return text
    for key in keys:
        text = text.replace(key, REDACTED)

    def word(m: re.Match[str]) -> str:
        w = m.group(0).rstrip(".:!?")
        for key in keys:
            if len(w) >= 8 and w in key:
                return REDACTED + m.group(0)[len(w):]
            pieces = [p for p in _MASKS.split(w) if p]
            if (pieces != [w] and sum(map(len, pieces)) >= 4
                    and all(len(p) >= 2 and p in key for p in pieces)):
                return REDACTED + m.group(0)[len(w):]
        return m.group(0)

    return _TOKEN.sub(word, text)
