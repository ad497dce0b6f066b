"""Seeded tasks with verifiable answers, for CPU-sized experiments and tests.

:func:`arithmetic_problems` writes short word problems (one or two steps of addition,
subtraction or multiplication with small numbers) with their worked solution, so a
build step can use the solution as the AFT target and an evaluation can check answers.
"""

from __future__ import annotations

import random
from typing import Any

_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
_THINGS = ["apples", "books", "coins", "marbles", "pencils", "stickers", "cards", "shells"]


def _one(rng: random.Random, index: int) -> dict[str, Any]:
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    kind = rng.choice(["add", "sub", "mul", "add_sub"])
    if kind == "add":
        q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        answer, work = a + b, f"{a} + {b} = {a + b}"
    elif kind == "sub":
        a = a + b  # keep it positive
        q = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?"
        answer, work = a - b, f"{a} - {b} = {a - b}"
    elif kind == "mul":
        q = f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} is that in total?"
        answer, work = a * b, f"{a} x {b} = {a * b}"
    else:
        c = rng.randint(1, a + b - 1)
        q = (f"{name} has {a} {thing}, finds {b} more, then loses {c}. "
             f"How many {thing} does {name} have?")
        answer, work = a + b - c, f"{a} + {b} - {c} = {a + b - c}"
    return {"id": f"arith-{index}", "question": q, "answer": str(answer),
            "solution": f"{work}. The answer is {answer}."}


def arithmetic_problems(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct word problems with ``id``, ``question``, ``answer``, ``solution``."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        item = _one(rng, len(out))
        if item["question"] not in seen:
            seen.add(item["question"])
            out.append(item)
    return out


def split(items: list[dict[str, Any]], held_out: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out): the last ``held_out`` items are held out."""
    return items[:-held_out], items[-held_out:]
