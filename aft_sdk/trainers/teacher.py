"""Targets written by a stronger "teacher" model from each row's proposals.

The teacher sees the same aggregation prompt (preset or custom template) the graph and
the trainer use. :func:`awrite_target` does one row; :func:`abuild_teacher_targets` a whole
file, resumably.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from aft_sdk.backends.base import Backend
from aft_sdk.backends.factory import BackendLike, make_backend
from aft_sdk.config import SamplingConfig
from aft_sdk.prompts import get_template
from aft_sdk.runner import DEFAULT_CONCURRENCY, RunItem
from aft_sdk.trainers.rows import AftRow, RowError, resumable_rows


async def awrite_target(
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


async def abuild_teacher_targets(
    rows: Iterable[AftRow], teacher: BackendLike, out_path: str | os.PathLike[str], *,
    preset: str = "aft-v1", template: str | None = None, sampling: SamplingConfig | None = None,
    max_concurrency: int = DEFAULT_CONCURRENCY, progress: bool = True,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, int]:
    """Rewrites each row's target with a teacher model; resumable JSONL output (never
    one of ``inputs``)."""
    backend = make_backend(teacher)
    items = [RunItem(r.id, r) for r in rows]

    async def work(item: RunItem) -> AftRow:
        return await awrite_target(item.payload, backend, preset=preset, template=template,
                                     sampling=sampling)

    return await resumable_rows(items, out_path, work, max_concurrency=max_concurrency,
                            desc="teacher targets", progress=progress, inputs=inputs)
