"""The seeded problem families (in- and out-of-distribution) and bootstrap intervals."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from aft_sdk import ConfigError
from aft_sdk.eval.synthetic import arithmetic_problems, split

ROOT = Path(__file__).parent.parent.parent


def _shape(question: str) -> str:
    """A question with names, nouns and numbers blanked: its template."""
    q = re.sub(r"\d+", "N", question)
    return re.sub(r"\b[A-Z][a-z]+('s)?\b", "X", q)


def test_in_family_is_unchanged_so_committed_results_reproduce() -> None:
    committed = [json.loads(x) for x in
                 (ROOT / "recipes/results/cpu_end_to_end/data/train.jsonl").read_text().splitlines()]
    fresh = arithmetic_problems(len(committed) + 60, seed=0)[:len(committed)]
    assert [(r["id"], r["question"], r["solution"]) for r in fresh] == \
        [(r["id"], r["question"], r["solution"]) for r in committed]


def test_ood_family_shares_no_template_with_training() -> None:
    train = arithmetic_problems(400, seed=0)
    ood = arithmetic_problems(200, seed=0, family="ood")
    assert {r["family"] for r in ood} == {"ood"} and all(r["id"].startswith("arith-ood-") for r in ood)
    things = {"apples", "books", "coins", "marbles", "pencils", "stickers", "cards", "shells"}
    train_shapes = {_shape(r["question"]) for r in train}
    for r in ood:
        assert _shape(r["question"]) not in train_shapes, r["question"]
        assert not things & set(re.findall(r"[a-z]+", r["question"])), r["question"]
    # More steps than training ever shows: training solutions have at most two operators.
    steps = lambda r: len(re.findall(r" [-+x] ", r["solution"]))  # noqa: E731
    assert max(steps(r) for r in train) == 2
    assert max(steps(r) for r in ood) >= 3


def test_every_solution_states_the_right_answer() -> None:
    for r in arithmetic_problems(100, seed=3) + arithmetic_problems(100, seed=3, family="ood"):
        last = r["solution"].split(". The answer is ")[0].split(", ")[-1]
        lhs, rhs = last.split(" = ")
        assert eval(lhs.replace("x", "*")) == int(rhs) == int(r["answer"]), r  # noqa: S307
        assert r["solution"].endswith(f"The answer is {r['answer']}.")


def test_families_are_seeded_and_distinct_per_seed() -> None:
    assert arithmetic_problems(20, seed=1, family="ood") == arithmetic_problems(20, seed=1, family="ood")
    assert arithmetic_problems(20, seed=1, family="ood") != arithmetic_problems(20, seed=2, family="ood")
    train, held = split(arithmetic_problems(10, seed=0), 3)
    assert len(train) == 7 and len(held) == 3 and held[0]["id"] == "arith-7"


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown problem family 'oodd'"):
        arithmetic_problems(3, family="oodd")


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_items() -> None:
    pytest.importorskip("scipy")
    from aft_sdk.eval import bootstrap_interval

    rng = random.Random(0)
    small = [float(rng.random() < 0.4) for _ in range(40)]
    large = [float(rng.random() < 0.4) for _ in range(1000)]
    for scores in (small, large):
        low, high = bootstrap_interval(scores)
        assert low < sum(scores) / len(scores) < high
    (sl, sh), (ll, lh) = bootstrap_interval(small), bootstrap_interval(large)
    assert lh - ll < (sh - sl) / 3  # 25x the items: about 5x narrower
    # Binomial standard error at n=1000, p~0.4 is 0.0155: the 95% interval is ~0.06 wide.
    assert 0.045 < lh - ll < 0.075
    assert bootstrap_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert bootstrap_interval(small) == bootstrap_interval(small)  # seeded
    with pytest.raises(ConfigError, match="at least one score"):
        bootstrap_interval([])


def test_paired_difference_uses_the_pairing() -> None:
    pytest.importorskip("scipy")
    from aft_sdk.eval import paired_difference

    # b is a with 10 of 100 items flipped from 0 to 1: a - b is -0.1 on every resample's
    # scale, and the paired interval excludes 0 even though the unpaired scores overlap.
    a = [1.0] * 50 + [0.0] * 50
    b = [1.0] * 60 + [0.0] * 40
    d = paired_difference(a, b)
    assert d["difference"] == pytest.approx(-0.1)
    assert d["low"] < -0.1 < d["high"] < 0
    same = paired_difference(a, a)
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0}
    with pytest.raises(ConfigError, match="same items: 2 vs 3"):
        paired_difference([1, 0], [1, 0, 1])
