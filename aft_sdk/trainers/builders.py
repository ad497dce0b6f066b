"""Builders of AFT training rows.

- :func:`off_policy_rows`: datasets that already hold several responses per prompt
  (UltraFeedback-style); the target is a reference column or the best-rated response.
- :func:`abuild_on_policy`: sample ``k`` proposals per prompt from any backend through the
  graph's propose step (usage is kept in ``meta``).
- :func:`ateacher_targets`: a stronger backend writes each target from the proposals,
  through the same prompt preset the graph uses.
- :func:`rows_from_traces`: saved graph results or ``aft batch`` output become rows.
- :func:`mix_sft`: plain (conversation -> answer) rows mixed in at a ratio.

Builders that call models write to JSONL as they go and skip ids already written, so a
crashed build resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from aft_sdk.backends.base import Backend, normalize_messages
from aft_sdk.backends.factory import make_backend
from aft_sdk.config import SamplingConfig
from aft_sdk.errors import ConfigError
from aft_sdk.jsonl import read_jsonl
from aft_sdk.prompts import get_template
from aft_sdk.runner import RunItem, run_resumable
from aft_sdk.trainers.rows import AftRow, RowCounter, RowError, validate_row

logger = logging.getLogger(__name__)


def _messages_of(record: dict[str, Any], prompt_field: str, where: str) -> list[dict[str, str]]:
    value = record.get(prompt_field)
    if value is None:
        raise RowError(f"{where}: field '{prompt_field}' is missing")
    try:
        return normalize_messages(value)
    except ConfigError as e:
        raise RowError(f"{where}: field '{prompt_field}': {e}") from e


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
                          "for a teacher model use ateacher_targets")
    if target == "reference" and not reference_field:
        raise ConfigError("target='reference' needs reference_field=the column holding it")
    if num_proposals < 1:
        raise ConfigError(f"num_proposals must be >= 1, got {num_proposals}")
    for i, record in enumerate(records):
        where = f"record {i}"
        try:
            yield _off_policy_row(
                record, where, i, prompt_field, responses_field, text_field, rating_field,
                reference_field, target, num_proposals, shuffle, seed, id_field, source,
            )
        except RowError as e:
            if not skip_bad:
                raise
            logger.warning("skipping bad record: %s", e)
            if counter is not None:
                counter.add(str(e))


def _off_policy_row(
    record: dict[str, Any], where: str, i: int, prompt_field: str, responses_field: str,
    text_field: str, rating_field: str | None, reference_field: str | None, target: str,
    num_proposals: int, shuffle: bool, seed: int, id_field: str, source: str,
) -> AftRow:
    messages = _messages_of(record, prompt_field, where)
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
    row_id = str(record.get(id_field, f"{source}-{i}"))
    return validate_row(
        {"id": row_id, "messages": messages, "proposals": pool[:num_proposals],
         "target": goal, "kind": "aft", "source": source},
        where,
    )


async def _resumable(
    items: Sequence[RunItem], out_path: str | os.PathLike[str],
    work: Callable[[RunItem], Awaitable[AftRow]], *, max_concurrency: int, desc: str,
    progress: bool,
) -> dict[str, int]:
    """Runs ``work(item) -> AftRow`` through the shared resumable runner."""
    async def row(item: RunItem) -> dict[str, Any]:
        return (await work(item)).model_dump()

    summary = await run_resumable(items, row, out_path, max_concurrency=max_concurrency,
                                  desc=desc, progress=progress)
    return {"written": summary.written, "skipped": summary.skipped,
            "failed": summary.failed + summary.bad_rows}


async def abuild_on_policy(
    prompts: Iterable[dict[str, Any]],
    proposers: Any,
    out_path: str | os.PathLike[str],
    *,
    k: int = 4,
    sampling: SamplingConfig | None = None,
    prompt_field: str = "prompt",
    reference_field: str | None = "reference",
    teacher: Any = None,
    teacher_sampling: SamplingConfig | None = None,
    preset: str = "aft-v1",
    template: str | None = None,
    id_field: str = "id",
    max_concurrency: int = 4,
    progress: bool = True,
) -> dict[str, int]:
    """Samples ``k`` proposals per prompt and writes AFT rows to ``out_path`` (JSONL).

    The target is the record's ``reference_field``, or (with ``teacher``) written by
    the teacher from the proposals. Proposals are sampled through the graph's propose
    step (``AggregateGraph(depth=0)``), so failures are tolerated per slot and usage is
    kept in each row's ``meta``. Resumable: ids already in ``out_path`` are skipped.

    Returns:
        Counts: ``written``, ``skipped`` (already there), ``failed`` (see the
        ``.errors.jsonl`` beside the output).
    """
    from aft_sdk.graphs import AggregateGraph

    if teacher is None and not reference_field:
        raise ConfigError("give reference_field (targets from the data) or teacher= a backend")
    graph = AggregateGraph(proposers, width=k, depth=0, proposer_sampling=sampling)
    teacher_backend = make_backend(teacher) if teacher is not None else None
    items = []
    for i, record in enumerate(prompts):
        where = f"prompt {i}"
        messages = _messages_of(record, prompt_field, where)
        ref = record.get(reference_field) if reference_field else None
        if teacher_backend is None and (not isinstance(ref, str) or not ref.strip()):
            raise RowError(f"{where}: field '{reference_field}' must be non-empty text")
        items.append(RunItem(str(record.get(id_field, f"on-policy-{i}")), (messages, ref)))

    async def work(item: RunItem) -> AftRow:
        messages, ref = item.payload
        result = await graph.ainvoke(messages)
        proposals = [p for p in result.proposals if p.strip()]
        empty = len(result.proposals) - len(proposals)
        if not proposals:
            raise RowError(f"row {item.id}: every proposal came back empty; nothing to "
                           "aggregate (raise max_tokens or check the proposer)")
        row = validate_row({
            "id": item.id, "messages": messages, "proposals": proposals, "target": ref or "-",
            "source": "on-policy", "meta": {
                "proposal_models": sorted({r.model for r in result.layers[0].outputs if r.ok}),
                "usage": result.usage.model_dump(),
                **({"empty_proposals_dropped": empty} if empty else {}),
            },
        }, f"row {item.id}")
        if teacher_backend is not None:
            row = await ateacher_target(row, teacher_backend, preset=preset, template=template,
                                        sampling=teacher_sampling)
        return row

    return await _resumable(items, out_path, work, max_concurrency=max_concurrency,
                            desc="on-policy rows", progress=progress)


async def ateacher_target(
    row: AftRow, teacher: Backend, *, preset: str = "aft-v1", template: str | None = None,
    sampling: SamplingConfig | None = None,
) -> AftRow:
    """The row with its target written by ``teacher`` from the row's proposals."""
    prompt = get_template(preset, template).render(row.messages, row.proposals)
    (gen,) = await teacher.generate(prompt, n=1, sampling=sampling)
    if not gen.text.strip():
        raise RowError(f"row {row.id}: the teacher {teacher.label} wrote an empty target")
    return row.model_copy(update={
        "target": gen.text, "source": f"{row.source}+teacher:{gen.model}",
        "meta": {**row.meta, "teacher_usage": {"prompt_tokens": gen.prompt_tokens,
                                               "completion_tokens": gen.completion_tokens}},
    })


