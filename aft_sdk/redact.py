"""Keeping secrets out of labels, messages and logs.

Backend labels end up in traces, batch output, checkpoints and error messages, so any
URL shown there goes through :func:`redact_url` first: user-info (``user:pass@``),
query strings (``?api-key=...``) and fragments are dropped.
"""

from __future__ import annotations

import logging
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
