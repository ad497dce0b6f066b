"""Shared samples: methods of one comparison read the same seeded drafts.

A seeded request (same messages, sampling with its seed, and options) gives the same
sample, so a comparison of single sampling, self-consistency and propose-and-aggregate
can generate each draft once and share it: cheaper, and a paired comparison with common
random numbers (the methods differ in what they do with the drafts, not in the draws).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from aft_sdk.backends.base import Backend, Generation
from aft_sdk.config import SamplingConfig
from aft_sdk.jsonl import read_jsonl

def backend_identity(backend: Any) -> str:
    """What tells two backends' outputs apart: the label, and an adapter's bytes (hashed),
    since two adapters with the same file name have the same label."""
    if isinstance(getattr(backend, "identity", None), str):
        return backend.identity
    label = getattr(backend, "label", None) or repr(backend)
    lora = getattr(backend, "lora_path", None)
    if not lora or not Path(lora).is_file():
        return label
    return f"{label}#{hashlib.sha256(Path(lora).read_bytes()).hexdigest()[:16]}"


class SharedSamples(Backend):
    """Wraps a backend: each seeded request is generated once, then read back.

    Samples are appended to ``path`` (JSON lines) as they arrive, so a later run, or
    another method of the same run, reuses them; unseeded requests always go to the
    model. ``hits`` and ``misses`` count reused and generated requests.

    Args:
        inner: The backend that generates.
        path: The samples file (created on first use).
    """

    def __init__(self, inner: Backend, path: str | Path) -> None:
        self.inner, self.path = inner, Path(path)
        for name in ("model", "native_n", "context_window", "parts", "keeps_developer",
                     "trained_prompt", "handles"):
            setattr(self, name, getattr(inner, name))
        self.saved: dict[str, list[dict[str, Any]]] = {}
        if self.path.is_file():
            self.saved = {row["key"]: row["generations"] for row in read_jsonl(self.path)}
        self.pending: dict[str, asyncio.Future] = {}
        self.hits = self.misses = 0
        self.identity = backend_identity(inner)

    @property
    def label(self) -> str:
        return self.inner.label

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def _key(self, messages: Any, n: int, sampling: SamplingConfig, options: Any) -> str:
        # A label never holds a secret; nor does a key.
        body = json.dumps([self.identity, list(messages), n, sampling.model_dump(mode="json"),
                           options.model_dump(mode="json") if options is not None else None],
                          sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()

    async def generate(self, messages, *, n=1, sampling=None, options=None) -> list[Generation]:
        kw = {"options": options} if options is not None else {}
        if sampling is None or sampling.seed is None:
            return await self.inner.generate(messages, n=n, sampling=sampling, **kw)
        key = self._key(messages, n, sampling, options)
        if key in self.saved:
            self.hits += 1
            return [Generation(**g) for g in self.saved[key]]
        if key not in self.pending:
            self.misses += 1
            self.pending[key] = asyncio.ensure_future(
                self.inner.generate(messages, n=n, sampling=sampling, **kw))
        gens = await asyncio.shield(self.pending[key])
        if key not in self.saved:
            self.saved[key] = [g.model_dump(mode="json") for g in gens]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "generations": self.saved[key]}) + "\n")
        return gens
