"""Token log-probabilities in OpenAI's chat format, as every backend returns them
(:attr:`~aft_sdk.backends.Generation.logprobs`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aft_sdk.errors import BadRequestError


def token_logprob(token: str, logprob: float,
                  top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    """One entry of :attr:`Generation.logprobs` (OpenAI's chat format)."""
    entry: dict[str, Any] = {"token": token, "logprob": logprob,
                             "bytes": list(token.encode("utf-8"))}
    entry["top_logprobs"] = [{"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}
                             for t, lp in (top or [])]
    return entry


def openai_logprobs(holder: Any, where: str,
                    malformed: Callable[[str], Exception]) -> list[dict[str, Any]] | None:
    """``holder.logprobs.content`` (a choice's or a stream chunk's, from an
    OpenAI-compatible server), checked: an entry without a string token and a numeric
    log-probability raises ``malformed(what)``."""
    content = getattr(getattr(holder, "logprobs", None), "content", None)
    if content is None:
        return None
    if not isinstance(content, list):
        raise malformed(f"{where}logprobs.content is {type(content).__name__}")
    out = []
    for j, item in enumerate(content):
        d = item.model_dump() if hasattr(item, "model_dump") else item
        tops = d.get("top_logprobs") if isinstance(d, dict) else None
        if not isinstance(d, dict) or not isinstance(d.get("token"), str) or \
                not isinstance(d.get("logprob"), (int, float)) or \
                not all(isinstance(t, dict) and isinstance(t.get("token"), str)
                        for t in tops or []):
            raise malformed(f"{where}logprobs.content[{j}] is not a token's log-probability")
        out.append({"token": d["token"], "logprob": float(d["logprob"]),
                    "bytes": d.get("bytes"), "top_logprobs": tops or []})
    return out


def missing_logprobs(label: str) -> BadRequestError:
    """The error for a server that answered without the log-probabilities asked for."""
    return BadRequestError(
        f"{label} returned no log-probabilities though logprobs was asked for (the server "
        "does not support them): leave logprobs unset for this backend",
        status_code=400, backend=label)
