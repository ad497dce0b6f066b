"""Step answers of the fault server: what a model continuing partial answers would say.

A request is a step when its ``stop`` list holds the server's ``step_separator``
(``"\\n\\n"``): a step-level search asks for one step at a time. The partial answer is
the trailing assistant message of a chat request sent with ``continue_final_message``,
or, for ``/v1/completions``, what follows the prompt's last ``assistant`` header. The
step's text is ``step K seed S`` (K: steps so far plus one; S: the request's seed), and
the path ends (the model's own end: no ``stop_reason``) at step ``steps_to_finish``,
where the text adds ``Answer: S``; earlier steps end at the separator (``stop_reason``
the separator, as vLLM reports it). ``say:TEXT`` answers TEXT at the separator instead.
"""

from __future__ import annotations

import re
import time
from typing import Any

_HEADER = re.compile(r"assistant(?::[ ]?|\n)")


def is_step(body: dict[str, Any], separator: str) -> bool:
    return separator in (body.get("stop") or [])


def prefix_of(body: dict[str, Any]) -> str:
    """The partial answer the request continues ('' for a first step)."""
    if "prompt" in body:
        parts = _HEADER.split(str(body["prompt"]))
        return parts[-1] if len(parts) > 1 else ""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if body.get("continue_final_message") and last.get("role") == "assistant":
        return str(last.get("content") or "")
    return ""


def step_payload(body: dict[str, Any], n: int, server: Any, said: str | None) -> dict[str, Any]:
    """The reply to a step request: ``n`` choices in the endpoint's own shape."""
    separator, finish_at = server.step_separator, server.steps_to_finish
    k = prefix_of(body).count(separator) + 1
    seed = body.get("seed")
    choices, words = [], 0
    for i in range(n):
        s = None if seed is None else seed + i
        last = said is None and k >= finish_at
        text = said if said is not None else f"step {k} seed {s}" + (f" Answer: {s}" if last else "")
        words += len(text.split())
        choice: dict[str, Any] = {"index": i, "finish_reason": "stop",
                                  "stop_reason": None if last else separator}
        if "prompt" in body:
            choice["text"] = text
        else:
            choice["message"] = {"role": "assistant", "content": text}
        choices.append(choice)
    prompt = len(str(body.get("prompt") or body.get("messages")).split())
    return {"id": "fault-step", "object": "text_completion" if "prompt" in body else
            "chat.completion", "created": int(time.time()), "model": body.get("model"),
            "choices": choices, "usage": {"prompt_tokens": prompt, "completion_tokens": words,
                                          "total_tokens": prompt + words}}
