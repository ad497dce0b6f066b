"""Shared fixtures: real servers on 127.0.0.1, started once per test session.

- ``llama_server``: llama-cpp-python's OpenAI-compatible server on the bundled GGUF.
- ``vllm_server``: vLLM's OpenAI-compatible server (vllm-cpu here) on an HF folder
  exported from the same GGUF.
- ``vllm_backend``: an in-process ``VLLMBackend`` on that folder.
- ``fault``: our scriptable server for errors, hangs and counting.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from aft_sdk.testing import FaultServer, LocalServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _need(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'aft-sdk[{extra}]')")


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    _need("llama_cpp", "embedded")
    from aft_sdk.backends.embedded_backend import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def llama_server(gguf_path: Path):
    with LocalServer.llama_cpp(gguf_path, alias="smollm2", n_ctx=2048) as srv:
        yield srv


@pytest.fixture(scope="session")
def hf_model_dir(gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model as an ordinary HF folder (dequantised; ~12 s to export)."""
    _need("transformers", "train")
    from aft_sdk.trainers.gguf import export_gguf_to_hf

    cache = os.environ.get("AFT_TEST_HF_DIR")
    if cache and (Path(cache) / "config.json").is_file():
        return Path(cache)
    out = Path(cache) if cache else tmp_path_factory.mktemp("smollm2-hf")
    return export_gguf_to_hf(gguf_path, out)


@pytest.fixture(scope="session")
def vllm_server(hf_model_dir: Path):
    _need("vllm", "vllm")
    with LocalServer.vllm(hf_model_dir, name="smollm2-vllm", max_model_len=1024) as srv:
        yield srv


@pytest.fixture(scope="session")
def vllm_backend(hf_model_dir: Path):
    _need("vllm", "vllm")
    from aft_sdk.backends import VLLMBackend

    backend = VLLMBackend(str(hf_model_dir), max_model_len=1024, dtype="bfloat16")
    backend.llm  # start the engine once for the whole session
    yield backend
    backend.shutdown()


@pytest.fixture(scope="session")
def fault_server():
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def fault(fault_server: FaultServer) -> FaultServer:
    """The session's fault server with scripts and counters cleared."""
    fault_server.reset()
    fault_server.delay_s = 0.0
    fault_server.honour_n = True
    return fault_server
