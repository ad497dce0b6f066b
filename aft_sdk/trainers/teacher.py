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
from aft_sdk.errors import ConfigError
from aft_sdk.config import PromptConfig, SamplingConfig
from aft_sdk.runner import DEFAULT_CONCURRENCY, RunItem
from aft_sdk.trainers.rows import AftRow, RowError, resumable_rows


def prompt_of(prompt: PromptConfig | None, preset: str | None, template: str | None
              ) -> PromptConfig:
    """The prompt config of a data builder: ``prompt``, or the ``preset`` / ``template``
    keywords (sugar for it), or the default."""
    if prompt is not None and (preset is not None or template is not None):
        raise ConfigError("give prompt= or preset=/template=, not both")
    return prompt or PromptConfig(preset=preset, template=template)


async def awrite_target(
    row: AftRow, teacher: Backend, *, prompt: PromptConfig | None = None,
    preset: str | None = None, template: str | None = None,
    sampling: SamplingConfig | None = None,
) -> AftRow:
    """The row with its target written by ``teacher`` from the row's proposals, shown
    in the aggregation prompt ``prompt`` (the bytes the graph and the trainer render)."""
    messages = prompt_of(prompt, preset, template).template_obj().render(
        row.messages, row.proposals)
    (gen,) = await teacher.generate(messages, n=1, sampling=sampling)
    if not gen.text.strip():
        raise RowError(f"row {row.id}: the teacher {teacher.label} wrote an empty target")
    return row.model_copy(update={
        "target": gen.text, "source": f"{row.source}+teacher:{gen.model}",
        "meta": {**row.meta, "teacher_usage": {"prompt_tokens": gen.prompt_tokens,
                                               "completion_tokens": gen.completion_tokens}},
    })


async def abuild_teacher_targets(
    rows: Iterable[AftRow], teacher: BackendLike, out_path: str | os.PathLike[str], *,
    prompt: PromptConfig | None = None, preset: str | None = None, template: str | None = None,
    sampling: SamplingConfig | None = None, max_concurrency: int = DEFAULT_CONCURRENCY, progress: bool = True,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, int]:
    """Rewrites each row's target with a teacher model; resumable JSONL output (never
    one of ``inputs``)."""
    backend = make_backend(teacher)
    prompt = prompt_of(prompt, preset, template)
    items = [RunItem(r.id, r) for r in rows]

    async def work(item: RunItem) -> AftRow:
        return await awrite_target(item.payload, backend, prompt=prompt, sampling=sampling)

    return await resumable_rows(items, out_path, work, max_concurrency=max_concurrency,
                            desc="teacher targets", progress=progress, inputs=inputs)
