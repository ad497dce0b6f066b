"""A process that owns one kind of engine, for tests/test_lifecycle.py.

    python tests/lifecycle_owner.py KIND WAY [MODEL]

KIND: ``vllm`` (in-process engine), ``vllm-server``, ``llama`` (in-process llama.cpp),
``llama-server``, ``ray`` (a local cluster with graph actors). The owner starts it, makes
one real call, prints ``READY`` and then ends the WAY the test asks:

- ``close``: closes what it opened, prints ``CLOSED``, then waits for stdin to close;
- ``exit``: returns from main without closing anything;
- ``raise``: raises an uncaught exception;
- ``wait``: waits (for the test's SIGTERM, SIGINT or SIGKILL).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def start(kind: str, model: str) -> tuple[Any, Any]:
    """Starts the engine; returns (a call that uses it, a call that closes it)."""
    if kind == "vllm":
        from aft_sdk import VLLMBackend

        backend = VLLMBackend(model, max_model_len=512, dtype="bfloat16")
        return lambda: backend.generate_sync("Say hi.", n=2), backend.close
    if kind == "llama":
        from aft_sdk import EmbeddedBackend

        backend = EmbeddedBackend()
        return lambda: backend.generate_sync("Say hi."), backend.close
    if kind in ("vllm-server", "llama-server"):
        from aft_sdk import OpenAIBackend
        from aft_sdk.testing import LocalServer

        server = (LocalServer.vllm(model, max_model_len=512) if kind == "vllm-server"
                  else LocalServer.llama_cpp(model, n_threads=1)).start()
        backend = OpenAIBackend(server.model, base_url=server.base_url, api_key="none")
        return lambda: backend.generate_sync("Say hi."), server.stop
    if kind == "ray":
        from aft_sdk import GraphConfig
        from aft_sdk.scale import RayGraphPool

        api = {"type": "openai", "model": "m", "base_url": model, "max_retries": 0}
        pool = RayGraphPool(GraphConfig(proposers=[api], width=1, depth=0), workers=1)

        def close() -> None:
            import ray

            pool.close()
            ray.shutdown()

        return lambda: asyncio.run(pool.run([{"role": "user", "content": "hi"}])), close
    raise SystemExit(f"unknown kind {kind!r}")


def main() -> None:
    kind, way = sys.argv[1], sys.argv[2]
    use, close = start(kind, sys.argv[3] if len(sys.argv) > 3 else "")
    use()
    print("READY", flush=True)
    if way == "close":
        close()
        print("CLOSED", flush=True)
        sys.stdin.read()
    elif way == "raise":
        raise RuntimeError("the owner fails on purpose")
    elif way == "wait":
        sys.stdin.read()  # SIGINT lands here as KeyboardInterrupt


if __name__ == "__main__":  # vLLM's workers re-import this file
    main()
