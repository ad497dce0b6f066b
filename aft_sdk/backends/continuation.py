"""Continuing a partial answer, one step at a time (what step-level searches need).

``backend.continue_text(messages, prefix, separator=...)`` samples the next step of an
assistant answer that begins with ``prefix``: the conversation is rendered with the
model's chat template, the prefix written after the assistant's header, and the model
continues it until the separator (or its end of answer, a stop string, ``max_tokens``).
The finish reason says which:

- ``step``: the separator ended it (the text is cut before the separator);
- ``stop``: the model ended its answer (or a stop string of the request did);
- ``length``: the step's ``max_tokens`` ran out;
- ``stop_or_step``: the server stopped without saying whether the separator or the
  model's end did (llama-cpp-python's server); a search then ends the path only on an
  empty step or a step that matches its ``done`` pattern.

Where it is done: the vLLM engine and the embedded llama.cpp model render the prompt
themselves; an OpenAI-compatible server continues either a trailing assistant message
(``continuation: chat``; vLLM's server with ``continue_final_message``) or a prompt this
module renders for its ``/v1/completions`` (``continuation: completions`` with
``chat_template``: the template's text, a ``.jinja`` file, a tokenizer folder or
``tokenizer_config.json``, or a ``.gguf`` file whose metadata holds it; loaded and
compiled when the graph is built). A backend that cannot continue says so when the graph
is built, never by restarting the answer.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from aft_sdk.backends.base import Generation, emulate_n
from aft_sdk.errors import ConfigError
from aft_sdk.messages import Message

#: Finish reasons of a continued step (see the module's text).
STEP, STOP, LENGTH, UNSURE = "step", "stop", "length", "stop_or_step"


def cut_at(text: str, separator: str) -> tuple[str, bool]:
    """``text`` up to the first ``separator``, and whether there was one."""
    at = text.find(separator)
    return (text, False) if at < 0 else (text[:at], True)


def classify(finish: str | None, stop_reason: Any, separator: str, told: bool) -> str:
    """A continued step's finish reason from the server's (``stop_reason`` where the
    server says which stop string or token ended it: ``told``)."""
    if finish == "length":
        return LENGTH
    if not told:
        return UNSURE
    return STEP if stop_reason == separator else STOP


class ChatTemplate:
    """A chat template rendered on the client (Jinja, sandboxed, as transformers does)."""

    def __init__(self, source: str) -> None:
        try:  # the embedded extra's (not a core dependency)
            from jinja2 import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as e:
            raise ConfigError("rendering a chat template needs jinja2: pip install "
                              "'aft-sdk[embedded]' (or jinja2)") from e

        self.source, self._error = source, TemplateError
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)  # as HF's
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise ConfigError(f"the chat template does not compile: {e}") from e

    def render(self, messages: list[Message], prefix: str = "") -> str:
        """The prompt of the assistant's next turn, with ``prefix`` already written."""
        try:
            return self._template.render(messages=messages, add_generation_prompt=True,
                                         bos_token="", eos_token="") + prefix
        except self._error as e:
            raise ConfigError(f"the chat template cannot render this conversation: {e}") from e


def _raise(message: str) -> None:
    from jinja2 import TemplateError

    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return time.strftime(fmt)


