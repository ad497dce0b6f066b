"""The aft-sdk error tree.

Every error the SDK raises on purpose derives from :class:`AftError`, so callers can
catch one base class. Errors that come from a model server keep the original exception
as ``__cause__`` (``raise ... from e``) and say what to do next in their message.
"""

from __future__ import annotations

from typing import Any


class AftError(Exception):
    """Base class of every error raised by aft-sdk.

    Errors pickle with their fields (``.backend``, ``.layer``, ``.failures``, ...), so
    one raised in a Ray worker or a subprocess arrives whole.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own pickling calls cls(*args), which loses keyword-only fields.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[AftError], args: tuple[Any, ...], fields: dict[str, Any]) -> AftError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(fields)
    return err


class ConfigError(AftError, ValueError):
    """A configuration value is missing or out of range.

    Also a ``ValueError`` so code that validates input generically still catches it.
    """


class BackendError(AftError):
    """A model backend failed to produce a generation.

    Attributes:
        backend: Short description of the backend (model id and endpoint), never a key.
    """

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend


class BackendUnavailableError(BackendError):
    """An optional dependency or model file the backend needs is not installed."""


class BackendConnectionError(BackendError):
    """The server could not be reached (refused, reset, DNS)."""


class BackendTimeoutError(BackendConnectionError):
    """The server did not answer within the configured timeout."""


class BackendStatusError(BackendError):
    """The server answered with an HTTP error status.

    Attributes:
        status_code: The HTTP status code the server returned.
    """

    def __init__(self, message: str, *, status_code: int, backend: str | None = None) -> None:
        super().__init__(message, backend=backend)
        self.status_code = status_code


class RateLimitError(BackendStatusError):
    """HTTP 429 that outlasted the client's retries.

    Attributes:
        retry_after: Seconds the server asked us to wait, when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int = 429,
        backend: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, backend=backend)
        self.retry_after = retry_after


class AuthenticationError(BackendStatusError):
    """HTTP 401/403: the API key is missing, wrong, or lacks access. Never retried."""


class BadRequestError(BackendStatusError):
    """HTTP 400/422: the server rejected the request (bad parameters, prompt too long)."""


class ModelNotFoundError(BackendStatusError):
    """HTTP 404: the server does not serve the requested model or route."""


class ServerError(BackendStatusError):
    """HTTP 5xx that outlasted the client's retries."""


class MalformedResponseError(BackendError):
    """The server answered 200 but the body is not a usable chat completion."""


class PartialGenerationError(BackendError):
    """Fewer outputs came back than asked for; the ones that did are kept.

    Attributes:
        generations: The outputs that succeeded (``Generation`` objects).
        wanted: How many were asked for.
    """

    def __init__(self, message: str, *, generations: list[Any], wanted: int,
                 backend: str | None = None) -> None:
        super().__init__(message, backend=backend)
        self.generations = generations
        self.wanted = wanted


class GraphError(AftError, RuntimeError):
    """A propose-and-aggregate graph could not complete.

    Also a ``RuntimeError``: LangGraph Server passes the messages of builtin error types
    through to its clients and hides those of others, and ours name each failed branch.
    """


class InsufficientProposalsError(GraphError):
    """Fewer layer outputs survived than the graph needs to go on.

    Attributes:
        layer: Index of the layer that fell short (0 = proposals).
        failures: One plain dict per failed branch (slot, backend, error type, message).
    """

    def __init__(self, message: str, *, layer: int, failures: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.layer = layer
        self.failures = failures


class GraphTimeoutError(GraphError):
    """The graph's deadline passed before the final answer was written."""


class TrainingError(AftError):
    """Building training data or fine-tuning the aggregator failed."""


class QuorumReachedError(AftError):
    """Recorded (never raised) for a slot whose request was cancelled because a quorum
    of its layer had already answered: a straggler, not a failure of its backend."""


class StructuredOutputError(GraphError):
    """The answer did not meet the requested JSON schema after the configured retries.

    Attributes:
        field: The dotted path of the first failing field (``None``: not JSON at all).
    """

    def __init__(self, message: str, *, field: str | None) -> None:
        super().__init__(message)
        self.field = field
