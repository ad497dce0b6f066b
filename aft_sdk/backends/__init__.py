"""Model backends behind one async protocol (see :class:`Backend`).

Heavy engines (llama.cpp, vLLM) are imported only when their backend is first used.
"""

from __future__ import annotations

from aft_sdk._lazy import lazy_getattr

from typing import TYPE_CHECKING

from aft_sdk.backends.base import Backend, Generation, normalize_messages, run_sync
from aft_sdk.backends.factory import default_backend, make_backend, parse_spec

if TYPE_CHECKING:
    from aft_sdk.backends.embedded_backend import EmbeddedBackend
    from aft_sdk.backends.langchain_backend import LangChainBackend
    from aft_sdk.backends.openai_backend import OpenAIBackend
    from aft_sdk.backends.vllm_backend import VLLMBackend

_LAZY = {
    "OpenAIBackend": "aft_sdk.backends.openai_backend",
    "VLLMBackend": "aft_sdk.backends.vllm_backend",
    "EmbeddedBackend": "aft_sdk.backends.embedded_backend",
    "LangChainBackend": "aft_sdk.backends.langchain_backend",
}

__all__ = [
    "Backend",
    "EmbeddedBackend",
    "Generation",
    "LangChainBackend",
    "OpenAIBackend",
    "VLLMBackend",
    "default_backend",
    "make_backend",
    "normalize_messages",
    "parse_spec",
    "run_sync",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
