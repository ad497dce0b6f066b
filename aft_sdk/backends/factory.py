"""Build backends from configs or from short command-line specs.

Specs accepted by :func:`make_backend` (and the ``--proposer`` / ``--aggregator`` flags):

- ``embedded`` or ``embedded:/path/model.gguf[+lora:ADAPTER.gguf]``: llama.cpp in-process;
  ``embedded+aft``: the bundled model with its shipped AFT aggregator adapter;
- ``vllm:MODEL_OR_FOLDER`` (``vllm:FOLDER+lora:ADAPTER`` for a LoRA adapter);
- ``openai:MODEL``: api.openai.com with ``OPENAI_API_KEY``;
- ``http://host:port/v1#MODEL``: any OpenAI-compatible server (``#MODEL`` optional).
  It is sent no key unless the spec names the environment variable that holds one:
  ``https://api.together.xyz/v1#MODEL?key_env=TOGETHER_API_KEY``;
- ``langchain:MODULE:CLASS[#MODEL][?key_env=VAR]``: any LangChain chat model;
- ``KIND:...``: a plug-in kind (entry point group ``aft_sdk.backends``), parsed by it.

Which class serves which config is one table (:data:`BUILTIN_BACKENDS`) plus the
plug-ins' :class:`~aft_sdk.plugins.BackendKind` entries.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Union

from pydantic import BaseModel, SecretStr, ValidationError

from aft_sdk.backends.base import Backend
from aft_sdk.config import (
    EmbeddedBackendConfig,
    LangChainBackendConfig,
    OpenAIBackendConfig,
    PluginBackendConfig,
    VLLMBackendConfig,
    describe_validation_error,
)
from aft_sdk.errors import ConfigError
from aft_sdk.plugins import backend_plugins, get_backend_plugin, load_object
from aft_sdk.redact import redact_url

#: What every public entry point accepts where a backend is wanted: a backend, a spec,
#: or a config (of a built-in or a plug-in kind).
BackendLike = Union[Backend, str, BaseModel]

#: Backend kind (a config's ``type``) -> the class that serves it.
BUILTIN_BACKENDS = {
    "openai": "aft_sdk.backends.openai_backend:OpenAIBackend",
    "vllm": "aft_sdk.backends.vllm_backend:VLLMBackend",
    "embedded": "aft_sdk.backends.embedded_backend:EmbeddedBackend",
    "langchain": "aft_sdk.backends.langchain_backend:LangChainBackend",
}


def make_backend(spec: BackendLike) -> Backend:
    """Returns a backend for a backend instance, a config object or a spec string.

    Identical specs share one instance (one llama.cpp model or vLLM engine in memory).

    Raises:
        ConfigError: The spec is not one of the forms above.
    """
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, str):
        return _from_spec(spec.strip())
    if isinstance(spec, BaseModel) and isinstance(getattr(spec, "type", None), str):
        return _from_config(spec)
    raise ConfigError(
        f"cannot make a backend from {type(spec).__name__}: pass a Backend, a config, or a "
        "spec string such as 'embedded', 'vllm:/path', 'http://127.0.0.1:8000/v1#model'"
    )


logger = logging.getLogger(__name__)
_shared: dict[tuple[str, str, int], Backend] = {}
_shared_lock = threading.Lock()


def _from_config(cfg: Any) -> Backend:
    if isinstance(cfg, PluginBackendConfig):
        cfg = cfg.resolve()
    # Equal configs share one backend: one model in memory, one concurrency bound. Secret
    # fields dump masked, so their values join the key (hashed, never stored as text).
    secrets = tuple(v.get_secret_value() for v in dict(cfg).values() if isinstance(v, SecretStr))
    key = (type(cfg).__name__, cfg.model_dump_json(), hash(secrets))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = _on_a_twin_engine(cfg) or _build(cfg)
        return _shared[key]


def _on_a_twin_engine(cfg: Any) -> Backend | None:
    """A vLLM config that differs from a shared one only in its adapter (a reload onto a
    newly trained one) goes on that engine, started or not, where vLLM allows it: the
    engine has LoRA on, and room for the adapter's rank. ``None``: build as usual."""
    if getattr(cfg, "type", None) != "vllm":
        return None
    from aft_sdk.backends.vllm_backend import VLLMBackend

    key = VLLMBackend.engine_key(cfg)
    twin = next((b for b in _shared.values() if isinstance(b, VLLMBackend)
                 and VLLMBackend.engine_key(b._cfg) == key), None)
    if twin is None:
        return None
    try:
        backend = VLLMBackend.from_config(cfg, engine=twin.engine)
        backend._holds = True  # the engine stops when the last of its holders closes
        twin.engine.holders += 1
        return backend
    except ConfigError as e:
        logger.warning("vLLM: %s; %s gets an engine of its own", e, cfg.model)
        return None


async def aclose_shared() -> None:
    """Closes every backend built from a spec or config in this process (their engines
    and connections end); later calls build new ones."""
    with _shared_lock:
        backends = list(_shared.values())
        _shared.clear()
    for backend in backends:
        await backend.aclose()


