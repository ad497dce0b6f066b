"""Training the bundled SmolLM2 as an aggregator on CPU: masking, truncation, loss, saving,
reloading in transformers and vLLM, and the trainer CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="needs pip install 'aft-sdk[train]'")

from aft_sdk import AggregateGraph, OpenAIBackend, get_template  # noqa: E402
from aft_sdk.trainers import AftRow, off_policy_rows, read_jsonl, write_rows  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent
DATA = ROOT / "tests" / "data" / "multi_response.jsonl"


def cpu_args(**kw):
    from aft_sdk.trainers import AggregatorConfig

    base = dict(use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                logging_steps=1, save_strategy="no", seed=0, max_length=384,
                per_device_train_batch_size=2, per_device_eval_batch_size=4)
    base.update(kw)
    return AggregatorConfig(**base)


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    rows = off_policy_rows(read_jsonl(DATA), target="reference", reference_field="reference",
                           num_proposals=3, seed=0)
    path = tmp_path_factory.mktemp("rows") / "aft_rows.jsonl"
    write_rows(rows, path)
    return path


@pytest.fixture(scope="module")
def trained(gguf_path, rows_file, tmp_path_factory):
    """One LoRA run shared by the tests below: eval loss before/after and the saved folder."""
    from aft_sdk.trainers import AggregatorTrainer

    out = tmp_path_factory.mktemp("aggregator")
    args = cpu_args(model_name_or_path=str(gguf_path), dataset_path=str(rows_file),
                    eval_dataset_path=str(rows_file), output_dir=str(out), use_lora=True,
                    lora_r=8, lora_alpha=16, learning_rate=1e-3, max_steps=12)
    trainer = AggregatorTrainer(args)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    saved = trainer.save_aggregator()
    return {"trainer": trainer, "before": before, "after": after, "dir": saved}


def test_loss_is_only_on_target_tokens(trained) -> None:
    trainer = trained["trainer"]
    tok = trainer.processing_class
    rows = [AftRow.model_validate(r) for r in read_jsonl(trainer.args.dataset_path)]
    for i in range(4):
        batch = trainer.data_collator([trainer.train_dataset[i]])
        labels, ids = batch["labels"][0], batch["input_ids"][0]
        kept = [int(t) for t, lab in zip(ids, labels) if lab != -100]
        assert tok.decode(kept) == rows[i].target + "<|im_end|>\n"
        masked = tok.decode([int(t) for t, lab in zip(ids, labels) if lab == -100])
        assert "Drafts:\n1. " in masked  # the aggregation prompt is there, but unscored


def test_eval_loss_goes_down(trained) -> None:
    assert trained["after"] < trained["before"] * 0.8, (trained["before"], trained["after"])


def test_saved_folder_reloads_in_transformers_and_generates(trained) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = trained["dir"]
    meta = json.loads((folder / "aft_sdk.json").read_text())
    assert meta["preset"] == "aft-v1" and meta["lora"] is True
    assert meta["data_sources"] and meta["config"]["learning_rate"] == 1e-3
    assert (folder / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    prompt = get_template("aft-v1").render(
        [{"role": "user", "content": "What is 7 plus 5?"}], ["12", "13", "It is 12."])
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()


def test_proposals_are_cut_before_the_target(gguf_path, tmp_path) -> None:
    from aft_sdk.trainers import AggregatorTrainer

    long_row = {"id": "long", "messages": [{"role": "user", "content": "Summarise."}],
                "proposals": ["alpha " * 300, "beta " * 300], "target": "The final answer."}
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(long_row) + "\n")
    trainer = AggregatorTrainer(cpu_args(model_name_or_path=str(gguf_path),
                                         dataset_path=str(path), output_dir=str(tmp_path),
                                         max_length=200, max_steps=1))
    ex = trainer.train_dataset[0]
    assert len(ex["input_ids"]) <= 200
    batch = trainer.data_collator([ex])
    kept = [int(t) for t, lab in zip(batch["input_ids"][0], batch["labels"][0]) if lab != -100]
    assert trainer.processing_class.decode(kept) == "The final answer.<|im_end|>\n"
    text = trainer.processing_class.decode(ex["input_ids"])
    assert text.count("alpha") > 10 and text.count("beta") > 10  # both trimmed, evenly


async def test_trained_aggregator_serves_in_vllm_inside_a_graph(trained, fault) -> None:
    """The merged folder in a vLLM engine of its own (a LoRA adapter on a shared engine is
    test_engines' base-and-adapter test, with the same PEFT folder format)."""
    pytest.importorskip("vllm")
    from aft_sdk import VLLMBackend

    agg = VLLMBackend(str(trained["dir"]), max_model_len=1024, dtype="bfloat16")
    try:
        graph = AggregateGraph(OpenAIBackend("p", base_url=fault.base_url), agg, width=3,
                               aggregator_sampling={"max_tokens": 24, "temperature": 0.0})
        result = await graph.ainvoke("What is 9 times 3?")
        assert result.answer.strip()
        assert result.layers[1].outputs[0].backend == agg.label
    finally:
        agg.shutdown()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aft_sdk.cli.main", *args],
                          capture_output=True, text=True, timeout=900)


def test_aft_train_with_the_recipe_yaml_runs_end_to_end(tmp_path, gguf_path) -> None:
    rows = tmp_path / "aft_rows.jsonl"
    r = run_cli("data", "build", "off-policy", str(DATA), "-o", str(rows), "-k", "3",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "agg"
    r = run_cli("train", "--config", str(ROOT / "recipes/configs/train_smollm2_lora.yaml"),
                "--dataset_path", str(rows), "--output_dir", str(out), "--max_steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"saved aggregator to {out}" in r.stdout
    assert (out / "model.safetensors").is_file() and (out / "adapter").is_dir()
    assert json.loads((out / "aft_sdk.json").read_text())["base_model"] == "embedded"


def test_aft_train_errors_are_clear(tmp_path, rows_file) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: embedded\ndataset_path: x.jsonl\nlearnin_rate: 0.1\n")
    r = run_cli("train", "--config", str(bad))
    assert r.returncode == 2
    assert "unknown field 'learnin_rate' (did you mean 'learning_rate'?)" in r.stderr
    r = run_cli("train", "--model_name_or_path", "embedded", "--dataset_path",
                str(tmp_path / "none.jsonl"), "--use_cpu", "true")
    assert r.returncode == 2 and "dataset_path not found" in r.stderr
    r = run_cli("train", "--model_name_or_path", "./no/such/model", "--dataset_path",
                str(rows_file), "--use_cpu", "true")
    assert r.returncode == 2 and "model path not found: ./no/such/model" in r.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"id": "b", "messages": [{"role": "user", "content": "q"}],
                                  "proposals": [], "target": "t"}) + "\n")
    r = run_cli("train", "--model_name_or_path", "embedded", "--dataset_path", str(broken),
                "--use_cpu", "true")
    assert r.returncode == 2 and "row 1: field 'proposals'" in r.stderr