@functools.lru_cache(maxsize=8)
def load_template(spec: str) -> ChatTemplate:
    """The chat template ``spec`` names (text, ``.jinja``, ``.gguf``, tokenizer folder or
    ``tokenizer_config.json``).

    Raises:
        ConfigError: The file is missing or holds no chat template.
    """
    if "{%" in spec or "{{" in spec:
        return ChatTemplate(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer_config.json"
    if not path.is_file():
        raise ConfigError(f"chat_template {spec!r} is neither a template nor a file: give "
                          "the template's text, a .jinja or .gguf file, or a tokenizer folder")
    if path.suffix == ".gguf":
        source = _gguf_template(path)
    elif path.suffix == ".json":
        source = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    else:
        source = path.read_text(encoding="utf-8")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{path} holds no chat template (chat_template)")
    return ChatTemplate(source)


def _gguf_template(path: Path) -> str | None:
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise ConfigError("reading a chat template from a .gguf file needs the gguf "
                          "package: pip install gguf (or give the template's text)") from e
    field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    return None if field is None else bytes(field.parts[field.data[0]]).decode("utf-8")


def cannot_continue(label: str, how: str) -> ConfigError:
    """The error of a backend asked to continue a prefix that it cannot."""
    return ConfigError(f"{label} cannot continue a partial answer, which a step-level "
                       f"search needs: {how}")


class SeparatorSeen:
    """A llama.cpp stopping criterion: true once the tokens generated after the prompt
    spell ``separator`` (``hit`` then says the separator, not the model, ended it)."""

    def __init__(self, llama: Any, prompt_tokens: int, separator: str) -> None:
        self.llama, self.start, self.separator = llama, prompt_tokens, separator
        self.hit = False

    def __call__(self, ids: Any, logits: Any) -> bool:
        tail = self.llama.detokenize(list(ids[self.start:])).decode("utf-8", "ignore")
        self.hit = self.separator in tail
        return self.hit


def embedded_step(backend: Any, messages: list[Message], sampling: Any, seed: int,
                  prefix: str, separator: str) -> Generation:
    """One step from an in-process llama.cpp model (``EmbeddedBackend``): the prompt
    rendered with the GGUF's chat template, continued to the separator (a stopping
    criterion, so the finish reason is exact)."""
    from llama_cpp import StoppingCriteriaList

    llama = backend.llama
    prompt = backend._render(messages) + prefix
    with backend._lock:
        t0 = time.perf_counter()
        start = len(llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
        seen = SeparatorSeen(llama, start, separator)
        try:
            out = llama.create_completion(prompt=prompt, stopping_criteria=StoppingCriteriaList(
                [seen]), **backend._kwargs(sampling, seed))
        except ValueError as e:
            raise backend._rejected(e) from e
        latency = time.perf_counter() - t0
    choice, usage = out["choices"][0], out.get("usage") or {}
    text, cut = cut_at(choice.get("text") or "", separator)
    finish = STEP if seen.hit or cut else classify(choice.get("finish_reason"), None,
                                                    separator, True)
    return Generation(text=text, finish_reason=finish,
                      prompt_tokens=int(usage.get("prompt_tokens", 0)),
                      completion_tokens=int(usage.get("completion_tokens", 0)),
                      latency_s=latency, model=backend.model, backend=backend.label)


async def openai_step(backend: Any, client: Any, messages: list[Message], prefix: str,
                      separator: str, n: int, sampling: Any, upstream: Any) -> list[Generation]:
    """``n`` next steps from an OpenAI-compatible server (``OpenAIBackend``), one request
    each (seeds ``seed``, ``seed+1``, ...), in its ``continuation`` mode; ``upstream``
    maps the client's errors to ours."""
    import openai

    from aft_sdk.backends.http_errors import MALFORMED

    mode = backend._cfg.continuation
    step = sampling.model_copy(update={"stop": [*(sampling.stop or []), separator]})
    if mode == "completions":
        chat_only = [f for f in ("logprobs", "reasoning_effort") if getattr(sampling, f)]
        if chat_only:
            raise ConfigError(f"{backend.label} continues steps through /v1/completions, which "
                              f"does not take {', '.join(chat_only)}: leave it unset for steps")
        template = load_template(backend._cfg.chat_template)

    async def one(seed: int | None) -> Generation:
        params = backend._params(step, 1, seed)
        t0 = time.perf_counter()
        try:
            if mode == "completions":
                resp = await client.completions.create(
                    prompt=template.render(messages, prefix), **params)
                choice = (resp.choices or [None])[0]
                text = getattr(choice, "text", None)
                if not isinstance(text, str):
                    raise backend._malformed("the completion has no choices[0].text")
                usage = backend._usage(getattr(resp, "usage", None))
                gen = Generation(text=text, prompt_tokens=usage[0], completion_tokens=usage[1],
                                 cached_tokens=usage[2], model=backend.model, backend=backend.label)
            else:  # a trailing assistant message, continued (no new turn begins)
                turn = [{"role": "assistant", "content": prefix}] if prefix else []
                extra = {"continue_final_message": True, "add_generation_prompt": False}
                resp = await client.chat.completions.create(
                    messages=[*messages, *turn], **params, **({"extra_body": extra} if turn else {}))
                (gen,) = backend._parse(resp, 0.0)[:1]
                choice = resp.choices[0]
        except (openai.OpenAIError, *MALFORMED) as e:  # mapped as generate maps them
            raise upstream(e) from e
        told = "stop_reason" in (getattr(choice, "model_extra", None) or {})
        finish = classify(getattr(choice, "finish_reason", None),
                          getattr(choice, "stop_reason", None), separator, told)
        return gen.model_copy(update={"finish_reason": finish,
                                      "latency_s": time.perf_counter() - t0})

    return await emulate_n(one, n, seed=sampling.seed, label=backend.label)
