"""AFT row builders on our small multi-response dataset and against real servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aft_sdk import AggregateGraph, ConfigError, OpenAIBackend, get_template, run_batch
from aft_sdk.trainers import (
    AftRow,
    RowCounter,
    RowError,
    abuild_on_policy,
    abuild_teacher_targets,
    load_records,
    mix_sft,
    off_policy_rows,
    read_jsonl,
    trace_rows,
    sft_rows,
    validate_rows,
)
from aft_sdk.trainers.formatting import row_prompt

DATA = Path(__file__).parent.parent / "data" / "multi_response.jsonl"


def records() -> list[dict]:
    return list(read_jsonl(DATA))


def test_off_policy_best_rated_becomes_the_target() -> None:
    rows = list(off_policy_rows(records(), target="best", num_proposals=2, seed=1))
    assert len(rows) == 12
    first = records()[0]
    scores = {c["response"]: c["rating"] for c in first["completions"]}
    assert scores[rows[0].target] == max(scores.values())
    assert rows[0].target not in rows[0].proposals and len(rows[0].proposals) == 2
    assert rows[0].messages == [{"role": "user", "content": "What is 7 plus 5?"}]
    again = list(off_policy_rows(records(), target="best", num_proposals=2, seed=1))
    assert [r.proposals for r in again] == [r.proposals for r in rows]  # seeded shuffle


def test_off_policy_reference_target_keeps_all_responses() -> None:
    rows = list(off_policy_rows(records(), target="reference", reference_field="reference",
                                num_proposals=10, shuffle=False))
    assert rows[1].target == "The capital of Italy is Rome."
    assert rows[1].proposals == [c["response"] for c in records()[1]["completions"]]


def test_bad_records_name_the_row_and_field_or_are_counted() -> None:
    data = records()[:3]
    data[1] = {**data[1], "completions": []}
    with pytest.raises(RowError, match=r"record 2: field 'completions' must be a non-empty"):
        list(off_policy_rows(data, target="best"))
    data[1] = {**records()[1], "completions": [{"response": "x", "rating": "high"},
                                               {"response": "y", "rating": 2}]}
    with pytest.raises(RowError, match=r"completions\[0\]\.rating' must be a number"):
        list(off_policy_rows(data, target="best"))
    counter = RowCounter()
    rows = list(off_policy_rows(data, target="best", skip_bad=True, counter=counter))
    assert len(rows) == 2 and counter.skipped == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"id": "a", "messages": [], "proposals": ["p"], "target": "t"}, "field 'messages'"),
        ({"id": "a", "messages": [{"role": "user", "content": "q"}], "proposals": [],
          "target": "t"}, "field 'proposals': an aft row needs at least one"),
        ({"id": "a", "messages": [{"role": "user", "content": "q"}], "proposals": [3],
          "target": "t"}, "field 'proposals.0'"),
        ({"id": "a", "messages": [{"role": "user", "content": "q"}], "proposals": ["p"]},
         "field 'target': Field required"),
    ],
)
def test_row_validation_errors(raw: dict, message: str) -> None:
    with pytest.raises(RowError, match=message):
        list(validate_rows([raw], source="rows.jsonl"))


@pytest.mark.needs("train")
def test_local_loading_and_missing_files(tmp_path: Path) -> None:
    import datasets

    records = load_records(DATA)  # JSONL: our reader, records as dicts
    assert len(records) == 12 and records[0]["id"] == "fact-0"
    datasets.Dataset.from_list(records).to_parquet(str(tmp_path / "d.parquet"))
    assert len(load_records(tmp_path / "d.parquet")) == 12
    bad = tmp_path / "bad.jsonl"
    bad.write_text(DATA.read_text() + "{oops\n")
    with pytest.raises(ConfigError, match="bad.jsonl line 13: not valid JSON"):
        load_records(bad)
    assert len(load_records(bad, skip_bad=True)) == 12
    with pytest.raises(ConfigError, match="dataset file not found"):
        load_records(tmp_path / "missing.jsonl")


@pytest.mark.needs("train")
def test_rows_stream_into_a_dataset() -> None:
    from aft_sdk.trainers import rows_to_dataset

    rows = list(off_policy_rows(records(), target="best", num_proposals=2))
    ds = rows_to_dataset(rows)
    assert len(ds) == 12 and ds[3]["proposals"] == rows[3].proposals
    assert AftRow.model_validate({**ds[0], "meta": json.loads(ds[0]["meta"])}) == rows[0]


def test_sft_mixing_ratio() -> None:
    aft = list(off_policy_rows(records(), target="best"))
    sft = list(sft_rows(aft))
    assert all(r.kind == "sft" and not r.proposals for r in sft)
    mixed = mix_sft(aft, sft, 0.5, seed=0)
    assert len(mixed) == 18 and sum(r.kind == "sft" for r in mixed) == 6
    with pytest.raises(ConfigError, match="needs 24 SFT rows"):
        mix_sft(aft, sft, 2.0)


async def test_training_prompt_bytes_equal_what_the_graph_sends(fault, tmp_path) -> None:
    """A row built from a graph trace renders exactly the aggregator's request."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"id": "r1", "question": "What is 2+2?"}) + "\n")
    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#agg", width=3)
    run_batch(graph, src, out, progress=False)
    (row,) = trace_rows(out)
    sent = next(r for r in fault.requests if r["model"] == "agg")["messages"]
    assert row_prompt(row, get_template("aft-v1")) == sent
    assert row.target.startswith("answer 0 from agg") and len(row.proposals) == 3


