"""its-hub's step-level searches (beam search, particle filtering) as a benchmark peer.

``run_its_hub`` drives its-hub 1.2.0 (``pip install "its-hub[lm]==1.2.0"``) against an
OpenAI-compatible server with our own step scorer as its process reward model. Three
things its-hub does not do for every server are handled here, in an LM subclass:

* Continuing a partial answer. its-hub sends the steps so far as a trailing assistant
  message with ``continue_final_message``/``add_generation_prompt`` (vLLM's flags).
  llama-cpp-python's server ignores them: it closes that turn and opens a new one, so
  the model starts a fresh reply. ``continuation="user"`` puts the steps so far into
  the user turn instead; ``"assistant"`` keeps its-hub's way; ``"auto"`` picks
  ``"assistant"`` when ``/models`` says vLLM, else ``"user"``.
* The step cap. its-hub sends ``max_completion_tokens``, which llama-cpp-python ignores;
  we send ``max_tokens`` too.
* The end of a path. its-hub ends a path only at ``max_steps`` or when a step contains
  its ``stop_token``; it never reads why generation stopped. We mark a step that ends
  its path (it matches ``done``, is empty, or the server says the model's end of text
  came first: vLLM's ``stop_reason`` is null) with a marker that is its-hub's
  ``stop_token``, and strip the marker again before scoring and from the answer.
  llama-cpp-python reports "stop" for both its end of text and a stop string, so there
  a path ends only by ``done``, an empty step, or ``max_steps``.

    python benchmarks/its_hub_peer.py --base-url http://127.0.0.1:8931/v1 --model smollm2
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
import urllib.request
import warnings
from typing import Callable

END = "\u241e"  # our end-of-path marker (its-hub's stop_token), never shown to the model


def _server_is_vllm(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=5) as r:
            return any(m.get("owned_by") == "vllm" for m in json.load(r).get("data", []))
    except Exception:  # unknown server: use the form every chat server understands
        return False


def run_its_hub(method: str, *, base_url: str, model: str, question: str, budget: int,
                step_scorer: Callable[[str, list[str]], float], separator: str = "\n\n",
                max_steps: int, step_max_tokens: int, temperature: float,
                system: str | None = None, done: str | None = None,
                continuation: str = "auto", beam_width: int = 2,
                seed: int | None = None, api_key: str = "none") -> dict:
    """Run its-hub's ``"beam"`` or ``"particle-filtering"`` on one question.

    budget: beam: paths kept x expansions (``beam_width`` kept, ``budget // beam_width``
    copies of each extended per step; the first step makes ``budget // beam_width``);
    particle-filtering: the number of particles. ``step_scorer(question, steps)`` rates
    the last of ``steps``; for particle filtering it must lie in [0, 1] (clipped here).
    """
    from its_hub import AbstractProcessRewardModel, OpenAICompatibleLanguageModel, StepGeneration
    from its_hub.api import GenerationUsage
    from its_hub.core.algorithms.beam_search import BeamSearch
    from its_hub.core.algorithms.particle_gibbs import ParticleFiltering

    if continuation == "auto":
        continuation = "assistant" if _server_is_vllm(base_url) else "user"
    if continuation not in ("assistant", "user"):
        raise ValueError(f"continuation {continuation!r}: auto, assistant or user")
    done_re = re.compile(done) if done else None
    usage = GenerationUsage()  # filled from each response's "usage" (tokens, calls)

    class PeerLM(OpenAICompatibleLanguageModel):
        def _prepare_request_data(self, messages, *args, **kwargs):
            body = super()._prepare_request_data(messages, *args, **kwargs)
            msgs = body["messages"]
            if continuation == "user" and msgs[-1]["role"] == "assistant":
                so_far = msgs.pop()["content"].replace(END, "").rstrip()
                msgs[-1] = {**msgs[-1], "content": msgs[-1]["content"]
                            + "\n\nYour solution so far:\n\n" + so_far
                            + "\n\nWrite only the next step."}
                for key in ("add_generation_prompt", "continue_final_message"):
                    body.pop(key, None)
                    body.get("extra_body", {}).pop(key, None)
            if "max_completion_tokens" in body:
                body["max_tokens"] = body["max_completion_tokens"]
            return body

        async def agenerate(self, messages, stop=None, **kwargs):
            # Every call its searches make comes through here: count the tokens and
            # calls by the server's usage, and mark steps that end their path.
            kwargs["usage_accumulator"] = usage
            out = await super().agenerate(messages, stop=stop, **kwargs)
            for msg in out if isinstance(out, list) else [out]:
                raw, text = msg.pop("_raw_choice", {}), msg.get("content") or ""
                eos = raw.get("finish_reason") == "stop" and "stop_reason" in raw \
                    and raw["stop_reason"] is None
                if eos or not text.strip() or (done_re and done_re.search(text)):
                    msg["content"] = text + END
            return out

    class ScorerPRM(AbstractProcessRewardModel):
        # its-hub hands over one text per path (the steps joined by the separator) and
        # wants one score per path; we split it back into steps for our scorer.
        def score(self, prompt, texts):
            out = []
            for text in texts:
                s = float(step_scorer(question, text.replace(END, "").split(separator)))
                out.append(min(max(s, 0.0), 1.0) if method == "particle-filtering" else s)
            return out

        async def ascore(self, prompt, texts):
            return self.score(prompt, texts)

    # StepGeneration sends no token cap when it has a step separator; the LM's own
    # default max_completion_tokens fills it in for every call.
    lm = PeerLM(endpoint=base_url, api_key=api_key, model_name=model, system_prompt=system,
                max_completion_tokens=step_max_tokens, include_raw_choices=True)
    # its-hub stops a path when the steps it had *before* a step reach max_steps, so a
    # path would take max_steps + 1 steps: we pass one less.
    sg = StepGeneration(max_steps=max_steps - 1, step_token=separator, stop_token=END,
                        temperature=temperature, tokens_per_step=None)

    if method == "beam":
        algo = BeamSearch(sg, ScorerPRM(), beam_width=beam_width)
    elif method == "particle-filtering":
        algo = ParticleFiltering(sg, ScorerPRM())
    else:
        raise ValueError(f"method {method!r}: beam or particle-filtering")
    if seed is not None:
        random.seed(seed)  # particle filtering resamples with the random module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its agenerate() is "deprecated"
        t0 = time.perf_counter()
        result = algo.infer(lm, question, budget, return_response_only=False)
        latency = time.perf_counter() - t0
    return {"answer": result.the_one["content"].replace(END, "").strip(),
            "latency_s": latency, "generations": usage.num_calls,
            "completion_tokens": usage.completion_tokens}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="smoke run of its-hub's step searches")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--budget", type=int, default=4)
    args = ap.parse_args()
    q = ("Start at 3. Add 4, then multiply by 2. Work one step per line, separated by a "
         "blank line, and end with 'Answer: N'.")

    def flat(question: str, steps: list[str]) -> float:  # a trivial scorer
        return 0.5

    for m in ("beam", "particle-filtering"):
        out = run_its_hub(m, base_url=args.base_url, model=args.model, question=q,
                          budget=args.budget, step_scorer=flat, max_steps=4,
                          step_max_tokens=48, temperature=0.7, done="Answer:", seed=0)
        print(m, json.dumps(out, indent=1))
