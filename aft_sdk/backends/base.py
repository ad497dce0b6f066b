"""The backend protocol every model source implements, and what it returns.

A backend turns one conversation into ``n`` generations::

    gens = await backend.generate(messages, n=3, sampling=SamplingConfig(max_tokens=64))

``generate_sync`` is the blocking twin for scripts. The graph never talks HTTP itself;
it only calls these methods.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from aft_sdk.aio import run_sync
from aft_sdk.config import PromptConfig, SamplingConfig
from aft_sdk.errors import AftError, BadRequestError, ConfigError, PartialGenerationError
from aft_sdk.messages import Message, normalize_messages
from aft_sdk.tools import CallOptions

__all__ = ["Backend", "Generation", "Message", "ToolCallChunk", "check_n", "emulate_n",
           "normalize_messages", "run_sync"]


class Generation(BaseModel):
    """One model output with its accounting.

    Attributes:
        text: The generated text.
        finish_reason: ``stop``, ``length``, ... as the engine reported it.
        prompt_tokens: Tokens in the prompt (as the engine counted them).
        cached_tokens: Of those, tokens the provider read from its prompt cache (priced
            at the cached-input rate).
        completion_tokens: Tokens generated.
        latency_s: Wall time of the request that produced this output. Outputs of one
            request (native ``n``) share it.
        model: The model id that wrote it.
        backend: Which backend produced it (kind and endpoint; never a key).
        tool_calls: The tool calls it made, in OpenAI's format (``None``: none).
        logprobs: With ``SamplingConfig(logprobs=True)``, one entry per generated token in
            OpenAI's chat format: ``{"token", "logprob", "bytes", "top_logprobs": [...]}``
            (``None``: not asked for).
    """

    model_config = ConfigDict(frozen=True)

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model: str = ""
    backend: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: list[dict[str, Any]] | None = None


class ToolCallChunk(BaseModel):
    """A piece of a streamed tool call (OpenAI's delta: the first piece of a call has
    its ``id`` and ``name``, later ones more ``arguments``)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Backend(abc.ABC):
    """Base class of model backends.

    Subclasses implement :meth:`generate`; the rest has sensible defaults.

    Attributes:
        model: The model id requests are sent for.
        native_n: ``True`` when one request with ``n`` yields ``n`` outputs from one
            prefill (the graph then groups slots into one request).
        context_window: Total tokens (prompt + output) the model accepts, if known.
        parts: Non-text message part types it takes; a text-only backend refuses
            others by name (see :func:`aft_sdk.messages.for_backend`).
    """

    model: str = ""
    native_n: bool = False
    context_window: int | None = None
    #: Non-text message parts the backend takes (``image_url``, ...); none: text only.
    parts: tuple[str, ...] = ()
    #: Whether it sends the ``developer`` role as it is (else as ``system``; the trace
    #: records that in the slot's ``prompt``).
    keeps_developer: bool = False
    #: The prompt a trained aggregator was trained with (its ``aft_sdk.json``), which a
    #: graph uses unless its config sets another; ``None``: not a recorded aggregator.
    trained_prompt: PromptConfig | None = None
    #: What it can honour of :class:`~aft_sdk.tools.CallOptions` (``tools``,
    #: ``response_format``); a request for anything else is refused by name.
    handles: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        """Short description for traces and logs (never contains a key)."""
        return f"{type(self).__name__}({self.model})"

    @abc.abstractmethod
    async def generate(
        self, messages: Sequence[Message], *, n: int = 1, sampling: SamplingConfig | None = None,
        options: CallOptions | None = None,
    ) -> list[Generation]:
        """Samples ``n`` outputs for one conversation.

        Args:
            messages: Chat messages (``role``/``content`` dicts); the built-in backends
                also take a question string (one user turn).
            n: Number of outputs wanted; exactly ``n`` are returned.
            sampling: Sampling parameters; backend defaults when ``None``.
            options: Tools and response format (backends that take them list them in
                :attr:`handles`; the graph passes it only when a request sets it).

        Raises:
            BackendError: The request failed after the backend's own retries.
        """

    async def stream(
        self, messages: Sequence[Message], *, sampling: SamplingConfig | None = None,
        options: CallOptions | None = None,
    ) -> AsyncIterator[str | ToolCallChunk | Generation]:
        """Yields text pieces (and :class:`ToolCallChunk` pieces of tool calls) as they
        arrive, then one final :class:`Generation`.

        Plain text streams through :meth:`_stream_text` where the backend has one; with
        tools or a response format (or without it) the answer is generated whole, then
        yielded in pieces.
        """
        live = self._stream_text(messages, sampling) if options is None else None
        if live is not None:
            async with contextlib.aclosing(live):  # a consumer that leaves frees the engine
                async for piece in live:
                    yield piece
            return
        kw = {"options": options} if options is not None else {}
        (gen,) = await self.generate(messages, n=1, sampling=sampling, **kw)
        if gen.text:
            yield gen.text
        for chunk in call_chunks(gen.tool_calls):
            yield chunk
        yield gen

    async def continue_text(
        self, messages: Sequence[Message], prefix: str, *, separator: str, n: int = 1,
        sampling: SamplingConfig | None = None,
    ) -> list[Generation]:
        """Samples ``n`` next steps of an assistant answer that begins with ``prefix``,
        each ending at ``separator`` (cut before it), the model's end, a stop string or
        ``max_tokens``; the finish reason says which (:mod:`.continuation`).

        Raises:
            ConfigError: This backend cannot continue a partial answer.
        """
        raise self.continuation_refused()

    def continuation_refused(self) -> ConfigError | None:
        """Why this backend cannot continue a partial answer, or ``None`` if it can
        (checked when a step-level search is built)."""
        if type(self).continue_text is Backend.continue_text:
            return ConfigError(f"{self.label} cannot continue a partial answer, which a "
                               f"step-level search needs: {type(self).__name__} has no "
                               "continue_text; use a vLLM, embedded or OpenAI-compatible backend")
        return None

    def _stream_text(self, messages: Sequence[Message], sampling: SamplingConfig | None
                     ) -> AsyncIterator[str | Generation] | None:
        """Text as the engine produces it, then the final :class:`Generation`; ``None``
        when the backend cannot stream (an engine's backend writes it as an async
        generator)."""
        return None

    def check_options(self, options: CallOptions | None) -> None:
        """Refuses tools or a response format this backend cannot honour, by name."""
        if options is None:
            return
        asked = [name for name, wanted in (("tools", options.tools),
                                           ("response_format", options.response_format))
                 if wanted and name not in self.handles]
        if asked:
            raise BadRequestError(
                f"{self.label} cannot honour {' or '.join(asked)}; send the request to a "
                "backend that can (OpenAI-compatible, vLLM, embedded llama.cpp, LangChain)",
                status_code=400, backend=self.label)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``; backends without a tokenizer estimate conservatively."""
        # About 4 characters per token for English under BPE; 3 keeps the estimate on
        # the safe side so a budget computed from it does not overflow the window.
        return max(1, len(text) // 3)

    def generate_sync(
        self, messages: Sequence[Message] | str, *, n: int = 1, sampling: SamplingConfig | None = None,
        options: CallOptions | None = None,
    ) -> list[Generation]:
        """Blocking twin of :meth:`generate` for scripts."""
        kw = {"options": options} if options is not None else {}
        return run_sync(self.generate(normalize_messages(messages), n=n, sampling=sampling, **kw))

    async def aclose(self) -> None:
        """Releases connections or engines held by the backend (their processes end)."""

    def close(self) -> None:
        """Blocking twin of :meth:`aclose`."""
        run_sync(self.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return self.label


async def emulate_n(
    one: Callable[[int | None], Awaitable[Generation]], count: int, *, seed: int | None,
    label: str, kept: Sequence[Generation] = (),
) -> list[Generation]:
    """``count`` single calls at once (seeds ``seed+len(kept)``, ...), after ``kept``.

    The one way every backend emulates ``n``: outputs that succeeded are never thrown
    away; when some calls fail, :class:`PartialGenerationError` carries them (and with
    none back, the first error is raised as it is).
    """
    offset = len(kept)
    results = await asyncio.gather(
        *(one(None if seed is None else seed + offset + i) for i in range(count)),
        return_exceptions=True,
    )
    for r in results:  # anything but our own errors is a bug: surface it as is
        if isinstance(r, BaseException) and not isinstance(r, AftError):
            raise r
    gens = [*kept, *(r for r in results if not isinstance(r, BaseException))]
    failed = [r for r in results if isinstance(r, BaseException)]
    if not failed:
        return gens
    if not gens:
        raise failed[0]
    wanted = offset + count
    raise PartialGenerationError(
        f"only {len(gens)} of {wanted} outputs came back from {label}; {len(failed)} calls "
        f"failed, the first with {type(failed[0]).__name__}: {failed[0]}",
        generations=gens, wanted=wanted, backend=label,
    ) from failed[0]


def call_chunks(calls: Sequence[dict[str, Any]] | None) -> list[ToolCallChunk]:
    """Whole tool calls as stream pieces (one per call)."""
    return [ToolCallChunk(index=i, id=c["id"], name=c["function"]["name"],
                          arguments=c["function"]["arguments"]) for i, c in enumerate(calls or [])]


def is_greedy(sampling: SamplingConfig) -> bool:
    """Temperature 0: every sample of a prompt is the same text."""
    return sampling.temperature == 0


def check_n(n: int) -> None:
    """Raises :class:`ConfigError` unless ``n`` is a positive int."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
