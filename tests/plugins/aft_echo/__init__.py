"""An out-of-tree backend, installed only through its ``.dist-info``: what
docs/contributing/write-a-backend.md walks a newcomer through.

``echo`` answers with a prefix and the words of the last message in reverse order: a
deterministic model with real token counts, enough to see which backend wrote what.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aft_sdk.backends import Backend, Generation
from aft_sdk.backends.base import check_n
from aft_sdk.config import SamplingConfig
from aft_sdk.plugins import BackendKind


def _text(message: dict) -> str:
    content = message.get("content") or ""
    return content if isinstance(content, str) else " ".join(
        part.get("text", "") for part in content if isinstance(part, dict))


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["echo"] = "echo"
    prefix: str = Field("echo", min_length=1)


class EchoBackend(Backend):
    def __init__(self, prefix: str = "echo", sampling: SamplingConfig | None = None) -> None:
        self.model = prefix
        self.sampling = sampling or SamplingConfig()

    @classmethod
    def from_config(cls, cfg: EchoConfig, sampling: SamplingConfig | None = None) -> EchoBackend:
        return cls(cfg.prefix, sampling)

    @property
    def label(self) -> str:
        return f"echo:{self.model}"

    async def generate(self, messages: Sequence[dict], *, n: int = 1,
                       sampling: SamplingConfig | None = None, options=None) -> list[Generation]:
        check_n(n)
        t0 = time.perf_counter()
        words = _text(messages[-1]).split()
        text = " ".join([self.model, *reversed(words)])
        prompt = sum(len(_text(m).split()) for m in messages)
        return [Generation(text=text, finish_reason="stop", prompt_tokens=prompt,
                           completion_tokens=len(text.split()), model=self.model,
                           latency_s=time.perf_counter() - t0, backend=self.label)
                for _ in range(n)]


KIND = BackendKind(kind="echo", config=EchoConfig, backend="aft_echo:EchoBackend",
                   parse=lambda rest: EchoConfig(prefix=rest), forms=("'echo:PREFIX'",))