async def ateacher_targets(
    rows: Iterable[AftRow], teacher: Any, out_path: str | os.PathLike[str], *,
    preset: str = "aft-v1", template: str | None = None, sampling: SamplingConfig | None = None,
    max_concurrency: int = 4, progress: bool = True,
) -> dict[str, int]:
    """Rewrites each row's target with a teacher model; resumable JSONL output."""
    backend = make_backend(teacher)
    items = [RunItem(r.id, r) for r in rows]

    async def work(item: RunItem) -> AftRow:
        return await ateacher_target(item.payload, backend, preset=preset, template=template,
                                     sampling=sampling)

    return await _resumable(items, out_path, work, max_concurrency=max_concurrency,
                            desc="teacher targets", progress=progress)


def rows_from_traces(
    results: Iterable[Any] | str | os.PathLike[str], *, references: dict[str, str] | None = None,
) -> Iterator[AftRow]:
    """Rows from graph results: proposals are layer 0, the target the final answer.

    Args:
        results: ``AggregateResult`` objects, their dicts, ``aft batch`` output rows,
            or the path of an ``aft batch`` output file.
        references: Optional ``{id: reference}``; a reference replaces the answer as target.
    """
    if isinstance(results, (str, os.PathLike)):
        results = read_jsonl(results)
    for i, item in enumerate(results):
        data = item.model_dump() if hasattr(item, "model_dump") else dict(item)
        row_id = str(data.get("id", f"trace-{i}"))
        result = data.get("result", data)
        layers = result.get("layers") or []
        if not layers:
            raise RowError(f"trace {i}: field 'layers' is missing; pass graph results")
        proposals = [r["text"] for r in layers[0]["outputs"] if r["ok"]]
        target = (references or {}).get(row_id) or result.get("answer", "")
        yield validate_row(
            {"id": row_id, "messages": result.get("messages"), "proposals": proposals,
             "target": target, "source": "trace",
             "meta": {"usage": result.get("usage", {})}},
            f"trace {i}",
        )


def sft_rows_from(rows: Iterable[AftRow]) -> Iterator[AftRow]:
    """Plain SFT rows (conversation -> target) from AFT rows."""
    for r in rows:
        yield r.model_copy(update={"id": f"{r.id}#sft", "proposals": [], "kind": "sft"})


def mix_sft(aft: Sequence[AftRow], sft: Sequence[AftRow], ratio: float, *, seed: int = 0
            ) -> list[AftRow]:
    """AFT rows plus ``round(ratio * len(aft))`` SFT rows drawn at random, shuffled.

    This is the one meaning of ``sft_ratio`` everywhere (``aft data build``, the
    trainer's ``sft_ratio``): SFT rows per AFT row, sampled with ``seed``.

    Raises:
        ConfigError: ``ratio`` is negative or asks for more SFT rows than given.
    """
    if ratio < 0:
        raise ConfigError(f"sft ratio must be >= 0, got {ratio}")
    want = round(ratio * len(aft))
    if want > len(sft):
        raise ConfigError(f"ratio {ratio} needs {want} SFT rows but only {len(sft)} were given")
    rng = random.Random(seed)
    mixed = list(aft) + rng.sample(list(sft), want)
    rng.shuffle(mixed)
    return mixed


def write_rows(rows: Iterable[AftRow], path: str | os.PathLike[str], *, progress: bool = False
               ) -> int:
    """Writes rows to JSONL (overwriting), with an optional progress bar; returns how many."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for row in tqdm(rows, desc="rows", unit="row", disable=not progress):
            f.write(row.model_dump_json() + "\n")
            n += 1
    return n


def rows_to_dataset(rows: Iterable[AftRow]) -> Any:
    """Rows as a ``datasets.Dataset`` (columns: the AftRow fields, ``meta`` as JSON text)."""
    import datasets

    return datasets.Dataset.from_generator(
        lambda: ({**r.model_dump(), "meta": json.dumps(r.meta)} for r in rows)
    )
