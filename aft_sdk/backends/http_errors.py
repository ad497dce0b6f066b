"""``openai`` exceptions mapped onto the aft-sdk error tree, with advice in each message."""

from __future__ import annotations

import openai

from aft_sdk import errors
from aft_sdk.backends.limiter import _seconds


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
