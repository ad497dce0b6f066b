"""On-policy rows: proposals sampled from a model through the graph's propose step.

Written to JSONL as they finish through the shared resumable runner, so a crashed build
continues where it stopped; failures go to the error side file and are retried.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from aft_sdk.backends.factory import BackendLike, make_backend
from aft_sdk.config import PromptConfig, SamplingConfig
from aft_sdk.errors import ConfigError
from aft_sdk.runner import DEFAULT_CONCURRENCY, RunItem
from aft_sdk.trainers.rows import (
    AftRow,
    RowCounter,
    RowError,
    messages_of,
    record_id,
    resumable_rows,
    skip_or_raise,
    validate_row,
)
from aft_sdk.trainers.teacher import awrite_target, prompt_of


async def abuild_on_policy(
    prompts: Iterable[dict[str, Any]],
    proposers: BackendLike | Sequence[BackendLike] | None,
    out_path: str | os.PathLike[str],
    *,
    k: int = 4,
    sampling: SamplingConfig | None = None,
    prompt_field: str = "prompt",
    reference_field: str | None = "reference",
    teacher: BackendLike | None = None,
    teacher_sampling: SamplingConfig | None = None,
    prompt: PromptConfig | None = None,
    preset: str | None = None,
    template: str | None = None,
    id_field: str = "id",
    skip_bad: bool = False,
    counter: RowCounter | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    max_concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool = True,
    executor: Any = "local",
) -> dict[str, int]:
    """Samples ``k`` proposals per prompt and writes AFT rows to ``out_path`` (JSONL).

    The target is the record's ``reference_field``, or (with ``teacher``) written by
    the teacher from the proposals. Proposals are sampled through the graph's propose
    step (``AggregateGraph(depth=0)``), so failures are tolerated per slot and usage is
    kept in each row's ``meta``. Resumable: ids already in ``out_path`` are skipped.
    With ``executor="ray"`` (or a ``RayExecutor``) the proposals are sampled in Ray
    actors (the proposers must be specs or configs; keys come from the workers'
    environment); the teacher, if any, and all writing stay on this process.

    Returns:
        Counts: ``written``, ``skipped`` (already there), ``failed`` (see the
        ``.errors.jsonl`` beside the output).
    """
    from aft_sdk.graphs import AggregateGraph, AggregateResult

    prompt = prompt_of(prompt, preset, template)

    if teacher is None and not reference_field:
        raise ConfigError("give reference_field (targets from the data) or teacher= a backend")
    graph = AggregateGraph(proposers, width=k, depth=0, proposer_sampling=sampling)
    from aft_sdk.scale import as_executor

    runs = as_executor(executor).bind(graph)
    teacher_backend = make_backend(teacher) if teacher is not None else None
    items = []
    for i, record in enumerate(prompts):
        try:
            items.append(_item(record, i, prompt_field, reference_field, id_field,
                               needs_ref=teacher_backend is None))
        except RowError as e:
            skip_or_raise(e, skip_bad=skip_bad, counter=counter)

    async def work(item: RunItem) -> AftRow:
        messages, ref = item.payload
        result: AggregateResult = await runs.run(messages)
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
            row = await awrite_target(row, teacher_backend, prompt=prompt,
                                      sampling=teacher_sampling)
        return row

    try:
        return await resumable_rows(items, out_path, work, max_concurrency=max_concurrency,
                                    desc="on-policy rows", progress=progress, inputs=inputs)
    finally:
        runs.close()


def _item(record: Any, i: int, prompt_field: str, reference_field: str | None, id_field: str,
          *, needs_ref: bool) -> RunItem:
    where = f"prompt {i + 1}"
    if not isinstance(record, dict):
        raise RowError(f"{where}: a record must be an object, got {type(record).__name__}")
    messages = messages_of(record, prompt_field, where)
    ref = record.get(reference_field) if reference_field else None
    if needs_ref and (not isinstance(ref, str) or not ref.strip()):
        raise RowError(f"{where}: field '{reference_field}' must be non-empty text")
    return RunItem(record_id(record, id_field, f"on-policy-{i}", where), (messages, ref),
                   {"record": i + 1})
