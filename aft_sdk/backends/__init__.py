"""Model backends behind one async protocol (see :class:`Backend`).

Heavy engines (llama.cpp, vLLM) are imported only when their backend is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aft_sdk.backends.base import Backend, Generation, normalize_messages, run_sync
from aft_sdk.backends.factory import default_backend, make_backend, parse_spec

if TYPE_CHECKING:
    from aft_sdk.backends.embedded import EmbeddedBackend
    from aft_sdk.backends.openai_backend import OpenAIBackend
    from aft_sdk.backends.vllm_backend import VLLMBackend

_LAZY = {
    "OpenAIBackend": "aft_sdk.backends.openai_backend",
    "VLLMBackend": "aft_sdk.backends.vllm_backend",
    "EmbeddedBackend": "aft_sdk.backends.embedded",
}

__all__ = [
    "Backend",
    "EmbeddedBackend",
    "Generation",
    "OpenAIBackend",
    "VLLMBackend",
    "default_backend",
    "make_backend",
    "normalize_messages",
    "parse_spec",
    "run_sync",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
