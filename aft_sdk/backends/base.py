"""The backend protocol every model source implements, and what it returns.

A backend turns one conversation into ``n`` generations::

    gens = await backend.generate(messages, n=3, sampling=SamplingConfig(max_tokens=64))

``generate_sync`` is the blocking twin for scripts. The graph never talks HTTP itself;
it only calls these methods.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from aft_sdk.config import SamplingConfig
from aft_sdk.errors import ConfigError

T = TypeVar("T")

Message = dict[str, str]
ROLES = ("system", "user", "assistant")


class Generation(BaseModel):
    """One model output with its accounting.

    Attributes:
        text: The generated text.
        finish_reason: ``stop``, ``length``, ... as the engine reported it.
        prompt_tokens: Tokens in the prompt (as the engine counted them).
        completion_tokens: Tokens generated.
        latency_s: Wall time of the request that produced this output. Outputs of one
            request (native ``n``) share it.
        model: The model id that wrote it.
        backend: Which backend produced it (kind and endpoint; never a key).
    """

    model_config = ConfigDict(frozen=True)

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model: str = ""
    backend: str = ""


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


class _LoopThread:
    """One long-lived event loop in a daemon thread that runs every sync twin call.

    Keeping one loop (instead of ``asyncio.run`` per call) lets clients and semaphores
    that bind to a loop be reused across sync calls, and works inside Jupyter too.
    """

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def run(cls, coro: Coroutine[Any, Any, T]) -> T:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                cls._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=cls._loop.run_forever, name="aft-sdk-sync", daemon=True
                ).start()
            loop = cls._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine to completion from synchronous code and returns its result."""
    return _LoopThread.run(coro)


class Backend(abc.ABC):
    """Base class of model backends.

    Subclasses implement :meth:`generate`; the rest has sensible defaults.

    Attributes:
        model: The model id requests are sent for.
        native_n: ``True`` when one request with ``n`` yields ``n`` outputs from one
            prefill (the graph then groups slots into one request).
        context_window: Total tokens (prompt + output) the model accepts, if known.
    """

    model: str = ""
    native_n: bool = False
    context_window: int | None = None

    @property
    def label(self) -> str:
        """Short description for traces and logs (never contains a key)."""
        return f"{type(self).__name__}({self.model})"

    @abc.abstractmethod
    async def generate(
        self, messages: Sequence[Message], *, n: int = 1, sampling: SamplingConfig | None = None
    ) -> list[Generation]:
        """Samples ``n`` outputs for one conversation.

        Args:
            messages: Chat messages (``role``/``content`` dicts).
            n: Number of outputs wanted; exactly ``n`` are returned.
            sampling: Sampling parameters; backend defaults when ``None``.

        Raises:
            BackendError: The request failed after the backend's own retries.
        """

    async def stream(
        self, messages: Sequence[Message], *, sampling: SamplingConfig | None = None
    ) -> AsyncIterator[str | Generation]:
        """Yields text pieces as they arrive, then one final :class:`Generation`.

        The default generates in one piece; streaming backends override it.
        """
        (gen,) = await self.generate(messages, n=1, sampling=sampling)
        yield gen.text
        yield gen

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``; backends without a tokenizer estimate conservatively."""
        # About 4 characters per token for English under BPE; 3 keeps the estimate on
        # the safe side so a budget computed from it does not overflow the window.
        return max(1, len(text) // 3)

    def generate_sync(
        self, messages: Sequence[Message] | str, *, n: int = 1, sampling: SamplingConfig | None = None
    ) -> list[Generation]:
        """Blocking twin of :meth:`generate` for scripts."""
        return run_sync(self.generate(normalize_messages(messages), n=n, sampling=sampling))

    async def aclose(self) -> None:
        """Releases connections or engines held by the backend."""

    def __repr__(self) -> str:
        return self.label


def check_n(n: int) -> None:
    """Raises :class:`ConfigError` unless ``n`` is a positive int."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
