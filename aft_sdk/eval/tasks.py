"""Evaluation tasks: how to ask each item, and how to score an answer.

- :class:`ExactMatchTask`: math-style answers, extracted and compared with ``math-verify``.
- :class:`MultipleChoiceTask`: lettered options; the answer's letter is extracted.
- :class:`KeywordTask`: open questions scored by expected words (any of them, whole words).
- :class:`PairwiseJudgeTask`: AlpacaEval-style win rate against reference outputs, judged
  by any backend in both orders to cancel position bias.

Items are dicts; every task needs ``id`` and ``question``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aft_sdk.backends.base import Backend
from aft_sdk.config import SamplingConfig
from aft_sdk.errors import ConfigError


@dataclass
class Score:
    """The score of one answer: ``value`` in [0, 1] and the key used for voting."""

    value: float
    key: str | None
    detail: dict[str, Any]


def _require(items: Sequence[dict[str, Any]], fields: Sequence[str], task: str
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The usable items, and bad-row records for items whose gold field (the last of
    ``fields``) is empty or null: scoring against nothing is not a result."""
    if not items:
        raise ConfigError(f"{task}: no items to evaluate")
    gold = fields[-1]
    good, bad = [], []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ConfigError(f"{task}: item {i} is not an object")
        for f in fields:
            if f not in item:
                raise ConfigError(f"{task}: item {i} has no field '{f}'")
        value = item[gold]
        if value is None or (isinstance(value, (str, list)) and not str(value).strip()
                             ) or value == []:
            bad.append({"line": i, "id": str(item["id"]),
                        "error": f"item {i}: '{gold}' is empty; it cannot be scored"})
        else:
            good.append(item)
    if not good:
        raise ConfigError(f"{task}: every item's '{gold}' is empty; nothing can be scored")
    return good, bad


class ExactMatchTask:
    """Questions with a single verifiable answer (numbers, expressions).

    Args:
        items: Dicts with ``id``, ``question``, ``answer``.
        instruction: Appended to each question to ask for a clear final answer.
    """

    name = "exact_match"

    def __init__(self, items: Sequence[dict[str, Any]],
                 instruction: str = "End with: The answer is <number>.") -> None:
        self.items, self.bad = _require(items, ("id", "question", "answer"), self.name)
        self.instruction = instruction

    def prompt(self, item: dict[str, Any]) -> list[dict[str, str]]:
        text = f"{item['question']}\n{self.instruction}" if self.instruction else item["question"]
        return [{"role": "user", "content": text}]

    def answer_key(self, text: str) -> str | None:
        """Canonical extracted answer (for majority voting), or ``None``."""
        parsed = _parse(text)
        return str(parsed[0]) if parsed else None

    async def score(self, item: dict[str, Any], text: str) -> Score:
        from math_verify import verify

        gold, pred = _parse(str(item["answer"])), _parse(text)
        # math-verify's timeouts use signal.alarm, which only works on the main thread;
        # our sync API runs coroutines on a worker thread, so they are turned off.
        ok = bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
        key = str(pred[0]) if pred else None
        return Score(float(ok), key, {"extracted": key})


def _parse(text: str) -> list[Any]:
    from math_verify import parse

    return parse(text, parsing_timeout=None)