def _build(cfg: Any) -> Backend:
    if cfg.type in BUILTIN_BACKENDS:
        target, what = BUILTIN_BACKENDS[cfg.type], f"backend {cfg.type!r}"
    else:  # a plug-in kind: its own config model, then its class
        kind = get_backend_plugin(cfg.type)
        if not isinstance(cfg, kind.config):
            cfg = kind.config.model_validate(dict(cfg))
        target, what = kind.backend, f"backend plug-in {cfg.type!r}"
    return load_object(target, what).from_config(cfg)


def parse_spec(spec: str) -> OpenAIBackendConfig | VLLMBackendConfig | EmbeddedBackendConfig:
    """Parses a spec string into a backend config (see the module docstring)."""
    if not spec:
        raise ConfigError("empty backend spec: use 'embedded', 'vllm:PATH', 'openai:MODEL' or a URL")
    if spec == "embedded":
        return EmbeddedBackendConfig()
    if spec == "embedded+aft":
        return EmbeddedBackendConfig(lora_path="bundled")
    if spec.startswith("embedded:"):
        model, _, lora = spec.split(":", 1)[1].partition("+lora:")
        return EmbeddedBackendConfig(model_path=model, lora_path=lora or None)
    if spec.startswith("vllm:"):
        model, _, lora = spec[5:].partition("+lora:")
        return VLLMBackendConfig(model=model, lora_path=lora or None)
    if spec.startswith("openai:"):
        return OpenAIBackendConfig(model=spec.split(":", 1)[1])
    if spec.startswith(("http://", "https://")):
        return _url_spec(spec)
    if spec.startswith("langchain:"):
        return _langchain_spec(spec)
    kind, _, rest = spec.partition(":")
    if rest and kind in backend_plugins():
        plugin = get_backend_plugin(kind)
        if plugin.parse is None:
            raise ConfigError(f"backend plug-in {kind!r} has no spec form: give it as a config "
                              f"(type: {kind}) in YAML or Python")
        return plugin.parse(rest)
    raise ConfigError(
        f"unknown backend spec {_shown(spec)!r}: use 'embedded', 'embedded:FILE.gguf', "
        "'vllm:MODEL', 'openai:MODEL', 'http://HOST:PORT/v1#MODEL', "
        "'langchain:MODULE:CLASS#MODEL' or a plug-in's 'KIND:...'"
        + (f" (installed plug-ins: {', '.join(sorted(backend_plugins()))})"
           if backend_plugins() else "")
    )


def _url_spec(spec: str) -> OpenAIBackendConfig:
    url, _, rest = spec.partition("#")
    model, _, options = rest.partition("?")
    settings: dict[str, Any] = {}
    for option in filter(None, options.split("&")):
        name, _, value = option.partition("=")
        if name != "key_env" or not value:
            raise ConfigError(
                f"unknown option {name!r} in backend spec {_shown(spec)!r}: the only "
                "option is key_env=ENV_VAR (the variable holding this server's key)"
            )
        settings["api_key_env"] = value
    return OpenAIBackendConfig(model=model or "default", base_url=url.rstrip("/"), **settings)


def _langchain_spec(spec: str) -> LangChainBackendConfig:
    head, _, options = spec[len("langchain:"):].partition("?")
    target, _, model = head.partition("#")
    key_env = None
    for option in filter(None, options.split("&")):
        name, _, value = option.partition("=")
        if name != "key_env" or not value:
            raise ConfigError(f"unknown option {name!r} in backend spec {spec!r}: the only "
                              "option is key_env=ENV_VAR (the variable holding the key)")
        key_env = value
    return LangChainBackendConfig(model_class=target, kwargs={"model": model} if model else {},
                                  api_key_env=key_env)


def _shown(spec: str) -> str:
    """A spec as it may appear in a message: URLs lose credentials and queries."""
    if spec.startswith(("http://", "https://")):
        url, _, rest = spec.partition("#")
        return redact_url(url) + ("#" + rest.partition("?")[0] if rest else "")
    return spec


def _from_spec(spec: str) -> Backend:
    try:
        cfg = parse_spec(spec)
    except ConfigError:
        raise
    except ValueError as e:  # pydantic validation of the parsed parts
        detail = describe_validation_error(e, "backend spec") if isinstance(
            e, ValidationError) else str(e)
        raise ConfigError(f"bad backend spec {_shown(spec)!r}: {detail}") from e
    return _from_config(cfg)


def default_backend() -> Backend:
    """The zero-config backend: the bundled SmolLM2 model through llama.cpp."""
    return _from_config(EmbeddedBackendConfig())


def default_aggregator() -> Backend:
    """The zero-config aggregator: the bundled model with its shipped AFT adapter when
    this install has it (``embedded+aft``), else the bundled model as it is."""
    from aft_sdk.backends.embedded_backend import bundled_adapter_path

    if bundled_adapter_path():
        return _from_config(EmbeddedBackendConfig(lora_path="bundled"))
    return default_backend()
