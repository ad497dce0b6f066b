"""Chained arithmetic: a verifiable multi-step task with a programmatic step verifier.

Each problem starts from a number and applies a few operations in order ("Start with 7.
Add 5. Multiply by 2. Subtract 9."); the answer is the last value. Problems are generated
offline from a seed, so every run asks the same ones. :func:`step_score` is a process
reward: it checks the results a step states against the chain's running values, which
makes it a step scorer for the step-level searches (``scorer:
import:aft_sdk.eval.chain:step_score``) and, on a whole answer, a verifier for
best-of-N (``vote.verifier: import:aft_sdk.eval.chain:answer_score``).

    >>> item = chain_problems(1, seed=3)[0]
    >>> values(item["question"])[-1] == int(item["answer"])
    True
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from aft_sdk.eval.tasks import Score

INSTRUCTION = ("Work it out one operation per step, each step on its own line as "
               "'<number> <operation> <number> = <result>', with a blank line between steps. "
               "End with 'Answer: <number>'.")

_OPS = (("Add", "+"), ("Subtract", "-"), ("Multiply by", "*"))
_STEP = re.compile(r"=\s*(-?\d+)")
_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*(-?\d+)", re.IGNORECASE)
_PROBLEM = re.compile(r"Start with (-?\d+)\.|(Add|Subtract|Multiply by) (\d+)\.")


def chain_problems(count: int, *, seed: int = 0, operations: int = 3) -> list[dict[str, Any]]:
    """``count`` problems of ``operations`` steps; values stay between 0 and 99 and
    multiplications are by 2 or 3, so every step is small-number arithmetic."""
    rng = random.Random(f"chain:{seed}")
    items = []
    while len(items) < count:
        value = rng.randint(1, 9)
        words = [f"Start with {value}."]
        for _ in range(operations):
            name, op = rng.choice(_OPS)
            arg = rng.randint(2, 3) if op == "*" else rng.randint(1, 9)
            value = value + arg if op == "+" else value - arg if op == "-" else value * arg
            words.append(f"{name} {arg}.")
        if 0 <= value <= 99 and all(0 <= v <= 99 for v in values(" ".join(words))):
            items.append({"id": f"chain-{seed}-{len(items)}", "question": " ".join(words),
                          "answer": str(value)})
    return items


def values(question: str) -> list[int]:
    """The running values of a problem's chain, after each operation."""
    out: list[int] = []
    value = None
    for start, name, arg in _PROBLEM.findall(question):
        if start:
            value = int(start)
            continue
        if value is None:
            break
        n = int(arg)
        value = value + n if name == "Add" else value - n if name == "Subtract" else value * n
        out.append(value)
    return out


def final_answer(text: str) -> str | None:
    """The answer a solution states (``Answer: N``; else its last number), or ``None``."""
    found = _ANSWER.findall(text)
    if found:
        return found[-1]
    numbers = re.findall(r"-?\d+", text)
    return numbers[-1] if numbers else None


def step_score(question: str, steps: Sequence[str]) -> float:
    """The process reward of the last step: 1 when every result it states (``= N``, or
    its ``Answer: N``) is the chain's next running value after those the earlier steps
    reached, 0 when one is not, 0.2 when it states none (a step that only talks makes
    no progress: below any right result, above a wrong one)."""
    chain = values(question)
    reached = 0
    for step in steps[:-1]:  # how far along the chain the path already is
        for n in map(int, _STEP.findall(step)):
            if reached < len(chain) and n == chain[reached]:
                reached += 1
    last = steps[-1] if steps else ""
    stated = [int(n) for n in _STEP.findall(last)]
    answer = _ANSWER.findall(last)
    if not stated and not answer:
        return 0.2
    for n in stated:
        if reached < len(chain) and n == chain[reached]:
            reached += 1
        elif n not in chain[:reached]:  # restating an earlier value is not an error
            return 0.0
    if answer:
        return 1.0 if chain and int(answer[-1]) == chain[-1] else 0.0
    return 1.0


def answer_score(question: str, text: str) -> float:
    """A whole answer's verifier score: the mean step score over its steps (for
    best-of-N by ``vote.verifier``)."""
    steps = [s for s in re.split(r"\n\s*\n", text) if s.strip()] or [text]
    return sum(step_score(question, steps[:k + 1]) for k in range(len(steps))) / len(steps)


class ChainTask:
    """Chained arithmetic scored by exact match of the stated answer."""

    name = "chain_arithmetic"

    def __init__(self, items: Sequence[dict[str, Any]], instruction: str = INSTRUCTION) -> None:
        self.items, self.bad = list(items), []
        self.instruction = instruction

    def prompt(self, item: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{item['question']}\n{self.instruction}"}]

    def answer_key(self, text: str) -> str | None:
        return final_answer(text)

    async def score(self, item: dict[str, Any], text: str) -> Score:
        key = final_answer(text)
        return Score(float(key == str(item["answer"])), key, {"extracted": key})