_LETTER = re.compile(r"\b([A-J])\b")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*\(?([A-J])\b", re.IGNORECASE)


class MultipleChoiceTask:
    """Multiple choice with lettered options.

    Args:
        items: Dicts with ``id``, ``question``, ``choices`` (list of text) and ``answer``
            (a letter, or the 0-based index of the right choice).
    """

    name = "multiple_choice"

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items, self.bad = _require(items, ("id", "question", "choices", "answer"), self.name)

    def prompt(self, item: dict[str, Any]) -> list[dict[str, str]]:
        options = "\n".join(f"{string.ascii_uppercase[i]}. {c}"
                            for i, c in enumerate(item["choices"]))
        return [{"role": "user", "content": f"{item['question']}\n{options}\n"
                 "Answer with the letter of the correct option, as: The answer is X."}]

    @staticmethod
    def gold(item: dict[str, Any]) -> str:
        ans = item["answer"]
        return string.ascii_uppercase[ans] if isinstance(ans, int) else str(ans).strip().upper()

    def answer_key(self, text: str) -> str | None:
        """The chosen letter: an explicit "answer is X" wins, else the last lone letter."""
        m = _ANSWER_IS.search(text)
        if m:
            return m.group(1).upper()
        letters = _LETTER.findall(text)
        return letters[-1] if letters else None

    async def score(self, item: dict[str, Any], text: str) -> Score:
        key = self.answer_key(text)
        return Score(float(key == self.gold(item)), key, {"extracted": key})


class KeywordTask:
    """Open questions whose good answers must contain one of a few expected words.

    An answer scores 1 when any of the item's ``keywords`` appears in it as a whole word
    or phrase (case-insensitive), else 0; ``key`` (for voting) is the first keyword found.
    An item with ``first_of`` (say ``["yes", "no"]``) is decided by whichever of those
    words comes first in the answer: it scores 1 when that word is one of its keywords
    ("No, because ... yes" answers no).

    A keyword anywhere in a long answer rewards length (a rambling answer names more
    words); ``scope`` scores only what a reader takes as the answer: ``"first-sentence"``
    or ``"first-words:N"`` (see :func:`answer_scope`). Yes/no items are decided by their
    first yes or no either way.

    Args:
        items: Dicts with ``id``, ``question`` and ``keywords`` (a non-empty list), and
            optionally ``first_of`` (a list of words that includes the keywords).
        scope: ``"answer"`` (the whole text, the default), ``"first-sentence"`` or
            ``"first-words:N"``.
    """

    name = "keywords"

    def __init__(self, items: Sequence[dict[str, Any]], scope: str = "answer") -> None:
        answer_scope("", scope)  # a bad scope is refused before anything runs
        self.scope = scope
        self.items, self.bad = _require(items, ("id", "question", "keywords"), self.name)
        for i, item in enumerate(self.items, start=1):
            if not isinstance(item["keywords"], list) or not all(
                    isinstance(k, str) and k.strip() for k in item["keywords"]):
                raise ConfigError(f"{self.name}: item {item['id']} needs 'keywords' as a "
                                  "non-empty list of words")
            first = item.get("first_of")
            if first is not None and (
                    not isinstance(first, list)
                    or not all(isinstance(w, str) and w.strip() for w in first)
                    or not {k.lower() for k in item["keywords"]} <= {w.lower() for w in first}):
                raise ConfigError(f"{self.name}: item {item['id']}: 'first_of' must be a list "
                                  f"of words that includes every keyword, got {first!r}")
        self._patterns = {str(it["id"]): [(k, _word(k)) for k in it["keywords"]]
                          for it in self.items}
        self._first = {str(it["id"]): _word("|".join(map(re.escape, it["first_of"])), escaped=True)
                       for it in self.items if it.get("first_of")}

    def prompt(self, item: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": "user", "content": item["question"]}]

    def _found(self, item: dict[str, Any], text: str) -> str | None:
        first = self._first.get(str(item["id"]))
        if first is not None:
            m = first.search(text)
            hit = m.group(0).lower() if m else None
            return hit if hit in {k.lower() for k in item["keywords"]} else None
        for keyword, pattern in self._patterns.get(str(item["id"]), []):
            if pattern.search(text):
                return keyword.lower()
        return None

    def answer_key(self, text: str) -> str | None:
        return None  # keywords belong to items; majority voting needs the item

    async def score(self, item: dict[str, Any], text: str) -> Score:
        found = self._found(item, answer_scope(text, self.scope))
        return Score(float(found is not None), found, {"found": found})


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<!:)\n\s*\n")
_BULLET = re.compile(r"^[ \t]*[-*+][ \t]+", re.MULTILINE)
_NUMBERED = re.compile(r"^[ \t]*\d+[.)][ \t]+", re.MULTILINE)


def answer_scope(text: str, scope: str) -> str:
    """The part of ``text`` that ``scope`` scores.

    ``"answer"``: all of it. ``"first-sentence"``: up to the first sentence end (``.``,
    ``!`` or ``?`` before a space, or a blank line; decimals such as ``3.5`` do not end
    one; a blank line after a colon does not either), after Markdown marks and list
    markers are taken out (so a how-to's first step counts with its ``Steps:`` heading;
    a leading number is a marker only in a list of two or more numbered lines, so
    ``"15. That is the sum."`` keeps its 15). ``"first-words:N"``: the first N whitespace-separated words.
    """
    if scope == "answer":
        return text
    if scope == "first-sentence":
        body = _BULLET.sub("", re.sub(r"[*_`#>]+", "", text))
        if len(_NUMBERED.findall(body)) >= 2:
            body = _NUMBERED.sub("", body)
        body = body.strip()
        return _SENTENCE_END.split(body, maxsplit=1)[0]
    words = scope.removeprefix("first-words:")
    if words != scope and words.isdigit() and int(words) > 0:
        return " ".join(text.split()[:int(words)])
    raise ConfigError(f"keyword scope must be 'answer', 'first-sentence' or 'first-words:N' "
                      f"(N a positive whole number), got {scope!r}")


def _word(text: str, *, escaped: bool = False) -> re.Pattern[str]:
    """Whole-word (or phrase) search, case-insensitive."""
    body = text if escaped else re.escape(text)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


JUDGE_PROMPT = (
    "Compare two responses to the instruction below and decide which one a careful "
    "reader would prefer: more helpful, correct and clear.\n\n"
    "Instruction:\n{question}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
    "Reply with exactly one of: A, B, tie."
)


def parse_verdict(text: str) -> str | None:
    """``A``, ``B`` or ``tie`` from a judge's reply, or ``None`` if it gives none."""
    t = text.strip()
    if re.search(r"\btie\b", t, re.IGNORECASE):
        return "tie"
    m = re.search(r"\b([AB])\b", t)
    return m.group(1) if m else None


class PairwiseJudgeTask:
    """Win rate against reference outputs, judged in both orders (AlpacaEval style).

    Each answer is judged twice, as A and as B; a win counts 1, a tie or a split
    decision 0.5, unparseable verdicts count as ties and are reported.

    Args:
        items: Dicts with ``id``, ``question`` and ``reference`` (the baseline output).
        judge: The judging backend.
    """

    name = "pairwise_judge"

    def __init__(self, items: Sequence[dict[str, Any]], judge: Backend,
                 sampling: SamplingConfig | None = None) -> None:
        self.items, self.bad = _require(items, ("id", "question", "reference"), self.name)
        self.judge = judge
        self.sampling = sampling or SamplingConfig(temperature=0.0, max_tokens=8)

    def prompt(self, item: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": "user", "content": item["question"]}]

    def answer_key(self, text: str) -> str | None:
        return None  # free-form answers have no vote key

    async def _verdict(self, question: str, a: str, b: str) -> tuple[str | None, int]:
        prompt = JUDGE_PROMPT.replace("{question}", question).replace("{a}", a).replace("{b}", b)
        (gen,) = await self.judge.generate([{"role": "user", "content": prompt}],
                                           sampling=self.sampling)
        return parse_verdict(gen.text), gen.prompt_tokens + gen.completion_tokens

    async def score(self, item: dict[str, Any], text: str) -> Score:
        first, t1 = await self._verdict(item["question"], text, item["reference"])
        second, t2 = await self._verdict(item["question"], item["reference"], text)
        points = {"A": 1.0, "tie": 0.5, None: 0.5, "B": 0.0}[first]
        points += {"B": 1.0, "tie": 0.5, None: 0.5, "A": 0.0}[second]
        return Score(points / 2, None, {"verdicts": [first, second], "judge_tokens": t1 + t2,
                                        "length": len(text)})
