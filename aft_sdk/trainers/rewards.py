"""Verifiable rewards for training an aggregator with GRPO.

A reward function here has TRL's signature (``completions`` plus the dataset's columns as
keyword lists) and scores each aggregated answer against the row's reference:

- :func:`correctness_reward`: 1.0 when the answer agrees with the reference under a
  verifier: ``exact`` (stripped text), ``normalized`` (case and punctuation ignored),
  ``number`` (last number), ``math`` (``math-verify``'s equivalence), ``regex:PATTERN``
  (the pattern's capture in both), or ``import:module:function`` (your function,
  ``(completion, reference) -> float``);
- :func:`format_reward`: 1.0 when the completion states an answer the verifier can read
  (or matches ``format_pattern``);
- :func:`length_reward`: 0 up to a token budget, then falling linearly to -1 at
  ``max_completion_length``.

The same verifier decides which draft sets are *easy* (the drafts' majority answer is
right) or *hard* (it is wrong), see :func:`majority_right`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aft_sdk.answers import get_extractor
from aft_sdk.errors import ConfigError

Verifier = Callable[[str, str], float]


def _text(completion: Any) -> str:
    """A completion as text: TRL passes conversational ones as a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    raise TypeError(f"unexpected completion {type(completion).__name__}")


def make_verifier(spec: str) -> Verifier:
    """``(completion, reference) -> score in [0, 1]`` for a verifier spec.

    Raises:
        ConfigError: Unknown spec, a bad regex, ``math`` without math-verify, or a
            function that cannot be imported.
    """
    if spec == "math":
        get_extractor("math")  # the clear error when math-verify is missing
        from math_verify import parse, verify

        def math_verifier(completion: str, reference: str) -> float:
            gold, pred = parse(reference, parsing_timeout=None), parse(completion,
                                                                        parsing_timeout=None)
            return float(bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=None))

        return math_verifier
    if spec.startswith("import:"):
        fn = get_extractor(spec)  # imports module:function, with our error on failure

        def user_verifier(completion: str, reference: str) -> float:
            return float(fn(completion, reference))  # type: ignore[call-arg]

        return user_verifier
    if spec not in ("exact", "normalized", "number") and not spec.startswith("regex:"):
        raise ConfigError(f"unknown verifier {spec!r}: use exact, normalized, number, math, "
                          "regex:PATTERN or import:module:function")
    extract = get_extractor(spec)

    def keyed(completion: str, reference: str) -> float:
        got = extract(completion)
        return float(got is not None and got == extract(reference))

    return keyed


def answer_key(spec: str) -> Callable[[str], str | None] | None:
    """The extractor behind a verifier (``None`` for a user function: no key to vote on)."""
    return None if spec.startswith("import:") else get_extractor(spec)


def correctness_reward(spec: str) -> Callable[..., list[float]]:
    """TRL reward function: the verifier on each completion against ``reference``."""
    verify = make_verifier(spec)

    def correctness(completions: list[Any], reference: list[str], **_: Any) -> list[float]:
        return [verify(_text(c), ref) for c, ref in zip(completions, reference)]

    return correctness


def format_reward(spec: str, pattern: str | None = None) -> Callable[..., list[float]]:
    """TRL reward function: 1.0 when an answer can be read from the completion.

    Raises:
        ConfigError: A user verifier without ``pattern`` (there is no extractor to ask).
    """
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"format_pattern is not a valid regular expression: {e}") from e
        check: Callable[[str], bool] = lambda text: compiled.search(text) is not None  # noqa: E731
    else:
        key = answer_key(spec)
        if key is None:
            raise ConfigError("format_reward with an import: verifier needs format_pattern "
                              "(a regular expression the answer must match)")
        check = lambda text: key(text) is not None  # noqa: E731

    def answer_format(completions: list[Any], **_: Any) -> list[float]:
        return [float(check(_text(c))) for c in completions]

    return answer_format


def length_reward(budget: int, max_tokens: int) -> Callable[..., list[float]]:
    """TRL reward function: 0 up to ``budget`` completion tokens, then down to -1 at
    ``max_tokens`` (so a weight on it trades quality for shorter answers)."""
    if not 0 <= budget < max_tokens:
        raise ConfigError(f"length_budget must be between 0 and max_completion_length "
                          f"({max_tokens}), got {budget}")

    def length(completions: list[Any], completion_ids: list[Sequence[int]], **_: Any
               ) -> list[float]:
        return [-max(0, len(ids) - budget) / (max_tokens - budget) for ids in completion_ids]

    return length


def majority_right(proposals: Sequence[str], reference: str, spec: str) -> bool:
    """Whether the drafts' majority answer is right (an *easy* group).

    With an extractor (every verifier but ``import:``), the most common answer among the
    drafts that state one is checked (ties: the first draft's answer among the most
    common); with a user function, more than half of the drafts must score >= 0.5.
    """
    verify = make_verifier(spec)
    key = answer_key(spec)
    if key is None:
        return sum(verify(p, reference) >= 0.5 for p in proposals) * 2 > len(proposals)
    keys = [(key(p), p) for p in proposals]
    counts = Counter(k for k, _ in keys if k is not None)
    if not counts:
        return False
    top = max(counts.values())
    first = next(p for k, p in keys if k is not None and counts[k] == top)
    return verify(first, reference) >= 0.5
