"""The zero-config aggregator: the bundled model with its shipped AFT adapter, when the
install has one (recipes/default_aggregator.py decides that by measurement)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aft_sdk import BackendUnavailableError, ConfigError
from aft_sdk.backends import embedded_backend
from aft_sdk.backends.embedded_backend import BUNDLED_ADAPTER, bundled_adapter_path
from aft_sdk.backends.factory import parse_spec
from aft_sdk.config import EmbeddedBackendConfig

pytest.importorskip("llama_cpp", reason="needs pip install 'aft-sdk[embedded]'")


def test_specs_name_the_bundled_adapter_or_a_file() -> None:
    assert parse_spec("embedded+aft") == EmbeddedBackendConfig(lora_path="bundled")
    cfg = parse_spec("embedded:/m/model.gguf+lora:/a/adapter.gguf")
    assert (cfg.model_path, cfg.lora_path) == ("/m/model.gguf", "/a/adapter.gguf")
    assert parse_spec("embedded:/m/model.gguf").lora_path is None


def test_asking_for_a_missing_bundled_adapter_says_so(monkeypatch, tmp_path) -> None:
    from aft_sdk import EmbeddedBackend

    monkeypatch.setattr(embedded_backend, "BUNDLED_ADAPTER", tmp_path / "absent.gguf")
    with pytest.raises(BackendUnavailableError, match="is not in this install"):
        EmbeddedBackend(lora_path="bundled")
    with pytest.raises(ConfigError, match="is not a .gguf file"):
        EmbeddedBackend(lora_path=tmp_path / "adapter.bin")


@pytest.mark.slow
def test_aft_run_with_no_backend_named_uses_the_default_aggregator(gguf_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "aft_sdk.cli.main", "run", "Name a fruit.", "--json",
         "--width", "2", "--max-tokens", "16", "--aggregator-max-tokens", "24", "--seed", "1"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    layers = json.loads(r.stdout)["layers"]
    proposer = {o["backend"] for o in layers[0]["outputs"]}
    aggregator = layers[1]["outputs"][0]["backend"]
    assert proposer == {"embedded:SmolLM2-135M-Instruct.Q4_1"}
    if bundled_adapter_path():
        assert aggregator == f"embedded:SmolLM2-135M-Instruct.Q4_1+{BUNDLED_ADAPTER.stem}"
        assert BUNDLED_ADAPTER.stat().st_size < 8e6  # a few MB, inside the package
    else:  # the recipe's bar was not met: the untrained model stays the aggregator
        assert aggregator == "embedded:SmolLM2-135M-Instruct.Q4_1"
