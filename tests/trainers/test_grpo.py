"""GRPO training of an aggregator: rewards, the easy/hard mix, config errors, the CLI, and a
real run on the bundled model where the reward must rise (a marked right draft)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="needs pip install 'aft-sdk[train]'")

from aft_sdk.errors import ConfigError  # noqa: E402
from aft_sdk.trainers import AftRow  # noqa: E402
from aft_sdk.trainers.rewards import (  # noqa: E402
    correctness_reward,
    format_reward,
    length_reward,
    majority_right,
    make_verifier,
)

ROOT = Path(__file__).parent.parent.parent


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_verifiers_compare_final_answers() -> None:
    number = make_verifier("number")
    assert number("so 3 + 4 = 7. The answer is 7.", "3 + 4 = 7. The answer is 7.") == 1.0
    assert number("The answer is 7, not 8.", "The answer is 7.") == 0.0  # last number
    assert number("no number here", "7") == 0.0
    assert number("1,200 apples", "1200") == 1.0
    assert make_verifier("exact")("  Paris ", "Paris") == 1.0
    assert make_verifier("normalized")("paris!", "Paris") == 1.0
    assert make_verifier("regex:ANSWER: (\\w+)")("ANSWER: B", "ANSWER: B") == 1.0
    assert make_verifier("math")("The answer is $\\frac{1}{2}$", "0.5") == 1.0
    with pytest.raises(ConfigError, match="unknown verifier 'fuzzy'"):
        make_verifier("fuzzy")
    with pytest.raises(ConfigError, match="cannot import"):
        make_verifier("import:no_such_module_here:fn")


def test_user_verifier_and_trl_signature(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_check.py").write_text(
        "def check(completion, reference):\n    return 0.5 if reference in completion else 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = correctness_reward("import:my_check:check")
    assert reward(completions=[conv("it is blue"), conv("red")],
                  reference=["blue", "blue"], prompts=None) == [0.5, 0.0]
    # Plain-text completions (a non-chat dataset) score the same way.
    assert reward(completions=["blue sky", "x"], reference=["blue", "blue"]) == [0.5, 0.0]
    with pytest.raises(ConfigError, match="needs format_pattern"):
        format_reward("import:my_check:check")
    fmt = format_reward("import:my_check:check", "^ANSWER")
    assert fmt(completions=[conv("ANSWER 3"), conv("3")]) == [1.0, 0.0]


def test_format_and_length_terms() -> None:
    fmt = format_reward("number")
    assert fmt(completions=[conv("The answer is 4."), conv("I am not sure.")]) == [1.0, 0.0]
    length = length_reward(budget=10, max_tokens=20)
    assert length(completions=[None] * 3, completion_ids=[[0] * 5, [0] * 15, [0] * 20]) == [
        0.0, -0.5, -1.0]
    with pytest.raises(ConfigError, match="length_budget"):
        length_reward(budget=30, max_tokens=20)


def test_majority_right_is_the_vote_not_any_draft() -> None:
    ref = "2 + 2 = 4. The answer is 4."
    assert majority_right(["The answer is 4.", "It is 4", "It is 5"], ref, "number")
    assert not majority_right(["The answer is 5.", "It is 5", "It is 4"], ref, "number")
    assert not majority_right(["no idea", "none"], ref, "number")  # nobody answers: hard
    # A tie goes to the answer stated first among the most common ones.
    assert majority_right(["4", "5"], ref, "number") and not majority_right(["5", "4"], ref, "number")


def rows_with(right: int, wrong: int) -> list[AftRow]:
    rows = []
    for i in range(right + wrong):
        good = i < right
        rows.append(AftRow(id=f"r{i}", messages=[{"role": "user", "content": f"q{i}"}],
                           proposals=["The answer is 1." if good else "The answer is 2."] * 2,
                           target="The answer is 1."))
    return rows


def test_mix_keeps_the_largest_set_at_the_ratio() -> None:
    from aft_sdk.trainers.grpo import GroupMix, mix_groups

    mix = GroupMix()
    kept = mix_groups(rows_with(right=30, wrong=10), "number", 0.5, seed=0, mix=mix)
    assert (mix.easy, mix.hard, mix.easy_kept, mix.hard_kept) == (30, 10, 10, 10)
    assert len(kept) == 20 and sum(r.proposals[0].endswith("2.") for r in kept) == 10
    again = mix_groups(rows_with(right=30, wrong=10), "number", 0.5, seed=0, mix=GroupMix())
    assert [r.id for r in again] == [r.id for r in kept]  # seeded
    mix = GroupMix()
    assert len(mix_groups(rows_with(30, 10), "number", 0.25, seed=0, mix=mix)) == 40
    assert (mix.easy_kept, mix.hard_kept) == (30, 10)
    assert len(mix_groups(rows_with(30, 10), "number", None, seed=0, mix=GroupMix())) == 40
    assert len(mix_groups(rows_with(30, 10), "number", 1.0, seed=0, mix=GroupMix())) == 10
    from aft_sdk.errors import TrainingError

    with pytest.raises(TrainingError, match="0 hard"):
        mix_groups(rows_with(5, 0), "number", 0.5, seed=0, mix=GroupMix())


def test_config_errors_are_plain(tmp_path) -> None:
    from aft_sdk.trainers import AggregatorGRPOConfig

    ok = dict(model_name_or_path="m", dataset_path="d.jsonl", use_cpu=True, report_to="none")
    cfg = AggregatorGRPOConfig(**ok, format_weight=0.2)
    assert cfg.reward_weights == [1.0, 0.2] and cfg.bf16 is False
    for bad, match in [({"hard_ratio": 1.5}, "hard_ratio must be between 0 and 1"),
                       ({"verifier": "nope"}, "unknown verifier"),
                       ({"refresh_drafts_steps": -1}, "refresh_drafts_steps"),
                       ({"length_weight": 1.0, "length_budget": 999}, "length_budget"),
                       ({"per_device_train_batch_size": 3}, "num_generations"),
                       ({"export_gguf": True}, "set use_lora")]:
        with pytest.raises(ConfigError, match=match):
            AggregatorGRPOConfig(**{**ok, **bad})


def aft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aft_sdk.cli.main", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_cli_help_documents_every_option() -> None:
    from aft_sdk.cli.train import make_parser

    parser = make_parser(method="grpo")
    undocumented = [a.option_strings[0] for a in parser._actions
                    if a.option_strings and not (a.help or "").strip()]
    assert not undocumented
    r = aft("train", "--method", "grpo", "--help")
    assert r.returncode == 0
    for flag in ("--verifier", "--hard_ratio", "--refresh_drafts_steps", "--num_generations",
                 "--beta", "--format_weight", "--length_weight", "--export_gguf",
                 "--max_prompt_length", "--method sft|grpo"):
        assert flag in r.stdout, flag
    r = aft("train", "--method", "ppo", "--model_name_or_path", "m")
    assert r.returncode == 2 and "--method must be one of sft, grpo" in r.stderr
    r = aft("train", "--method", "grpo", "--config",
            str(ROOT / "recipes/configs/grpo_smollm2_lora.yaml"), "--verifer", "math")
    assert r.returncode == 2 and "did you mean 'verifier'" in r.stderr


def marked_rows(n: int, seed: int = 0) -> list[dict]:
    """Two drafts per question, one marked as checked and right: a reward that must rise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        right, wrong = rng.sample(range(10, 100), 2)
        drafts = [f"The answer is {wrong}.", f"(checked, correct) The answer is {right}."]
        rng.shuffle(drafts)
        rows.append({"id": f"m{i}", "messages": [
            {"role": "user", "content": f"Puzzle {i}: which answer is right?"}],
            "proposals": drafts, "target": f"The answer is {right}."})
    return rows


