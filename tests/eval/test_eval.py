"""Eval metrics on hand-checked cases: extraction, voting, judging, token accounting."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("math_verify", reason="needs pip install 'aft-sdk[eval]'")

from aft_sdk import ConfigError, OpenAIBackend  # noqa: E402
from aft_sdk.eval import (  # noqa: E402
    ExactMatchTask,
    MultipleChoiceTask,
    PairwiseJudgeTask,
    evaluate,
    format_table,
    majority,
    parse_method,
    parse_verdict,
)

ITEM = {"id": "a", "question": "What is 2+2?", "answer": "4"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("The answer is 4.", 1.0), ("2 + 2 = 4", 1.0), ("4.0", 1.0), ("The answer is 5.", 0.0),
     ("four", 0.0), ("", 0.0)],
)
async def test_exact_match(text: str, value: float) -> None:
    assert (await ExactMatchTask([ITEM]).score(ITEM, text)).value == value


@pytest.mark.parametrize(
    ("text", "key"),
    [("The answer is (B).", "B"), ("Answer: c", "C"), ("I think A, but really D.", "D"),
     ("no letter here", None)],
)
def test_multiple_choice_extraction(text: str, key: str | None) -> None:
    task = MultipleChoiceTask([{"id": 1, "question": "q", "choices": ["x", "y"], "answer": 1}])
    assert task.answer_key(text) == key
    assert task.gold(task.items[0]) == "B"


def test_majority_vote_picks_the_most_common_answer() -> None:
    task = ExactMatchTask([ITEM])
    texts = ["I get 5", "The answer is 4.", "no idea", "4"]
    answer, detail = majority(texts, task.answer_key)
    assert answer == "The answer is 4." and detail["votes"] == {"5": 1, "4": 2}
    assert majority(["hmm", "what"], task.answer_key)[0] == "hmm"  # nobody votes: first


@pytest.mark.parametrize(("text", "verdict"),
                         [("A", "A"), (" B.", "B"), ("Tie", "tie"), ("Response A is better", "A"),
                          ("neither", None)])
def test_judge_verdict_parsing(text: str, verdict: str | None) -> None:
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize(("replies", "score"),
                         [(["say:A", "say:B"], 1.0), (["say:A", "say:A"], 0.5),
                          (["say:B", "say:A"], 0.0), (["say:tie", "say:???"], 0.5)])
async def test_pairwise_judging_in_both_orders(fault, replies, score) -> None:
    fault.script("judge", replies)
    item = {"id": 1, "question": "Say hi", "reference": "hello"}
    task = PairwiseJudgeTask([item], OpenAIBackend("judge", base_url=fault.base_url))
    result = await task.score(item, "hi there")
    assert result.value == score
    first, second = (r["messages"][0]["content"] for r in fault.requests)
    assert "Response A:\nhi there" in first and "Response B:\nhi there" in second


def test_table_tokens_come_from_the_traces(fault, tmp_path) -> None:
    # Prompt "What is 2+2?\nEnd with: The answer is <number>." is 9 words; each scripted
    # reply "The answer is N." is 4: the fault server counts words as tokens.
    fault.script("p", ["say:The answer is 4."] + ["say:The answer is 4.", "say:The answer is 5.",
                                                  "say:The answer is 4."])
    task = ExactMatchTask([ITEM])
    p = OpenAIBackend("p", base_url=fault.base_url, native_n=False)
    methods = [parse_method("single", proposers=p), parse_method("sc:3", proposers=p)]
    table = evaluate(task, methods, tmp_path, progress=False, max_concurrency=1)
    single, sc = table
    assert single["tokens_per_item"] == 13 and single["score"] == 1.0
    assert sc["tokens_per_item"] == 39 and sc["generations_per_item"] == 3 and sc["score"] == 1.0
    runs = [json.loads(x) for x in (tmp_path / "runs" / "sc_3.jsonl").read_text().splitlines()]
    assert runs[0]["detail"]["votes"] == {"4": 2, "5": 1}
    assert (tmp_path / "quality_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    calls = fault.count()
    evaluate(task, methods, tmp_path, progress=False)  # resumable: nothing is redone
    assert fault.count() == calls


def test_aggregation_cost_includes_the_aggregator(fault, tmp_path) -> None:
    fault.script("agg", ["say:The answer is 4."])
    p = OpenAIBackend("p", base_url=fault.base_url, native_n=False)
    a = OpenAIBackend("agg", base_url=fault.base_url)
    (row,) = evaluate(ExactMatchTask([ITEM]), [parse_method("pa:2x1", proposers=p, aggregator=a)],
                      tmp_path, progress=False)
    assert row["generations_per_item"] == 3 and row["score"] == 1.0
    # Word counts as the fault server reports usage: the prompts of all 3 requests, the
    # 2 proposals' replies, and the aggregation's 4-word reply.
    prompts = sum(len(str(m["content"]).split()) for r in fault.requests for m in r["messages"])
    proposals = sum(len(fault.reply_text(r, 0).split()) for r in fault.requests
                    if r["model"] == "p")
    assert row["tokens_per_item"] == prompts + proposals + 4
    assert (tmp_path / "quality_vs_width.png").is_file()


def test_method_specs() -> None:
    assert parse_method("pa:4x2").width == 4 and parse_method("pa:4x2").depth == 2
    assert parse_method("sc:5").kind == "self_consistency"
    with pytest.raises(ConfigError, match="bad method spec 'beam:3': use single, sc:N"):
        parse_method("beam:3")
    with pytest.raises(ConfigError, match="bad method spec"):
        parse_method("sc:many")


def test_aft_eval_cli(fault, tmp_path) -> None:
    import subprocess
    import sys

    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps(ITEM) + "\n")
    fault.script("p", ["say:The answer is 4."] * 4)
    r = subprocess.run(
        [sys.executable, "-m", "aft_sdk.cli.main", "eval", "exact_match", str(data), "-o",
         str(tmp_path / "out"), "--methods", "single", "sc:3", "--no-progress",
         "--proposer", f"{fault.base_url}#p"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "single" in r.stdout and "sc:3" in r.stdout
    table = json.loads((tmp_path / "out" / "table.json").read_text())["rows"]
    assert [row["score"] for row in table] == [1.0, 1.0]


def test_errored_items_stay_out_of_the_averages_and_are_retried(fault, tmp_path) -> None:
    items = [dict(ITEM, id=str(i)) for i in range(4)]
    fault.script("p", ["say:The answer is 4.", "401", "say:The answer is 4.",
                       "say:The answer is 5."])
    p = OpenAIBackend("p", base_url=fault.base_url, max_retries=0)
    method = parse_method("single", proposers=p)
    (row,) = evaluate(ExactMatchTask(items), [method], tmp_path, progress=False,
                      max_concurrency=1, plots=False)
    # Item 1 failed: not a zero in the mean, not zero tokens, but an error count.
    assert (row["items"], row["errors"], row["score"]) == (3, 1, round(2 / 3, 4))
    assert row["tokens_per_item"] > 0
    runs = tmp_path / "runs" / "single.jsonl"
    assert sorted(r["id"] for r in map(json.loads, runs.read_text().splitlines())) == ["0", "2", "3"]
    errors = (tmp_path / "runs" / "single.jsonl.errors.jsonl").read_text()
    assert '"id": "1"' in errors and "AuthenticationError" in errors
    fault.script("p", ["say:The answer is 4."])
    (again,) = evaluate(ExactMatchTask(items), [method], tmp_path, progress=False, plots=False)
    assert (again["items"], again["errors"], again["score"]) == (4, 0, 0.75)


def test_a_method_whose_every_item_fails_still_gets_its_row(fault, tmp_path) -> None:
    items = [dict(ITEM, id=str(i)) for i in range(3)]
    fault.script("p", ["401"] * 3)
    p = OpenAIBackend("p", base_url=fault.base_url, max_retries=0)
    ok = OpenAIBackend("q", base_url=fault.base_url, max_retries=0)
    fault.script("q", ["say:The answer is 4."] * 6)
    table = evaluate(ExactMatchTask(items), [parse_method("single", proposers=p),
                                             parse_method("sc:2", proposers=ok)],
                     tmp_path, progress=False, plots=False)
    assert [(r["items"], r["errors"]) for r in table] == [(0, 3), (3, 0)]
    assert table[0]["score"] == 0.0 and table[1]["score"] == 1.0


def test_an_answer_with_a_line_separator_does_not_break_the_table(fault, tmp_path) -> None:
    # json.dumps(ensure_ascii=False) leaves U+2028 raw; str.splitlines would cut there.
    fault.script("p", ["say:The answer is 4.\u2028(checked)"])
    p = OpenAIBackend("p", base_url=fault.base_url, max_retries=0)
    (row,) = evaluate(ExactMatchTask([ITEM]), [parse_method("single", proposers=p)], tmp_path,
                      progress=False, plots=False)
    assert (row["items"], row["score"]) == (1, 1.0)
    (again,) = evaluate(ExactMatchTask([ITEM]), [parse_method("single", proposers=p)], tmp_path,
                        progress=False, plots=False)
    assert again == row and fault.count() == 1


def test_the_table_prices_each_item_or_says_unknown(fault, tmp_path) -> None:
    priced = OpenAIBackend("p", base_url=fault.base_url, price={"input": 1.0, "output": 1.0})
    local = OpenAIBackend("q", base_url=fault.base_url)  # no price known
    methods = [parse_method("single", proposers=priced), parse_method("sc:2", proposers=local)]
    table = evaluate(ExactMatchTask([ITEM]), methods, tmp_path, progress=False)
    single, sc = table
    # $1 per million tokens either way: dollars are tokens / 1e6.
    assert single["cost_per_item"] == pytest.approx(single["tokens_per_item"] / 1e6)
    assert sc["cost_per_item"] is None and "unknown" in format_table(table)
    (row,) = [json.loads(x) for x in (tmp_path / "runs" / "single.jsonl").read_text().splitlines()]
    assert row["cost_usd"] == pytest.approx(single["cost_per_item"])
    assert row["result"]["usage"]["total_tokens"] == row["tokens"]  # what aft view shows
