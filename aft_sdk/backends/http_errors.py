"""Upstream failures mapped onto the aft-sdk error tree, with advice in each message.

:func:`map_upstream_error` is the one place an HTTP backend's errors are built: ``openai``
exceptions by kind and status, malformed data (bodies that are not JSON, broken SSE
lines, fields of the wrong type) as :class:`~aft_sdk.errors.MalformedResponseError`, and
every message scrubbed of the key the backend sent (servers echo it).
"""

from __future__ import annotations

import openai

from aft_sdk import errors
from aft_sdk.backends.limiter import _seconds
from aft_sdk.redact import scrub_secrets

#: Exceptions that mean the upstream sent data we cannot use (``json.JSONDecodeError``
#: and pydantic's ``ValidationError`` are ``ValueError``\ s).
MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def map_upstream_error(e: BaseException, where: str, secret: str | None = None
                       ) -> errors.BackendError:
    """The aft-sdk error for a failed call to ``where``; no message keeps ``secret``.

    The original exception's own text is scrubbed too, since it stays reachable as
    ``__cause__`` (a logged traceback prints it).
    """
    if isinstance(e, errors.BackendError):
        err = e
    elif isinstance(e, openai.OpenAIError):
        err = map_openai_error(e, where)
    else:
        err = errors.MalformedResponseError(
            f"{where} sent malformed data ({type(e).__name__}: {_clip(str(e))}); check that "
            "base_url points at an OpenAI-compatible /v1 endpoint", backend=where)
    if secret:
        err.args = tuple(scrub_secrets(str(a), [secret]) for a in err.args)
        e.args = tuple(scrub_secrets(str(a), [secret]) if isinstance(a, str) else a
                       for a in e.args)
        if isinstance(getattr(e, "message", None), str):
            e.message = scrub_secrets(e.message, [secret])  # type: ignore[attr-defined]
        if isinstance(e, openai.APIStatusError):
            e.body = None  # the parsed error body may echo the key as well
    return err


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def map_openai_error(e: openai.OpenAIError, where: str) -> errors.BackendError:
    """Maps an ``openai`` exception to the aft-sdk tree with advice in the message."""
    if isinstance(e, openai.APITimeoutError):
        return errors.BackendTimeoutError(
            f"{where} did not answer in time after retries; raise timeout=, lower "
            "max_tokens, or check the server",
            backend=where,
        )
    if isinstance(e, openai.APIConnectionError):
        return errors.BackendConnectionError(
            f"cannot reach {where}: {e}; check base_url and that the server is running",
            backend=where,
        )
    if isinstance(e, openai.APIStatusError):
        return _map_status(e, where)
    if isinstance(e, openai.APIResponseValidationError):
        return errors.MalformedResponseError(f"{where} sent an invalid body: {e}", backend=where)
    return errors.BackendError(f"{where} failed: {e}", backend=where)


def _map_status(e: openai.APIStatusError, where: str) -> errors.BackendError:
    code = e.status_code
    detail = _short(e)
    if code == 429:
        return errors.RateLimitError(
            f"{where} rate-limited the request (429) after retries: {detail}; set a "
            "lower max_concurrency cap or raise max_retries",
            retry_after=_retry_after(e),
            backend=where,
        )
    if code in (401, 403):
        return errors.AuthenticationError(
            f"{where} refused the API key ({code}): {detail}; check the key or its env var",
            status_code=code,
            backend=where,
        )
    if code == 404:
        return errors.ModelNotFoundError(
            f"{where} has no such model or route (404): {detail}; check model= and base_url",
            status_code=code,
            backend=where,
        )
    if code in (400, 413, 422):
        return errors.BadRequestError(
            f"{where} rejected the request ({code}): {detail}; check the prompt length and "
            "sampling parameters",
            status_code=code,
            backend=where,
        )
    if code >= 500:
        return errors.ServerError(
            f"{where} failed with {code} after retries: {detail}", status_code=code, backend=where
        )
    return errors.BackendStatusError(
        f"{where} answered {code}: {detail}", status_code=code, backend=where
    )


def _short(e: openai.APIStatusError) -> str:
    msg = getattr(e, "message", None) or str(e)
    return msg if len(msg) <= 300 else msg[:300] + "..."


def _retry_after(e: openai.APIStatusError) -> float | None:
    return _seconds(e.response.headers.get("retry-after") if e.response is not None else None)