@pytest.fixture(scope="module")
def grpo_run(gguf_path, tmp_path_factory):
    from aft_sdk.trainers import AggregatorGRPOConfig, AggregatorGRPOTrainer

    tmp = tmp_path_factory.mktemp("grpo")
    data = tmp / "marked.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in marked_rows(24)))
    cfg = AggregatorGRPOConfig(
        model_name_or_path=str(gguf_path), dataset_path=str(data), output_dir=str(tmp / "out"),
        use_lora=True, lora_r=8, lora_alpha=16, learning_rate=1e-3, max_steps=10,
        per_device_train_batch_size=8, num_generations=4, max_completion_length=12,
        hard_ratio=None, beta=0.0, export_gguf=True, use_cpu=True, bf16=False,
        report_to="none", logging_steps=1, seed=0)
    trainer = AggregatorGRPOTrainer(cfg)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return {"trainer": trainer, "rewards": rewards, "saved": trainer.save_aggregator()}


@pytest.mark.slow
def test_reward_rises_on_a_marked_draft(grpo_run) -> None:
    rewards = grpo_run["rewards"]
    assert len(rewards) == 10
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.1, rewards


@pytest.mark.slow
def test_prompts_are_the_graphs_aggregation_prompt(grpo_run) -> None:
    from aft_sdk import get_template

    trainer = grpo_run["trainer"]
    row = trainer.store.rows[0]
    example = trainer.train_dataset[0]
    assert example["prompt"] == get_template("aft-v1").render(row.messages, row.proposals)
    assert example["reference"] == row.target and example["id"] == row.id


