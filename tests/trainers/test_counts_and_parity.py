"""Training and inference trim alike; every skip and cut in data building is counted."""

from __future__ import annotations

import json
import logging

import pytest

from aft_sdk import AggregateGraph, OpenAIBackend, get_template
from aft_sdk.budget import TRIM_MARKER
from aft_sdk.trainers import AftRow, abuild_on_policy, mix_sft, off_policy_rows, sft_rows
from aft_sdk.trainers.formatting import FitReport, fit_row, target_reserve, to_examples


@pytest.fixture(scope="module")
def embedded(gguf_path):
    from aft_sdk import EmbeddedBackend

    return EmbeddedBackend(n_ctx=400)


LONG_ROW = AftRow(
    id="long", messages=[{"role": "user", "content": "Summarise the drafts."}],
    proposals=["alpha beta gamma " * 120, "short draft", "delta epsilon " * 150],
    target="The final answer is short.",
)


@pytest.mark.slow
def test_an_overlong_row_renders_the_same_bytes_in_training_and_inference(embedded) -> None:
    template = get_template("aft-v1")
    count = embedded.count_tokens
    train_prompt, note = fit_row(LONG_ROW, template, count, max_length=400)
    assert note["trimmed"] and set(note["trimmed"]) == {0, 2}  # the short draft is kept

    # The graph, on a backend with the same tokenizer and a 400-token window, reserving
    # for its answer exactly what the target takes.
    graph = AggregateGraph(embedded, embedded, width=3, depth=1, aggregator_sampling={
        "max_tokens": target_reserve(LONG_ROW.target, count)})
    inputs = [{"text": t, "model": ""} for t in LONG_ROW.proposals]
    infer_prompt, info = graph.plan.aggregation_prompt(LONG_ROW.messages, inputs, 1, 0)
    assert json.dumps(infer_prompt) == json.dumps(train_prompt)  # byte for byte
    assert info["trimmed"] == {"0": note["trimmed"][0], "2": note["trimmed"][2]}
    system = train_prompt[0]["content"]
    assert system.count(TRIM_MARKER) == 2 and "2. short draft\n" in system


def test_every_cut_is_counted_and_reported(caplog) -> None:
    words = str.split  # a tokenizer-free counter: one token per word

    class WordTokenizer:
        def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
            return words(text)

    sft = AftRow(id="s", messages=[{"role": "user", "content": "q"}], target="word " * 500,
                 kind="sft")
    report = FitReport()
    with caplog.at_level(logging.WARNING):
        to_examples([LONG_ROW, sft], get_template("aft-v1"), WordTokenizer(), 300, report)
    assert (report.proposals_trimmed, report.targets_cut) == (1, 1)
    assert "1 of 2 rows had proposals trimmed" in caplog.text
    assert "1 of 2 rows have a target longer than max_length" in caplog.text
    assert "e.g. ['s']" in caplog.text


def test_skipped_records_are_logged_even_without_a_counter(caplog) -> None:
    data = [{"id": "ok", "prompt": "q", "completions": [{"response": "a", "rating": 1},
                                                        {"response": "b", "rating": 2}]},
            {"id": "bad", "prompt": "q", "completions": []}]
    with caplog.at_level(logging.WARNING):
        rows = list(off_policy_rows(data, target="best", skip_bad=True))
    assert [r.id for r in rows] == ["ok"]
    assert "skipping bad row: record 2" in caplog.text


def test_sft_ratio_has_one_meaning_in_the_trainer_and_the_builder(tmp_path) -> None:
    pytest.importorskip("trl", reason="needs pip install 'aft-sdk[train]'")
    from aft_sdk.trainers.config import AggregatorConfig
    from aft_sdk.trainers.rows import RowCounter
    from aft_sdk.trainers.trainer import load_rows

    aft = [AftRow(id=f"r{i}", messages=[{"role": "user", "content": f"q{i}"}],
                  proposals=["a", "b"], target=f"t{i}") for i in range(10)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in aft))
    args = AggregatorConfig(model_name_or_path="embedded", dataset_path=str(path),
                            output_dir=str(tmp_path / "o"), sft_ratio=0.3, seed=5,
                            report_to=[], use_cpu=True)
    rows = load_rows(str(path), args, RowCounter())
    expected = mix_sft(aft, list(sft_rows(aft)), 0.3, seed=5)
    assert [r.id for r in rows] == [r.id for r in expected]
    assert sum(r.kind == "sft" for r in rows) == 3
    with pytest.raises(ValueError, match="sft_ratio must be between 0 and 1"):
        AggregatorConfig(model_name_or_path="x", dataset_path=str(path), sft_ratio=1.5,
                         output_dir=str(tmp_path / "o"), use_cpu=True)


async def test_on_policy_rows_never_carry_empty_proposals(fault, tmp_path) -> None:
    fault.script("p", ["say:", "say:a real draft", "say:", "say:"])
    prompts = [{"id": "one", "prompt": "q1", "reference": "r1"},
               {"id": "two", "prompt": "q2", "reference": "r2"}]
    out = tmp_path / "on.jsonl"
    proposer = OpenAIBackend("p", base_url=fault.base_url, native_n=False)
    stats = await abuild_on_policy(prompts, proposer, out, k=2, max_concurrency=1,
                                   progress=False)
    assert stats == {"written": 1, "skipped": 0, "failed": 1}
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["proposals"] == ["a real draft"] and row["meta"]["empty_proposals_dropped"] == 1
    errors = (tmp_path / "on.jsonl.errors.jsonl").read_text()
    assert "every proposal came back empty" in errors