async def test_teacher_writes_targets_from_the_preset_prompt(fault, tmp_path) -> None:
    rows = list(off_policy_rows(records()[:3], target="best", num_proposals=2))
    teacher = OpenAIBackend("teacher", base_url=fault.base_url)
    stats = await abuild_teacher_targets(rows, teacher, tmp_path / "t.jsonl", progress=False)
    assert stats == {"written": 3, "skipped": 0, "failed": 0}
    out = [AftRow.model_validate(r) for r in read_jsonl(tmp_path / "t.jsonl")]
    assert all(r.target.startswith("answer 0 from teacher") for r in out)
    assert all(r.source == "off-policy+teacher:teacher" for r in out)
    sent = [r["messages"] for r in fault.requests]
    expected = [get_template("aft-v1").render(r.messages, r.proposals) for r in rows]
    assert sorted(map(json.dumps, sent)) == sorted(map(json.dumps, expected))
    again = await abuild_teacher_targets(rows, teacher, tmp_path / "t.jsonl", progress=False)
    assert again["skipped"] == 3 and fault.count() == 3  # resumable: nothing redone


@pytest.mark.slow
async def test_on_policy_rows_from_the_llama_server(llama_server, tmp_path) -> None:
    proposer = OpenAIBackend(llama_server.model, base_url=llama_server.base_url)
    prompts = [{"id": r["id"], "prompt": r["prompt"], "reference": r["reference"]}
               for r in records()[:3]]
    out = tmp_path / "on.jsonl"
    from aft_sdk import SamplingConfig

    stats = await abuild_on_policy(prompts, proposer, out, k=3, progress=False,
                                   sampling=SamplingConfig(max_tokens=24, seed=3))
    assert stats["written"] == 3
    rows = [AftRow.model_validate(r) for r in read_jsonl(out)]
    assert [r.id for r in sorted(rows, key=lambda r: r.id)] == ["fact-0", "fact-1", "fact-2"]
    for r in rows:
        assert len(r.proposals) == 3 and all(p.strip() for p in r.proposals)
        assert r.meta["usage"]["generations"] == 3 and r.meta["usage"]["completion_tokens"] > 0
        assert r.target == next(p["reference"] for p in prompts if p["id"] == r.id)
    again = await abuild_on_policy(prompts, proposer, out, k=3, progress=False)
    assert again == {"written": 0, "skipped": 3, "failed": 0}
