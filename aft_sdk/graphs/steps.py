"""Step scorers: how a step-level search rates partial solutions.

One small protocol, batched: ``await scorer.score(question, paths)`` takes many partial
solutions (each a list of steps) and returns, for each, either the score of its last
step or one score per step (a process reward model scores every step at once). Scores
are floats, higher is better; a search combines a path's step scores (``combine``).

Built-ins, named by the search's ``scorer`` setting (:mod:`aft_sdk.search_config`):

- ``import:module:function``: a function of yours, ``(question, steps) -> float | list``
  (sync or async), called once per path;
- ``judge`` / ``judge:SPEC``: an LLM rates the last step from 1 to 10 (read from its
  answer, or with ``read: logprobs`` as the expected rating under its first token's
  log-probabilities), on the proposer or the backend ``SPEC`` names;
- ``prm:FOLDER``: a transformers ``AutoModelForTokenClassification`` with a two-label
  head (wrong, right) saved in FOLDER: each step followed by ``separator_token``, the
  step's score the last label's probability at that token;
- ``vllm-prm:MODEL``: a process reward model on vLLM's pooling runner (GPU), such as
  Qwen2.5-Math-PRM with ``separator_token: "<extra_0>"``.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from aft_sdk.backends.base import Backend
from aft_sdk.config import SamplingConfig
from aft_sdk.errors import ConfigError, GraphError
from aft_sdk.plugins import load_object

#: What a scorer returns per path: the last step's score, or one per step.
PathScore = float | list[float]


class StepScorer(Protocol):
    """Rates partial solutions (batched)."""

    async def score(self, question: str, paths: Sequence[Sequence[str]]) -> list[PathScore]: ...


def combine(scores: Sequence[float], how: str) -> float:
    """A path's score from its steps' (``last``, ``min``, ``product``, ``mean``)."""
    if not scores:
        return 0.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "product":
        return math.prod(scores)
    return sum(scores) / len(scores)


def checked(value: Any, steps: int, who: str) -> PathScore:
    """A scorer's answer for a path of ``steps`` steps, or a ``GraphError`` naming it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == steps and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value):
        return [float(v) for v in value]
    raise GraphError(f"step scorer {who} returned {value!r:.80} for a path of {steps} steps: "
                     f"return a finite number (the last step's score) or {steps} numbers")


class FunctionScorer:
    """``import:module:function``: your function, once per path (threads for sync ones)."""

    def __init__(self, target: str) -> None:
        self.name = target
        self.fn = load_object(target, f"step scorer {target!r}")
        if not callable(self.fn):
            raise ConfigError(f"step scorer {target!r} is not a function")

    async def score(self, question: str, paths: Sequence[Sequence[str]]) -> list[PathScore]:
        async def one(steps: Sequence[str]) -> Any:
            if inspect.iscoroutinefunction(self.fn):
                return await self.fn(question, list(steps))
            return await asyncio.to_thread(self.fn, question, list(steps))

        values = await asyncio.gather(*(one(p) for p in paths))
        return [checked(v, len(p), self.name) for v, p in zip(values, paths)]


JUDGE_PROMPT = (
    "Below is a question and a solution in progress, one step per paragraph.\n\n"
    "Question: {question}\n\n{steps}\n\n"
    "How likely is the LAST step (step {last}) to be correct and useful? Reply with one "
    "whole number from 1 (surely wrong) to 10 (surely right) and nothing else.")
_RATING = re.compile(r"\b(10|[1-9])\b")


class JudgeScorer:
    """An LLM rates the last step of each path from 1 to 10 (scores 0.1 to 1.0); an answer
    without a rating scores 0 and is counted in :attr:`unread`."""

    def __init__(self, backend: Backend, read: str = "text") -> None:
        self.backend, self.read = backend, read
        self.unread = 0
        self.sampling = SamplingConfig(temperature=0.0, max_tokens=4, logprobs=read == "logprobs",
                                       top_logprobs=10 if read == "logprobs" else None)

    async def score(self, question: str, paths: Sequence[Sequence[str]]) -> list[PathScore]:
        return (await self.score_with_calls(question, paths))[0]

    async def score_with_calls(self, question: str, paths: Sequence[Sequence[str]],
                               ) -> tuple[list[PathScore], list[Any]]:
        """The scores, and the judge's generations (a search records them: usage, cost
        and the budget count them)."""
        async def one(steps: Sequence[str]) -> Any:
            shown = "\n\n".join(f"Step {i + 1}: {s.strip()}" for i, s in enumerate(steps))
            prompt = JUDGE_PROMPT.format(question=question, steps=shown, last=len(steps))
            (gen,) = await self.backend.generate([{"role": "user", "content": prompt}],
                                                 sampling=self.sampling)
            return gen

        gens = list(await asyncio.gather(*(one(p) for p in paths)))
        return [self._rating(g) for g in gens], gens

    def _rating(self, gen: Any) -> float:
        if self.read == "logprobs" and gen.logprobs:
            weights = {}
            for alt in gen.logprobs[0].get("top_logprobs") or []:
                token = str(alt.get("token", "")).strip()
                if token.isdigit() and 1 <= int(token) <= 10:
                    weights[int(token)] = weights.get(int(token), 0.0) + math.exp(alt["logprob"])
            if weights:
                return sum(k * w for k, w in weights.items()) / sum(weights.values()) / 10
        found = _RATING.search(gen.text or "")
        if found is None:
            self.unread += 1
            return 0.0
        return int(found.group(1)) / 10


