"""Backend for any OpenAI-compatible chat completions endpoint.

Works against OpenAI, Together, a vLLM or llama.cpp server, Ollama. Retries are the
``openai`` client's own (``max_retries``; it honours ``Retry-After``), so there is exactly
one retry loop around each HTTP call. Servers that ignore ``n`` (llama.cpp answers one
choice without complaint) are detected and topped up with parallel single calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from aft_sdk import errors
from aft_sdk.backends.base import Backend, Generation, Message, check_n
from aft_sdk.config import OpenAIBackendConfig, SamplingConfig, validate

logger = logging.getLogger(__name__)

# Local servers (llama.cpp, vLLM, Ollama) accept any key; the openai client insists on one.
_PLACEHOLDER_KEY = "not-needed"


class OpenAIBackend(Backend):
    """Chat completions over HTTP against any OpenAI-compatible server.

    Args:
        model: Model id the server knows (``gpt-4o-mini``, ``smollm2``, ...).
        base_url: Endpoint root ending in ``/v1``; ``None`` means api.openai.com.
        api_key: Key; when ``None`` it is read from ``api_key_env``. Local endpoints
            need none.
        api_key_env: Environment variable holding the key.
        max_retries: Retries the openai client makes on 408/409/429/5xx and connection
            errors, honouring ``Retry-After``. Auth and bad-request errors are never
            retried.
        timeout: Seconds per HTTP attempt.
        max_concurrency: Most requests in flight at once from this backend.
        native_n: Whether the server honours ``n``; ``None`` detects it on first use.
        context_window: The model's total token window, for the graph's prompt budget.
        sampling: Default sampling for calls that pass none.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_retries: int = 2,
        timeout: float = 120.0,
        max_concurrency: int = 8,
        native_n: bool | None = None,
        context_window: int | None = None,
        sampling: SamplingConfig | None = None,
    ) -> None:
        cfg = validate(
            OpenAIBackendConfig,
            dict(
                model=model, base_url=base_url, api_key=api_key, api_key_env=api_key_env,
                max_retries=max_retries, timeout=timeout, max_concurrency=max_concurrency,
                native_n=native_n, context_window=context_window,
            ),
            source="OpenAIBackend",
        )
        self._init_from_config(cfg, sampling)

    @classmethod
    def from_config(
        cls, cfg: OpenAIBackendConfig, sampling: SamplingConfig | None = None
    ) -> OpenAIBackend:
        """Builds the backend from a validated config."""
        self = cls.__new__(cls)
        self._init_from_config(cfg, sampling)
        return self

    def _init_from_config(self, cfg: OpenAIBackendConfig, sampling: SamplingConfig | None) -> None:
        key = cfg.api_key.get_secret_value() if cfg.api_key else os.environ.get(cfg.api_key_env)
        if not key:
            if cfg.base_url is None:
                raise errors.ConfigError(
                    f"no API key for OpenAI: set {cfg.api_key_env} or pass api_key=..., "
                    "or give base_url=... for a local server that needs no key"
                )
            key = _PLACEHOLDER_KEY
        self.model = cfg.model
        self.base_url = cfg.base_url
        self.native_n = bool(cfg.native_n)
        self._n_known = cfg.native_n is not None
        self.context_window = cfg.context_window
        self.max_concurrency = cfg.max_concurrency
        self.sampling = sampling or SamplingConfig()
        self._cfg = cfg
        # The key lives only here and inside the client objects; never in traces/logs.
        self.__key = key
        # httpx clients and semaphores bind to an event loop; keep one per loop.
        self._per_loop: weakref.WeakKeyDictionary[Any, tuple[openai.AsyncOpenAI, asyncio.Semaphore]]
        self._per_loop = weakref.WeakKeyDictionary()

    @property
    def label(self) -> str:
        where = self.base_url or "api.openai.com"
        return f"openai:{self.model}@{where}"

    def _client(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        pair = self._per_loop.get(loop)
        if pair is None:
            client = openai.AsyncOpenAI(
                api_key=self.__key,
                base_url=self.base_url,
                max_retries=self._cfg.max_retries,
                timeout=self._cfg.timeout,
            )
            pair = (client, asyncio.Semaphore(self.max_concurrency))
            self._per_loop[loop] = pair
        return pair

    def _params(self, sampling: SamplingConfig, n: int, seed: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if n != 1:
            params["n"] = n
        if seed is not None:
            params["seed"] = seed
        if sampling.stop:
            params["stop"] = sampling.stop
        return params

    async def _request(
        self, messages: Sequence[Message], sampling: SamplingConfig, n: int, seed: int | None
    ) -> list[Generation]:
        client, sem = self._client()
        async with sem:
            t0 = time.perf_counter()
            try:
                resp = await client.chat.completions.create(
                    messages=list(messages), **self._params(sampling, n, seed)
                )
            except openai.OpenAIError as e:
                raise map_openai_error(e, self.label) from e
            except json.JSONDecodeError as e:  # the client parses a JSON content-type blindly
                raise errors.MalformedResponseError(
                    f"{self.label} sent a body that is not JSON ({e}); check that base_url "
                    "points at an OpenAI-compatible /v1 endpoint",
                    backend=self.label,
                ) from e
            latency = time.perf_counter() - t0
        return self._parse(resp, latency)

    def _parse(self, resp: Any, latency: float) -> list[Generation]:
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list):
            raise errors.MalformedResponseError(
                f"{self.label} answered with a body that is not a chat completion "
                f"({type(resp).__name__}); check that base_url points at an "
                "OpenAI-compatible /v1 endpoint",
                backend=self.label,
            )
        if not choices:
            raise errors.MalformedResponseError(
                f"{self.label} returned an empty choice list; the server produced no output",
                backend=self.label,
            )
        usage = getattr(resp, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        total_completion = getattr(usage, "completion_tokens", 0) or 0
        out = []
        for i, ch in enumerate(choices):
            msg = getattr(ch, "message", None)
            text = getattr(msg, "content", None)
            if not isinstance(text, str):
                raise errors.MalformedResponseError(
                    f"{self.label} returned choice {i} without message content",
                    backend=self.label,
                )
            # Usage is per response; spread completion tokens over choices evenly so
            # that per-generation numbers add up to the server's total.
            share = total_completion // len(choices) + (
                1 if i < total_completion % len(choices) else 0
            )
            out.append(
                Generation(
                    text=text,
                    finish_reason=getattr(ch, "finish_reason", None),
                    prompt_tokens=prompt_tokens if i == 0 else 0,
                    completion_tokens=share,
                    latency_s=latency,
                    model=getattr(resp, "model", None) or self.model,
                    backend=self.label,
                )
            )
        return out

    async def generate(
        self, messages: Sequence[Message], *, n: int = 1, sampling: SamplingConfig | None = None
    ) -> list[Generation]:
        """Samples exactly ``n`` outputs, emulating ``n`` where the server ignores it."""
        check_n(n)
        sampling = sampling or self.sampling
        if n == 1 or (self._n_known and not self.native_n):
            return await self._parallel_singles(messages, sampling, n)
        gens = await self._request(messages, sampling, n, sampling.seed)
        if not self._n_known:
            self.native_n = len(gens) >= n
            self._n_known = True
            if not self.native_n:
                logger.info("%s ignores n; emulating it with parallel calls", self.label)
        if len(gens) >= n:
            return gens[:n]
        more = await self._parallel_singles(messages, sampling, n - len(gens), offset=len(gens))
        return gens + more

    async def _parallel_singles(
        self, messages: Sequence[Message], sampling: SamplingConfig, count: int, offset: int = 0
    ) -> list[Generation]:
        def seed_for(i: int) -> int | None:
            return None if sampling.seed is None else sampling.seed + offset + i

        results = await asyncio.gather(
            *(self._request(messages, sampling, 1, seed_for(i)) for i in range(count))
        )
        return [g for r in results for g in r[:1]]

    async def stream(
        self, messages: Sequence[Message], *, sampling: SamplingConfig | None = None
    ) -> AsyncIterator[str | Generation]:
        """Streams one completion; yields text pieces, then the final Generation."""
        sampling = sampling or self.sampling
        client, sem = self._client()
        pieces: list[str] = []
        finish = None
        usage = None
        model = self.model
        async with sem:
            t0 = time.perf_counter()
            try:
                stream = await client.chat.completions.create(
                    messages=list(messages),
                    stream=True,
                    stream_options={"include_usage": True},
                    **self._params(sampling, 1, sampling.seed),
                )
                async for chunk in stream:
                    usage = getattr(chunk, "usage", None) or usage
                    model = getattr(chunk, "model", None) or model
                    for ch in getattr(chunk, "choices", None) or []:
                        delta = getattr(getattr(ch, "delta", None), "content", None)
                        if delta:
                            pieces.append(delta)
                            yield delta
                        finish = getattr(ch, "finish_reason", None) or finish
            except openai.OpenAIError as e:
                raise map_openai_error(e, self.label) from e
            latency = time.perf_counter() - t0
        text = "".join(pieces)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        if usage is None:
            # Some servers (llama.cpp) send no usage chunk when streaming. Estimate rather
            # than report zero: they stream about one token per chunk, and the prompt is
            # counted with the backend's conservative estimate.
            completion_tokens = len(pieces)
            prompt_tokens = sum(self.count_tokens(m["content"]) for m in messages)
            logger.debug("%s sent no streaming usage; token counts are estimates", self.label)
        yield Generation(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency,
            model=model,
            backend=self.label,
        )

    async def aclose(self) -> None:
        for client, _ in list(self._per_loop.values()):
            await client.close()
        self._per_loop.clear()


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
            f"{where} rate-limited the request (429) after retries: {detail}; lower "
            "max_concurrency or raise max_retries",
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
    value = e.response.headers.get("retry-after") if e.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
