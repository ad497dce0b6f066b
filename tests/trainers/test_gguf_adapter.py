"""A trained LoRA aggregator exported as a GGUF adapter and run by llama.cpp.

The export is checked numerically against PEFT on the same prompt (what the adapter
adds to the logits must agree between transformers and llama.cpp), and end to end:
`aft train --export_gguf true`, then `EmbeddedBackend(lora_path=...)` aggregating.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="needs pip install 'aft-sdk[train]'")
pytest.importorskip("llama_cpp", reason="needs pip install 'aft-sdk[embedded]'")

from aft_sdk import AggregateGraph, ConfigError, EmbeddedBackend, SamplingConfig  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent
PROMPT = "Question: what is 7 + 5?\nDraft 1: 12\nDraft 2: 13\nThe best answer is"


@pytest.fixture(scope="module")
def random_adapter(hf_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All linear layers adapted with random (non-zero) B, so every tensor matters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(hf_model_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    out = tmp_path_factory.mktemp("lora") / "all-linear"
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def _hf_delta(hf_model_dir: Path, adapter: Path, ids: list[int]):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_model_dir)
    with torch.no_grad():
        base = model(torch.tensor([ids])).logits[0, -1].numpy()
        tuned = PeftModel.from_pretrained(model, adapter)(torch.tensor([ids])).logits[0, -1].numpy()
    return tuned - base


def _cpp_logits(gguf_path: Path, ids: list[int], lora: Path | None = None):
    import llama_cpp
    import numpy as np

    kw = {"lora_path": str(lora)} if lora else {}
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, logits_all=True, verbose=False, **kw)
    llm.eval(ids)
    return np.array(llm.scores[len(ids) - 1])


def test_exported_adapter_adds_what_peft_adds(gguf_path, hf_model_dir, random_adapter,
                                              tmp_path, monkeypatch) -> None:
    import numpy as np
    from transformers import AutoTokenizer

    from aft_sdk.trainers import export_lora_to_gguf
    from aft_sdk.trainers import gguf as gguf_module

    ids = AutoTokenizer.from_pretrained(hf_model_dir)(PROMPT)["input_ids"]
    hf = _hf_delta(hf_model_dir, random_adapter, ids)
    base = _cpp_logits(gguf_path, ids)

    out = export_lora_to_gguf(random_adapter, tmp_path / "adapter.gguf", base=gguf_path)
    cpp = _cpp_logits(gguf_path, ids, out) - base
    # The base runs 4-bit in llama.cpp and fp32 in transformers, so not equal, but the
    # change the adapter makes must be the same change.
    assert np.corrcoef(hf, cpp)[0, 1] > 0.98
    assert int(np.argmax(hf)) == int(np.argmax(cpp))
    assert out.stat().st_size < 2.5e6  # f16: r=4 over 30 layers of 7 matrices

    # Without the query/key row reordering llama.cpp's converter applies, the same check
    # fails: this is what the test guards.
    monkeypatch.setattr(gguf_module, "_PERMUTED_QK", set())
    wrong = export_lora_to_gguf(random_adapter, tmp_path / "wrong.gguf", base=gguf_path)
    assert np.corrcoef(hf, _cpp_logits(gguf_path, ids, wrong) - base)[0, 1] < 0.96


def test_export_refuses_what_it_cannot_convert(gguf_path, random_adapter, tmp_path) -> None:
    from aft_sdk.trainers import export_lora_to_gguf

    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        export_lora_to_gguf(tmp_path, tmp_path / "x.gguf", base=gguf_path)
    with pytest.raises(ConfigError, match="base GGUF not found"):
        export_lora_to_gguf(random_adapter, tmp_path / "x.gguf", base=tmp_path / "none.gguf")
    with pytest.raises(ConfigError, match="PEFT adapter folder; llama.cpp needs it as GGUF"):
        EmbeddedBackend(lora_path=random_adapter)
    with pytest.raises(ConfigError, match="is not a .gguf file"):
        EmbeddedBackend(lora_path=tmp_path / "missing.gguf")


def test_aft_train_exports_gguf_and_llama_cpp_aggregates_with_it(tmp_path) -> None:
    rows = tmp_path / "aft_rows.jsonl"
    cli = [sys.executable, "-m", "aft_sdk.cli.main"]
    r = subprocess.run([*cli, "data", "build", "off-policy", str(ROOT / "tests/data/multi_response.jsonl"),
                        "-o", str(rows), "-k", "3", "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "agg"
    r = subprocess.run([*cli, "train", "--config", str(ROOT / "recipes/configs/train_smollm2_lora.yaml"),
                        "--dataset_path", str(rows), "--output_dir", str(out), "--max_steps", "8",
                        "--learning_rate", "2e-3", "--export_gguf", "true", "--merge_lora", "false"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    adapter = out / "adapter.gguf"
    assert adapter.is_file() and adapter.stat().st_size < 6e6

    question = "Name a primary colour. Answer in one word."
    greedy = SamplingConfig(temperature=0.0, max_tokens=24)
    proposer = EmbeddedBackend()
    outputs = {}
    for name, aggregator in (("base", EmbeddedBackend()), ("aft", EmbeddedBackend(lora_path=adapter))):
        graph = AggregateGraph(proposer, aggregator, width=2, depth=1,
                               proposer_sampling=SamplingConfig(temperature=0.8, max_tokens=24,
                                                                seed=7),
                               aggregator_sampling=greedy)
        result = graph.invoke(question)
        assert result.answer.strip()
        outputs[name] = result
    # Same seed, same proposals: only the aggregator's weights differ.
    assert outputs["base"].proposals == outputs["aft"].proposals
    assert outputs["base"].answer != outputs["aft"].answer
    assert outputs["aft"].layers[-1].outputs[0].backend == "embedded:SmolLM2-135M-Instruct.Q4_1+adapter"
    meta = json.loads((out / "aft_sdk.json").read_text())
    assert meta["config"]["export_gguf"] is True
