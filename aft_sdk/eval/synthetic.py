"""Seeded tasks with verifiable answers, for CPU-sized experiments and tests.

:func:`arithmetic_problems` writes short word problems with their worked solution, so a
build step can use the solution as the AFT target and an evaluation can check answers.

Two families share the operations (addition, subtraction, multiplication of small
numbers) but nothing else:

- ``"in"`` (the default, used for training): four templates about people holding
  things, one or two steps.
- ``"ood"`` (held out, for out-of-distribution tests): five other templates (prices,
  rates over days, boxes on shelves, a bus, a three-step ledger), other nouns, and up to
  three steps. No ``"ood"`` question can equal an ``"in"`` question.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from aft_sdk.errors import ConfigError

_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
_THINGS = ["apples", "books", "coins", "marbles", "pencils", "stickers", "cards", "shells"]
_OOD_NAMES = ["Mira", "Noor", "Otto", "Pia", "Quinn", "Rosa", "Sami", "Tomas", "Uma", "Vik"]
_OOD_ITEMS = ["notebook", "ticket", "lamp", "mug", "kite", "scarf"]

Problem = tuple[str, int, str]  # question, answer, worked steps


def _in_family(rng: random.Random) -> Problem:
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    kind = rng.choice(["add", "sub", "mul", "add_sub"])
    if kind == "add":
        q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        return q, a + b, f"{a} + {b} = {a + b}"
    if kind == "sub":
        a = a + b  # keep it positive
        q = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?"
        return q, a - b, f"{a} - {b} = {a - b}"
    if kind == "mul":
        q = f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} is that in total?"
        return q, a * b, f"{a} x {b} = {a * b}"
    c = rng.randint(1, a + b - 1)
    q = (f"{name} has {a} {thing}, finds {b} more, then loses {c}. "
         f"How many {thing} does {name} have?")
    return q, a + b - c, f"{a} + {b} - {c} = {a + b - c}"


def _ood_family(rng: random.Random) -> Problem:
    name, item = rng.choice(_OOD_NAMES), rng.choice(_OOD_ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    kind = rng.choice(["price", "rate", "shelves", "bus", "ledger"])
    if kind == "price":
        q = f"One {item} costs {a} dollars. {name} buys {b} of them. How many dollars does {name} pay?"
        return q, a * b, f"{b} x {a} = {a * b}"
    if kind == "rate":
        q = f"{name} walks {a} kilometres every day for {b} days. How far does {name} walk in all?"
        return q, a * b, f"{a} x {b} = {a * b}"
    if kind == "shelves":
        extra = rng.randint(1, 9)
        q = (f"A shop has {a} shelves with {b} boxes on each shelf, and {extra} more boxes "
             f"on the floor. How many boxes are there?")
        return q, a * b + extra, f"{a} x {b} = {a * b}, {a * b} + {extra} = {a * b + extra}"
    if kind == "bus":
        start = a + b
        q = (f"A bus leaves with {start} passengers. At the first stop {b} get off. "
             f"How many passengers are still on the bus?")
        return q, start - b, f"{start} - {b} = {start - b}"
    c, d = rng.randint(2, 9), rng.randint(1, a + b)
    q = (f"{name}'s jar holds {a} dollars. {name} adds {b} dollars, spends {d}, then adds "
         f"{c} more. How many dollars are in the jar?")
    total = a + b - d + c
    return q, total, f"{a} + {b} = {a + b}, {a + b} - {d} = {a + b - d}, {a + b - d} + {c} = {total}"


FAMILIES: dict[str, Callable[[random.Random], Problem]] = {"in": _in_family, "ood": _ood_family}


def arithmetic_problems(n: int, *, seed: int = 0, family: str = "in") -> list[dict[str, Any]]:
    """``n`` distinct word problems with ``id``, ``question``, ``answer``, ``solution``, ``family``.

    Args:
        n: How many problems.
        seed: Random seed; the same ``(n, seed, family)`` always gives the same problems.
        family: ``"in"`` (training templates) or ``"ood"`` (held-out templates).

    Raises:
        ConfigError: Unknown family.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown problem family {family!r}: use one of {sorted(FAMILIES)}")
    make = FAMILIES[family]
    prefix = "arith" if family == "in" else f"arith-{family}"
    rng = random.Random(f"{family}:{seed}" if family != "in" else seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(out) < n:
        question, answer, work = make(rng)
        if question not in seen:
            seen.add(question)
            out.append({"id": f"{prefix}-{len(out)}", "question": question,
                        "answer": str(answer), "solution": f"{work}. The answer is {answer}.",
                        "family": family})
    return out


def split(items: list[dict[str, Any]], held_out: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out): the last ``held_out`` items are held out."""
    return items[:-held_out], items[-held_out:]
