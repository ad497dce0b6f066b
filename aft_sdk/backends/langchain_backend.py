"""Any LangChain chat model as a backend (Anthropic, Bedrock, Ollama, ... through their
LangChain packages), from Python or, by its config / spec, from YAML, ``aft serve`` and
Ray workers::

    proposers:
      - {type: langchain, model_class: "langchain_anthropic:ChatAnthropic",
         kwargs: {model: claude-3-5-haiku-latest}, api_key_env: ANTHROPIC_API_KEY}

or ``langchain:langchain_anthropic:ChatAnthropic#claude-3-5-haiku-latest?key_env=ANTHROPIC_API_KEY``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from aft_sdk import errors
from aft_sdk.backends.base import Backend, Generation, Message, check_n, emulate_n
from aft_sdk.backends.logprobs import missing_logprobs
from aft_sdk.backend_config import ModelPrice
from aft_sdk.config import EXTRA_SAMPLING, LangChainBackendConfig, SamplingConfig
from aft_sdk.messages import PART_TYPES, normalize_messages
from aft_sdk.plugins import load_object
from aft_sdk.tools import CallOptions, openai_call

_SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens")


class LangChainBackend(Backend):
    """Any LangChain chat model as a proposer or aggregator.

    Sampling fields the model class has (``temperature``, ``top_p``, ``max_tokens``,
    ``seed``) are set per call on a copy of the model; ``stop`` goes with the call.
    ``n`` is emulated with parallel calls. Errors become :class:`BackendError` (the
    ``openai`` ones map as for :class:`OpenAIBackend`).

    Args:
        chat_model: A ``langchain_core`` ``BaseChatModel``.
        context_window: The model's total token window, for the graph's prompt budget.
        sampling: Default sampling for calls that pass none.
    """

    parts = PART_TYPES[1:]  # content blocks pass to the model, which decides
    keeps_developer = True  # LangChain maps the role for its provider
    handles = frozenset({"tools", "response_format"})  # bind_tools / bind(response_format)

    def __init__(self, chat_model: BaseChatModel, *, context_window: int | None = None,
                 price: Any = None, price_provider: str | None = None,
                 sampling: SamplingConfig | None = None) -> None:
        if not isinstance(chat_model, BaseChatModel):
            raise errors.ConfigError(
                f"LangChainBackend needs a LangChain chat model, got {type(chat_model).__name__}")
        self.chat_model = chat_model
        self.model = str(getattr(chat_model, "model_name", None)
                         or getattr(chat_model, "model", None) or type(chat_model).__name__)
        self.context_window = context_window
        self.sampling = sampling or SamplingConfig()
        self.price = ModelPrice.model_validate(price) if isinstance(price, dict) else price
        # Priced by the database at its provider: named, or the endpoint it calls
        # (ChatOpenAI with no base URL calls OpenAI's).
        self.base_url = next((u for u in (getattr(chat_model, a, None) for a in (
            "openai_api_base", "anthropic_api_url", "base_url")) if isinstance(u, str)), None)
        self.price_provider = price_provider or (
            "openai" if type(chat_model).__name__ == "ChatOpenAI" and not self.base_url
            else None)

    @classmethod
    def from_config(cls, cfg: LangChainBackendConfig,
                    sampling: SamplingConfig | None = None) -> LangChainBackend:
        """Builds the chat model ``cfg.model_class(**cfg.kwargs)``; its key comes from the
        environment variable ``cfg.api_key_env`` only."""
        model_class = load_object(cfg.model_class, "LangChain chat model class")
        kwargs = dict(cfg.kwargs)
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise errors.ConfigError(f"api_key_env names {cfg.api_key_env}, which is not "
                                         "set in the environment")
            kwargs["api_key"] = key
        try:
            chat_model = model_class(**kwargs)
        except Exception as e:  # each provider validates its arguments its own way
            raise errors.ConfigError(f"{cfg.model_class} refused its arguments "
                                     f"({', '.join(sorted(kwargs))}): {type(e).__name__}") from e
        return cls(chat_model, context_window=cfg.context_window, price=cfg.price,
                   price_provider=cfg.price_provider, sampling=sampling)

    @property
    def label(self) -> str:
        return f"langchain:{type(self.chat_model).__name__}({self.model})"

    def _configured(self, sampling: SamplingConfig, seed: int | None) -> BaseChatModel:
        fields = type(self.chat_model).model_fields
        update = {name: getattr(sampling, name) for name in _SAMPLING_FIELDS if name in fields}
        update.update(sampling.extras([k for k in EXTRA_SAMPLING if k in fields], self.label))
        if seed is not None and "seed" in fields:
            update["seed"] = seed
        return self.chat_model.model_copy(update=update)

    def _bound(self, model: BaseChatModel, options: CallOptions | None) -> Any:
        """The model with the request's tools (``bind_tools``) and response format."""
        if options is None:
            return model
        bound: Any = model
        if options.tools:
            extra = {} if options.parallel_tool_calls is None else {
                "parallel_tool_calls": options.parallel_tool_calls}
            try:
                bound = model.bind_tools(options.tools, tool_choice=options.tool_choice, **extra)
            except NotImplementedError as e:
                raise errors.BadRequestError(
                    f"{self.label} cannot call tools (its bind_tools is not implemented)",
                    status_code=400, backend=self.label) from e
        if options.response_format is not None:
            bound = bound.bind(response_format=options.response_format)
        return bound

    async def _one(self, messages: Sequence[Message], sampling: SamplingConfig,
                   seed: int | None, options: CallOptions | None = None) -> Generation:
        model = self._bound(self._configured(sampling, seed), options)
        t0 = time.perf_counter()
        try:
            message = await model.ainvoke(list(messages), stop=sampling.stop)
        except errors.AftError:
            raise
        except Exception as e:  # noqa: BLE001 - each provider has its own error types
            raise _map(e, self.label) from e
        content = message.content if isinstance(message.content, str) else "".join(
            b if isinstance(b, str) else str(b.get("text", "")) for b in message.content
            if isinstance(b, str) or b.get("type") == "text")
        usage = getattr(message, "usage_metadata", None) or {}
        meta = getattr(message, "response_metadata", None) or {}
        lps = None
        if sampling.logprobs:  # a class that takes the field (ChatOpenAI) puts them here
            lps = (meta.get("logprobs") or {}).get("content")
            if not isinstance(lps, list):
                raise missing_logprobs(self.label)
        return Generation(
            text=content, finish_reason=meta.get("finish_reason"),
            prompt_tokens=int(usage.get("input_tokens", 0)),
            completion_tokens=int(usage.get("output_tokens", 0)),
            cached_tokens=int((usage.get("input_token_details") or {}).get("cache_read") or 0),
            latency_s=time.perf_counter() - t0,
            model=str(meta.get("model_name") or self.model), backend=self.label,
            tool_calls=[openai_call(c) for c in getattr(message, "tool_calls", None) or []]
            or None, logprobs=lps,
        )

    async def generate(self, messages: Sequence[Message], *, n: int = 1,
                       sampling: SamplingConfig | None = None,
                       options: CallOptions | None = None) -> list[Generation]:
        """Samples ``n`` outputs with parallel calls (seeds ``seed``, ``seed+1``, ...)."""
        check_n(n)
        if isinstance(messages, str):
            messages = normalize_messages(messages)
        sampling = sampling or self.sampling

        async def one(seed: int | None) -> Generation:
            return await self._one(messages, sampling, seed, options)

        return await emulate_n(one, n, seed=sampling.seed, label=self.label)


def _map(e: Exception, label: str) -> errors.BackendError:
    try:
        import openai

        from aft_sdk.backends.http_errors import map_openai_error

        if isinstance(e, openai.OpenAIError):
            return map_openai_error(e, label)
    except ImportError:
        pass
    return errors.BackendError(f"{label} failed: {type(e).__name__}: {e}", backend=label)