@pytest.mark.slow
def test_saved_like_an_sft_aggregator(grpo_run) -> None:
    folder = grpo_run["saved"]
    meta = json.loads((folder / "aft_sdk.json").read_text())
    assert meta["method"] == "grpo" and meta["lora"] is True
    mix = meta["grpo"]["mix"]
    assert meta["grpo"]["verifier"] == "number" and mix["easy"] + mix["hard"] == 24
    assert (mix["easy_kept"], mix["hard_kept"]) == (mix["easy"], mix["hard"])  # unset: all
    assert (folder / "model.safetensors").is_file()  # merged
    assert (folder / "adapter" / "adapter_config.json").is_file()
    assert (folder / "adapter.gguf").read_bytes()[:4] == b"GGUF"
    pytest.importorskip("llama_cpp")
    from aft_sdk import EmbeddedBackend

    from aft_sdk import SamplingConfig

    backend = EmbeddedBackend(lora_path=str(folder / "adapter.gguf"))
    out = asyncio.run(backend.generate([{"role": "user", "content": "Say hi."}],
                                       sampling=SamplingConfig(max_tokens=8, temperature=0.0)))
    assert out[0].text.strip()


@pytest.mark.slow
def test_refresh_resamples_drafts_from_the_policy(grpo_run) -> None:
    trainer = grpo_run["trainer"]
    before = [list(d) for d in trainer.store.drafts]
    old_prompt = trainer.train_dataset[0]["prompt"]
    trainer.refresh_drafts()
    after = trainer.store.drafts
    assert trainer.mix.refreshes == 1
    assert all(len(d) == 2 for d in after)
    assert sum(a != b for a, b in zip(after, before)) > len(before) // 2
    assert trainer.train_dataset[0]["prompt"] != old_prompt  # the next batch sees them
    assert not any("(checked, correct)" in d for ds in after for d in ds)


@pytest.mark.slow
def test_cli_trains_and_saves(gguf_path, tmp_path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in marked_rows(4)))
    r = aft("train", "--method", "grpo", "--config",
            str(ROOT / "recipes/configs/grpo_smollm2_lora.yaml"),
            "--model_name_or_path", str(gguf_path), "--dataset_path", str(data),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
            "--max_completion_length", "8", "--export_gguf", "false")
    assert r.returncode == 0, r.stderr[-2000:]
    # marked_rows(4): two sets vote right (the checked draft comes first), two wrong.
    assert re.search(r"draft sets: 2 easy, 2 hard; training on 2 easy \+ 2 hard", r.stderr)
    meta = json.loads((tmp_path / "out" / "aft_sdk.json").read_text())
    assert meta["method"] == "grpo" and meta["grpo"]["format_pattern"] is None
