"""Backend for any OpenAI-compatible chat completions endpoint.

OpenAI, Together, a vLLM or llama.cpp server, Ollama. Retries are the ``openai`` client's
own (``max_retries``, honouring ``Retry-After``): one retry loop around each HTTP call.
Servers that ignore ``n`` (llama.cpp) are detected and topped up with single calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai
from openai._constants import DEFAULT_CONNECTION_LIMITS

from aft_sdk import errors, tracing
from aft_sdk.aio import aclose_on_their_loops
from aft_sdk.backends.base import (
    Backend, Generation, Message, ToolCallChunk, check_n, emulate_n, is_greedy)
from aft_sdk.backends.credentials import env_base_url, is_openai_endpoint, resolve_api_key
from aft_sdk.backends.credentials import scrub_ambient_headers
from aft_sdk.backends.http_errors import MALFORMED, map_upstream_error
from aft_sdk.backends.logprobs import missing_logprobs, openai_logprobs
from aft_sdk.backends.openai_parse import OpenAIParsing
from aft_sdk.backends.limiter import AdaptiveLimiter, LimitedTransport, httpx
from aft_sdk.config import EXTRA_SAMPLING, OpenAIBackendConfig, SamplingConfig
from aft_sdk.validation import validate_arguments
from aft_sdk.messages import PART_TYPES, content_tokens, for_backend
from aft_sdk.redact import RedactURLs, redact_url
from aft_sdk.tools import CallOptions

logger = logging.getLogger(__name__)

# The openai client insists on a key; keyless hosts get no Authorization header.
_NO_KEY = "no-key"
OPENAI_URL = "https://api.openai.com/v1"

for _name in ("httpx", "httpx2"):  # both log every request URL at INFO
    logging.getLogger(_name).addFilter(RedactURLs())


class OpenAIBackend(OpenAIParsing, Backend):
    """Chat completions over HTTP against any OpenAI-compatible server.

    Keys are scoped: OpenAI's endpoint (``base_url=None``) uses ``OPENAI_API_KEY``; any
    other ``base_url`` gets a key only when you name one (``api_key=`` or
    ``api_key_env=``), so a key from the environment never travels to a third party.
    With ``base_url=None`` and ``OPENAI_BASE_URL`` set, the backend goes there with
    ``OPENAI_API_KEY`` (if set), as the ``openai`` client does: both come from your
    environment.

    Concurrency adapts: requests go out at once until the server answers 429, then the
    limit halves and grows back by about one per window of successes (AIMD), honouring
    ``Retry-After``. ``max_concurrency`` is an optional hard cap on top.

    Args:
        model: Model id the server knows (``gpt-4o-mini``, ``smollm2``, ...).
        base_url: Endpoint root ending in ``/v1``; ``None`` means ``OPENAI_BASE_URL`` from
            the environment, else api.openai.com.
        api_key: Key for this endpoint.
        api_key_env: Name of the environment variable holding the key.
        max_retries: Retries the openai client makes on 408/409/429/5xx and connection
            errors, honouring ``Retry-After``. Auth and bad-request errors are never
            retried.
        timeout: Seconds per HTTP attempt.
        max_concurrency: Hard cap on requests in flight; ``None`` (default) leaves the
            adaptive limit alone.
        native_n: Whether the server honours ``n``; ``None`` detects it on first use.
        context_window: The model's total token window, for the graph's prompt budget.
        price: Dollars per million tokens; else the price database (:mod:`.pricing`).
        continuation: How a step-level search continues a partial answer here: ``chat``
            (vLLM's server) or ``completions`` with ``chat_template`` (llama.cpp's
            servers); see :mod:`aft_sdk.backends.continuation`.
        chat_template: The model's chat template for ``continuation="completions"``.
        sampling: Default sampling for calls that pass none.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        max_retries: int = 2,
        timeout: float = 120.0,
        max_concurrency: int | None = None,
        native_n: bool | None = None,
        context_window: int | None = None,
        price: Any = None,
        price_provider: str | None = None,
        continuation: str | None = None,
        chat_template: str | None = None,
        sampling: SamplingConfig | None = None,
    ) -> None:
        cfg = validate_arguments(OpenAIBackendConfig, locals(), source="OpenAIBackend")
        self.price, self.price_provider = cfg.price, cfg.price_provider
        self.model = cfg.model
        self.base_url = (cfg.base_url.rstrip("/") if cfg.base_url is not None
                         else env_base_url() or OPENAI_URL)
        self.native_n = bool(cfg.native_n)
        self._n_known = cfg.native_n is not None
        self.context_window = cfg.context_window
        self.max_concurrency = cfg.max_concurrency
        self.sampling = sampling or SamplingConfig()
        self._cfg = cfg
        # The key lives only here and inside the client objects; never in traces/logs.
        self.__key = resolve_api_key(cfg)
        # httpx clients and asyncio primitives bind to an event loop; keep one per loop.
        self._per_loop: weakref.WeakKeyDictionary[Any, tuple[openai.AsyncOpenAI, AdaptiveLimiter]]
        self._per_loop = weakref.WeakKeyDictionary()

    @classmethod
    def from_config(
        cls, cfg: OpenAIBackendConfig, sampling: SamplingConfig | None = None
    ) -> OpenAIBackend:
        """Builds the backend from a validated config."""
        return cls(**{k: v for k, v in cfg if k != "type"}, sampling=sampling)

    @property
    def label(self) -> str:
        return f"openai:{self.model}@{redact_url(self.base_url)}"

    @property
    def limiter(self) -> AdaptiveLimiter:
        """The concurrency limiter of the running event loop (for inspection)."""
        return self._client()[1]

    def _client(self) -> tuple[openai.AsyncOpenAI, AdaptiveLimiter]:
        loop = asyncio.get_running_loop()
        pair = self._per_loop.get(loop)
        if pair is None:
            limiter = AdaptiveLimiter(self.max_concurrency)
            hooks: dict[str, list[Any]] = {}
            if not is_openai_endpoint(self.base_url):
                hooks["request"] = [scrub_ambient_headers(self.__key)]
            transport = LimitedTransport(
                httpx.AsyncHTTPTransport(limits=DEFAULT_CONNECTION_LIMITS), limiter
            )
            client = openai.AsyncOpenAI(
                api_key=self.__key or _NO_KEY,
                base_url=self.base_url,
                max_retries=self._cfg.max_retries,
                timeout=self._cfg.timeout,
                http_client=openai.DefaultAsyncHttpxClient(transport=transport, event_hooks=hooks),
            )
            pair = (client, limiter)
            self._per_loop[loop] = pair
        return pair

    handles = frozenset({"tools", "response_format"})  # the server says if it cannot

    def _params(self, sampling: SamplingConfig, n: int, seed: int | None,
                options: CallOptions | None = None) -> dict[str, Any]:
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
        params.update(sampling.extras(EXTRA_SAMPLING, self.label))
        if options is not None:
            params.update(options.request_fields())
        trace_headers = tracing.outgoing_headers()  # W3C traceparent, when a span is on
        if trace_headers:
            params["extra_headers"] = trace_headers
        return params

    async def _request(
        self, messages: Sequence[Message], sampling: SamplingConfig, n: int, seed: int | None,
        options: CallOptions | None = None,
    ) -> list[Generation]:
        client, _ = self._client()
        t0 = time.perf_counter()
        try:
            resp = await client.chat.completions.create(
                messages=self._view(messages), **self._params(sampling, n, seed, options)
            )
            return self._parse(resp, time.perf_counter() - t0, bool(sampling.logprobs))
        except (openai.OpenAIError, *MALFORMED) as e:
            raise self._upstream(e) from e

    parts = PART_TYPES[1:]  # passed on: the server says whether it can see them

    def _view(self, messages: Sequence[Message]) -> list[Message]:
        """The conversation as this server takes it: parts pass through (the server
        says whether it can see them), text-only content goes as one string (servers
        such as llama.cpp take nothing else), and ``developer`` is kept for OpenAI's
        endpoint only (others get ``system``: most chat templates lack the role)."""
        return for_backend(messages, self.label, developer=self.keeps_developer,
                           parts=self.parts)

    @property
    def keeps_developer(self) -> bool:  # type: ignore[override]
        return is_openai_endpoint(self.base_url)

    async def generate(
        self, messages: Sequence[Message], *, n: int = 1, sampling: SamplingConfig | None = None,
        options: CallOptions | None = None,
    ) -> list[Generation]:
        """Samples exactly ``n`` outputs, emulating ``n`` where the server ignores it.

        Greedy sampling with ``n > 1`` is always sent as ``n`` single calls: servers
        such as vLLM refuse ``n > 1`` at temperature 0.
        """
        check_n(n)
        sampling = sampling or self.sampling
        if n == 1 or is_greedy(sampling) or (self._n_known and not self.native_n):
            return await self._parallel_singles(messages, sampling, n, options=options)
        gens = await self._request(messages, sampling, n, sampling.seed, options)
        if not self._n_known:
            self.native_n = len(gens) >= n
            self._n_known = True
            if not self.native_n:
                logger.info("%s ignores n; emulating it with parallel calls", self.label)
        if len(gens) >= n:
            return gens[:n]
        return await self._parallel_singles(messages, sampling, n - len(gens), kept=gens,
                                            options=options)

    async def _parallel_singles(
        self, messages: Sequence[Message], sampling: SamplingConfig, count: int,
        kept: Sequence[Generation] = (), options: CallOptions | None = None,
    ) -> list[Generation]:
        async def one(seed: int | None) -> Generation:
            return (await self._request(messages, sampling, 1, seed, options))[0]

        return await emulate_n(one, count, seed=sampling.seed, label=self.label, kept=kept)

    async def stream(
        self, messages: Sequence[Message], *, sampling: SamplingConfig | None = None,
        options: CallOptions | None = None,
    ) -> AsyncIterator[str | ToolCallChunk | Generation]:
        """Streams one completion; yields text pieces and tool-call pieces, then the
        final Generation."""
        sampling = sampling or self.sampling
        client, _ = self._client()
        pieces: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        lps: list[dict[str, Any]] | None = [] if sampling.logprobs else None
        finish = None
        usage = None
        model = self.model
        t0 = time.perf_counter()
        try:
            stream = await client.chat.completions.create(
                messages=self._view(messages),
                stream=True,
                stream_options={"include_usage": True},
                **self._params(sampling, 1, sampling.seed, options),
            )
            async for chunk in stream:
                usage = getattr(chunk, "usage", None) or usage
                model = self._field(chunk, "model", str, "stream chunk ") or model
                choices = getattr(chunk, "choices", None) or []
                if not isinstance(choices, list):
                    raise self._malformed("a stream chunk's choices is not a list")
                for ch in choices:
                    delta = self._field(getattr(ch, "delta", None), "content", str,
                                        "stream chunk delta.")
                    if delta:
                        pieces.append(delta)
                        yield delta
                    for piece in self._call_deltas(getattr(ch, "delta", None), calls):
                        yield piece
                    finish = self._field(ch, "finish_reason", str, "stream chunk ") or finish
                    if lps is not None:
                        lps += openai_logprobs(ch, "stream chunk ", self._malformed) or []
            if finish is None:
                raise self._malformed(
                    f"the stream ended without a finish_reason after {len(pieces)} pieces "
                    "(cut off upstream)")
            prompt_tokens, completion_tokens, cached = self._usage(usage)
            if lps == [] and pieces:
                raise missing_logprobs(self.label)
        except (openai.OpenAIError, *MALFORMED) as e:
            raise self._upstream(e) from e
        latency = time.perf_counter() - t0
        text = "".join(pieces)
        if usage is None:
            # Some servers (llama.cpp) send no usage chunk when streaming. Estimate rather
            # than report zero: they stream about one token per chunk, and the prompt is
            # counted with the backend's conservative estimate.
            completion_tokens = len(pieces)
            prompt_tokens = sum(content_tokens(m["content"], self.count_tokens)
                                for m in messages)
            logger.debug("%s sent no streaming usage; token counts are estimates", self.label)
        yield Generation(
            text=text, finish_reason=finish, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cached_tokens=cached, latency_s=latency,
            model=model, backend=self.label,
            tool_calls=[{"id": c["id"] or f"call_{i}", "type": "function",
                         "function": {"name": c["name"], "arguments": c["arguments"] or "{}"}}
                        for i, c in sorted(calls.items())] or None,
            logprobs=lps,
        )

    async def continue_text(self, messages: Sequence[Message], prefix: str, *, separator: str,
                            n: int = 1, sampling: SamplingConfig | None = None) -> list[Generation]:
        from aft_sdk.backends.continuation import openai_step

        check_n(n)
        if (refused := self.continuation_refused()) is not None:
            raise refused
        return await openai_step(self, self._client()[0], self._view(messages), prefix, separator,
                                 n, sampling or self.sampling, self._upstream)

    def continuation_refused(self) -> errors.ConfigError | None:
        from aft_sdk.backends.continuation import cannot_continue, load_template

        if self._cfg.continuation == "completions":
            load_template(self._cfg.chat_template)  # a bad template fails here, by name
        return None if self._cfg.continuation else cannot_continue(self.label, (
            "set continuation: chat (a server that continues a trailing assistant message, "
            "as vLLM's does) or continuation: completions with chat_template (llama.cpp's "
            "servers) on this backend"))

    def _upstream(self, e: BaseException) -> errors.AftError:
        return map_upstream_error(e, self.label, self.__key)

    async def aclose(self) -> None:
        pairs = list(self._per_loop.items())
        self._per_loop.clear()
        await aclose_on_their_loops([(loop, client.close) for loop, (client, _) in pairs])
