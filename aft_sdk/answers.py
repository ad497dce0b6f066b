"""Answer keys: what two drafts must share to count as "the same answer".

Voting, adaptive stopping and skipping an aggregation all compare drafts by a key that an
extractor takes from each draft's text (``None``: the draft names no answer, and does
not vote). Extractors are named by a spec string so a config can carry them:

- ``normalized`` (default): the whole text, lower-cased, punctuation dropped, whitespace
  collapsed. Right for short answers ("Paris." and "paris" agree); two long free-text
  drafts almost never agree under it, so open-ended questions rarely skip or stop early.
- ``exact``: the text with outer whitespace stripped.
- ``number``: the last number in the text (``12``, ``-3.5``, ``1,200``), canonical
  (``12.0`` -> ``12``).
- ``math``: the last answer ``math-verify`` parses (LaTeX, fractions, sets); needs
  ``pip install 'aft-sdk[eval]'``.
- ``regex:PATTERN``: the first match's first group (or the whole match).
- ``import:module:function``: a function of yours, ``text -> str | None``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from aft_sdk.errors import ConfigError

Extractor = Callable[[str], "str | None"]

_PUNCT = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _normalized(text: str) -> str | None:
    key = " ".join(text.lower().translate(_PUNCT).split())
    return key or None


def _exact(text: str) -> str | None:
    return text.strip() or None


def _number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        value = Decimal(found[-1].replace(",", ""))
    except InvalidOperation:
        return None
    plain = format(value.normalize(), "f")
    return plain.rstrip("0").rstrip(".") if "." in plain else plain


def _math(text: str) -> str | None:
    from math_verify import parse

    parsed = parse(text, parsing_timeout=None)
    return str(parsed[0]) if parsed else None


def _regex(pattern: str) -> Extractor:
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"extractor regex:{pattern} is not a valid regular expression: {e}") from e

    def extract(text: str) -> str | None:
        m = compiled.search(text)
        if m is None:
            return None
        return (m.group(1) if compiled.groups else m.group(0)).strip() or None

    return extract


def get_verifier(spec: str) -> Callable[[str, str], float]:
    """A verifier for best-of-N: ``import:module:function``, called as
    ``function(question, draft) -> float`` (higher is better).

    Raises:
        ConfigError: Not an ``import:`` spec, or the function cannot be imported.
    """
    if not spec.startswith("import:"):
        raise ConfigError(f"verifier {spec!r}: give import:module:function, a function "
                          "(question, draft) -> score")
    return _imported(spec[len("import:"):])


def _imported(path: str) -> Extractor:
    module, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"extractor import:{path}: cannot import {name!r} from {module!r} "
                          f"({e}); give import:package.module:function") from e
    if not callable(fn):
        raise ConfigError(f"extractor import:{path} is not a function")
    return fn


_NAMED: dict[str, Extractor] = {"normalized": _normalized, "exact": _exact, "number": _number,
                                "math": _math}


def get_extractor(spec: str) -> Extractor:
    """The extractor a spec names (see the module docstring).

    Raises:
        ConfigError: An unknown name, a bad regex, a function that cannot be imported,
            or ``math`` without ``math-verify`` installed.
    """
    if spec in _NAMED:
        if spec == "math" and importlib.util.find_spec("math_verify") is None:
            raise ConfigError("the math extractor needs math-verify: pip install 'aft-sdk[eval]'")
        return _NAMED[spec]
    if spec.startswith("regex:"):
        return _regex(spec[len("regex:"):])
    if spec.startswith("import:"):
        return _imported(spec[len("import:"):])
    raise ConfigError(f"unknown answer extractor {spec!r}: use normalized, exact, number, math, "
                      "regex:PATTERN or import:module:function")


@dataclass
class Tally:
    """The votes of a set of drafts.

    Attributes:
        keys: Each draft's key (``None``: no answer).
        votes: Key -> number of drafts.
        top: The winning key (most votes; a tie goes to the key seen first), or ``None``.
        winner: Index of the first draft with the winning key (the first draft if
            none names an answer).
        tie: Whether another key had as many votes as the winner.
        share: The winner's votes over all drafts (no-answer drafts count against it).
    """

    keys: list[str | None]
    votes: dict[str, int] = field(default_factory=dict)
    top: str | None = None
    winner: int = 0
    tie: bool = False
    share: float = 0.0

    def record(self) -> dict[str, object]:
        """What the trace keeps of the vote."""
        return {"keys": self.keys, "votes": self.votes, "top": self.top, "tie": self.tie,
                "share": round(self.share, 4),
                "no_answer": [i for i, k in enumerate(self.keys) if k is None]}


def tally(texts: Sequence[str], extractor: Extractor) -> Tally:
    """Counts the drafts' answers; an extractor that raises counts as no answer."""
    keys: list[str | None] = []
    for text in texts:
        try:
            keys.append(extractor(text))
        except Exception:  # a user's extractor failing on one draft is that draft's problem
            keys.append(None)
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return Tally(keys=keys)
    order = {k: keys.index(k) for k in votes}
    ranked = sorted(votes, key=lambda k: (-votes[k], order[k]))
    top = ranked[0]
    return Tally(keys=keys, votes=dict(votes), top=top, winner=keys.index(top),
                 tie=len(ranked) > 1 and votes[ranked[1]] == votes[top],
                 share=votes[top] / len(keys))
