"""aft-sdk: propose-and-aggregate test-time compute, and Aggregation Fine-Tuning.

Quick use::

    from aft_sdk import AggregateGraph
    result = AggregateGraph(width=3, depth=1).invoke("Why is the sky blue?")
    print(result.answer)

Where things live (``docs/contributing/architecture.md`` has the full table):

- ``graphs``: ``AggregateGraph`` (the facade), its LangGraph state, nodes and topology,
  and the result/trace types.
- ``backends``: the ``Backend`` protocol and ``OpenAIBackend`` (key scoping, adaptive
  concurrency), ``VLLMBackend``, ``EmbeddedBackend``; ``make_backend`` for spec strings.
- ``prompts``: aggregation presets and custom templates; ``budget``: fitting drafts into a
  window, shared by the graph and the trainer.
- ``config``: every setting as a validated model, YAML loading, the sampling-merge rule;
  ``errors``: the ``AftError`` tree.
- ``jsonl`` and ``runner``: the one JSONL reader/writer and the one resumable runner
  under ``batch`` (``run_batch``), ``trainers`` (data building) and ``eval``.
- ``trainers``: AFT rows by source, formatting, ``AggregatorConfig`` and
  ``AggregatorTrainer``; ``eval``: methods at matched compute, tables and plots.
- ``messages``, ``aio`` (``run_sync``), ``redact``: small shared helpers.
- ``cli``: the ``aft`` command; ``testing``: the fault server and model-server launchers.

Heavy parts (LangGraph, engines, training) load on first use, so ``import aft_sdk``
stays light.
"""

from __future__ import annotations

import importlib.metadata as _metadata

from aft_sdk._lazy import lazy_getattr

from typing import TYPE_CHECKING

from aft_sdk.config import (
    AdaptiveConfig,
    BudgetConfig,
    EmbeddedBackendConfig,
    GraphConfig,
    LangChainBackendConfig,
    OpenAIBackendConfig,
    PromptConfig,
    RSAConfig,
    SamplingConfig,
    StructuredConfig,
    ToolsConfig,
    VLLMBackendConfig,
    VoteConfig,
    load_yaml,
)
from aft_sdk.search_config import BeamConfig, ParticleConfig, SearchConfig
from aft_sdk.errors import (
    AftError,
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    ConfigError,
    GraphError,
    GraphTimeoutError,
    InsufficientProposalsError,
    MalformedResponseError,
    ModelNotFoundError,
    PartialGenerationError,
    RateLimitError,
    ServerError,
    StructuredOutputError,
    TrainingError,
)
from aft_sdk.plugins import BackendKind
from aft_sdk.prompts import PRESETS, PromptTemplate, get_template

try:  # one source of the version: pyproject.toml, through the install's metadata
    __version__ = _metadata.version("aft-sdk")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "unknown"

if TYPE_CHECKING:
    from aft_sdk.backends import (
        Backend,
        EmbeddedBackend,
        Generation,
        LangChainBackend,
        OpenAIBackend,
        VLLMBackend,
        default_backend,
        make_backend,
    )
    from aft_sdk.batch import arun_batch, run_batch
    from aft_sdk.record import Recorder
    from aft_sdk.graphs import AggregateGraph, AggregateResult, RunContext, create_aggregate_graph
    from aft_sdk.graphs.strategies import Shape, Strategy
    from aft_sdk.tools import CallOptions

_LAZY = {
    "Backend": "aft_sdk.backends",
    "Generation": "aft_sdk.backends",
    "OpenAIBackend": "aft_sdk.backends",
    "VLLMBackend": "aft_sdk.backends",
    "EmbeddedBackend": "aft_sdk.backends",
    "LangChainBackend": "aft_sdk.backends",
    "Strategy": "aft_sdk.graphs.strategies",
    "Shape": "aft_sdk.graphs.strategies",
    "CallOptions": "aft_sdk.tools",
    "default_backend": "aft_sdk.backends",
    "make_backend": "aft_sdk.backends",
    "AggregateGraph": "aft_sdk.graphs",
    "AggregateResult": "aft_sdk.graphs",
    "create_aggregate_graph": "aft_sdk.graphs",
    "RunContext": "aft_sdk.graphs",
    "run_batch": "aft_sdk.batch",
    "Recorder": "aft_sdk.record",
    "arun_batch": "aft_sdk.batch",
}

__all__ = [
    "PRESETS",
    "AdaptiveConfig",
    "AftError",
    "AggregateGraph",
    "AggregateResult",
    "AuthenticationError",
    "Backend",
    "BackendConnectionError",
    "BackendError",
    "BackendKind",
    "BackendStatusError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadRequestError",
    "BudgetConfig",
    "CallOptions",
    "ConfigError",
    "EmbeddedBackend",
    "EmbeddedBackendConfig",
    "Generation",
    "GraphConfig",
    "GraphError",
    "GraphTimeoutError",
    "InsufficientProposalsError",
    "LangChainBackend",
    "LangChainBackendConfig",
    "MalformedResponseError",
    "ModelNotFoundError",
    "OpenAIBackend",
    "OpenAIBackendConfig",
    "PartialGenerationError",
    "PromptConfig",
    "PromptTemplate",
    "RSAConfig",
    "BeamConfig",
    "ParticleConfig",
    "SearchConfig",
    "RateLimitError",
    "Recorder",
    "RunContext",
    "SamplingConfig",
    "ServerError",
    "Shape",
    "Strategy",
    "StructuredConfig",
    "StructuredOutputError",
    "ToolsConfig",
    "TrainingError",
    "VLLMBackend",
    "VLLMBackendConfig",
    "VoteConfig",
    "arun_batch",
    "create_aggregate_graph",
    "default_backend",
    "get_template",
    "load_yaml",
    "make_backend",
    "run_batch",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
