"""Off-policy rows: datasets that already hold several responses per prompt.

UltraFeedback-style records become AFT rows whose target is a reference column or the
best-rated response, and whose proposals are the other responses (shuffled, seeded).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

from aft_sdk.errors import ConfigError
from aft_sdk.trainers.rows import (
    AftRow,
    RowCounter,
    RowError,
    messages_of,
    record_id,
    skip_or_raise,
    validate_row,
)


def _responses(record: dict[str, Any], field: str, text_field: str, where: str) -> list[Any]:
    value = record.get(field)
    if not isinstance(value, list) or not value:
        raise RowError(f"{where}: field '{field}' must be a non-empty list of responses")
    for i, r in enumerate(value):
        text = r.get(text_field) if isinstance(r, dict) else r
        if not isinstance(text, str) or not text.strip():
            raise RowError(f"{where}: field '{field}[{i}].{text_field}' must be non-empty text")
    return value


def off_policy_rows(
    records: Iterable[dict[str, Any]],
    *,
    prompt_field: str = "prompt",
    responses_field: str = "completions",
    text_field: str = "response",
    rating_field: str | None = "rating",
    reference_field: str | None = None,
    target: str = "best",
    num_proposals: int = 4,
    shuffle: bool = True,
    seed: int = 0,
    id_field: str = "id",
    source: str = "off-policy",
    skip_bad: bool = False,
    counter: RowCounter | None = None,
) -> Iterator[AftRow]:
    """Turns multi-response records into AFT rows.

    Args:
        records: Dicts (a ``datasets.Dataset`` iterates as such).
        prompt_field: A question string or chat messages.
        responses_field: List of responses: strings, or dicts holding ``text_field``.
        rating_field: Key of a response's score (for ``target="best"``).
        reference_field: Record key of a reference answer (for ``target="reference"``).
        target: ``best`` (best-rated response is the target, the rest are proposals) or
            ``reference`` (the reference is the target, responses are proposals).
        num_proposals: Most proposals per row.
        shuffle: Shuffle proposals (seeded per row) so the target's rank leaks nothing.
        skip_bad: Count and skip bad records instead of raising.

    Raises:
        RowError: A record misses a field (unless ``skip_bad``).
    """
    if target not in ("best", "reference"):
        raise ConfigError(f"target must be 'best' or 'reference' here, got {target!r}; "
                          "for a teacher model use abuild_teacher_targets")
    if target == "reference" and not reference_field:
        raise ConfigError("target='reference' needs reference_field=the column holding it")
    if num_proposals < 1:
        raise ConfigError(f"num_proposals must be >= 1, got {num_proposals}")
    for i, record in enumerate(records):
        where = f"record {i + 1}"
        try:
            yield _off_policy_row(
                record, where, i, prompt_field, responses_field, text_field, rating_field,
                reference_field, target, num_proposals, shuffle, seed, id_field, source,
            )
        except RowError as e:
            skip_or_raise(e, skip_bad=skip_bad, counter=counter)


def _off_policy_row(
    record: dict[str, Any], where: str, i: int, prompt_field: str, responses_field: str,
    text_field: str, rating_field: str | None, reference_field: str | None, target: str,
    num_proposals: int, shuffle: bool, seed: int, id_field: str, source: str,
) -> AftRow:
    messages = messages_of(record, prompt_field, where)
    responses = _responses(record, responses_field, text_field, where)
    texts = [r.get(text_field) if isinstance(r, dict) else r for r in responses]
    if target == "best":
        if len(texts) < 2:
            raise RowError(f"{where}: target='best' needs at least 2 responses")
        scores = []
        for j, r in enumerate(responses):
            score = r.get(rating_field) if isinstance(r, dict) and rating_field else None
            if not isinstance(score, (int, float)):
                raise RowError(f"{where}: field '{responses_field}[{j}].{rating_field}' "
                               "must be a number for target='best'")
            scores.append(score)
        best = max(range(len(texts)), key=lambda j: scores[j])
        goal, pool = texts[best], [t for j, t in enumerate(texts) if j != best]
    else:
        goal = record.get(reference_field or "")
        if not isinstance(goal, str) or not goal.strip():
            raise RowError(f"{where}: field '{reference_field}' must be non-empty text")
        pool = list(texts)
    rng = random.Random(f"{seed}:{i}")
    if shuffle:
        rng.shuffle(pool)
    row_id = record_id(record, id_field, f"{source}-{i}", where)
    return validate_row(
        {"id": row_id, "messages": messages, "proposals": pool[:num_proposals],
         "target": goal, "kind": "aft", "source": source},
        where,
    )