class TransformersPRM:
    """A token-classification PRM from a local folder (loaded once, on first use)."""

    def __init__(self, folder: str, separator_token: str) -> None:
        self.folder, self.separator_token = folder, separator_token
        self._loaded: tuple[Any, Any, int] | None = None
        # One forward pass (and one load) at a time, whichever event loop asks.
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any, int]:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(self.folder)
            model = AutoModelForTokenClassification.from_pretrained(self.folder).eval()
        except (OSError, ValueError) as e:
            raise ConfigError(f"prm:{self.folder} cannot be loaded as a token-classification "
                              f"model: {e}") from e
        ids = tok.encode(self.separator_token, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"separator_token {self.separator_token!r} is {len(ids)} tokens "
                              f"for {self.folder}'s tokenizer: choose one that is one token")
        return tok, model, ids[0]

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """The input ids (question, then each step and the separator) and the positions
        of the separators, whose labels score the steps."""
        assert self._loaded is not None
        tok, _, sep = self._loaded
        ids = tok.encode(question + "\n", add_special_tokens=True)
        at = []
        for step in steps:
            ids += tok.encode(step, add_special_tokens=False) + [sep]
            at.append(len(ids) - 1)
        return ids, at

    def _score(self, question: str, paths: Sequence[Sequence[str]]) -> list[PathScore]:
        import torch

        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._forward(torch, question, paths)

    def _forward(self, torch: Any, question: str, paths: Sequence[Sequence[str]]
                 ) -> list[PathScore]:
        assert self._loaded is not None
        tok, model, _ = self._loaded
        encoded = [self.encode(question, p) for p in paths]
        width = max(len(ids) for ids, _ in encoded)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        batch = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in encoded])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in encoded])
        with torch.no_grad():
            probs = model(input_ids=batch, attention_mask=mask).logits.softmax(-1)[..., -1]
        return [[float(probs[i, j]) for j in at] for i, (_, at) in enumerate(encoded)]

    async def score(self, question: str, paths: Sequence[Sequence[str]]) -> list[PathScore]:
        return await asyncio.to_thread(self._score, question, paths)


class VLLMPRM:
    """A process reward model on vLLM's pooling runner (``LLM.encode(...,
    pooling_task="token_classify")``), its pooler told the step tag (``step_tag_id``: the
    id of ``separator_token``, ``<extra_0>`` for Qwen2.5-Math-PRM), so it returns one
    ``[p(wrong), p(right)]`` row per step; the step's score is ``p(right)``. The engine
    starts on first use (once, under a lock) and stops with :meth:`close`."""

    def __init__(self, model: str, separator_token: str) -> None:
        self.model, self.separator_token = model, separator_token
        self._llm: Any = None
        self._lock = threading.Lock()

    def engine_kwargs(self, step_tag_id: int) -> dict[str, Any]:
        """What the engine is built with (``vllm.LLM(**kwargs)``, the pooler config as
        ``vllm.config.PoolerConfig(**kwargs["pooler_config"])``)."""
        return {"model": self.model, "runner": "pooling", "enable_prefix_caching": True,
                "pooler_config": {"step_tag_id": step_tag_id}}

    def prompts(self, question: str, paths: Sequence[Sequence[str]]) -> list[str]:
        sep = self.separator_token
        return [question + "\n" + "".join(s + sep for s in steps) for steps in paths]

    @staticmethod
    def read(outputs: Sequence[Any], paths: Sequence[Sequence[str]]) -> list[PathScore]:
        """Scores from vLLM's outputs (``outputs[i].outputs.data``: a row per step tag),
        each checked to hold one score per step."""
        return [checked([float(row[-1]) for row in out.outputs.data.tolist()], len(p),
                        "vllm-prm") for out, p in zip(outputs, paths)]

    def _start(self) -> Any:
        try:
            from transformers import AutoTokenizer
            from vllm import LLM
            from vllm.config import PoolerConfig
        except ImportError as e:
            raise ConfigError("vllm-prm: needs vLLM: pip install 'aft-sdk[vllm]'") from e
        ids = AutoTokenizer.from_pretrained(self.model).encode(self.separator_token,
                                                               add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"separator_token {self.separator_token!r} is {len(ids)} tokens "
                              f"for {self.model}: use the model's step tag (<extra_0>)")
        kwargs = self.engine_kwargs(ids[0])
        return LLM(**{**kwargs, "pooler_config": PoolerConfig(**kwargs["pooler_config"])})

    async def score(self, question: str, paths: Sequence[Sequence[str]]) -> list[PathScore]:
        def run() -> list[PathScore]:
            with self._lock:
                if self._llm is None:
                    self._llm = self._start()
                outputs = self._llm.encode(self.prompts(question, paths), use_tqdm=False,
                                           pooling_task="token_classify")
            return self.read(outputs, paths)

        return await asyncio.to_thread(run)

    def close(self) -> None:
        """Stops the engine (its processes end)."""
        with self._lock:
            llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def make_scorer(spec: str, settings: Any, proposer: Backend) -> StepScorer:
    """The scorer a search's ``scorer`` setting names (see the module's text)."""
    kind, _, rest = spec.partition(":")
    if kind == "import":
        return FunctionScorer(rest)
    if kind == "judge":
        from aft_sdk.backends.factory import make_backend

        return JudgeScorer(make_backend(rest) if rest else proposer, settings.read)
    if kind == "prm":
        return TransformersPRM(rest, settings.separator_token)
    return VLLMPRM(rest, settings.separator_token)
