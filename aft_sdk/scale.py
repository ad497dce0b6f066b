"""Where graphs run: one executor interface, in this process or in Ray actors.

:class:`LocalExecutor` and :class:`RayExecutor` bind a graph (or its config) to where it
runs; batch runs, on-policy data building and evaluation take either (``executor=``) and
keep their own runner, so output, resume and errors are the same both ways.

On Ray, graphs run in Ray actors and the driver keeps one resumable output.

Each actor builds its graph from a :class:`~aft_sdk.config.GraphConfig` (plain data, no
backend objects, no keys), so backends and their API keys come from the workers' own
environment (``runtime_env={"env_vars": ...}`` or the cluster's). The driver reads the
rows, hands them to the actors, and writes every result and error itself through the
shared runner: the same JSONL, ids and error file as a single-process run, with resume
that survives a killed driver and progress on the driver.

``ray`` is an optional extra: ``pip install 'aft-sdk[ray]'``.
"""

from __future__ import annotations

import itertools
import logging
import os
from contextlib import nullcontext
from typing import Any, Protocol

from aft_sdk import errors, lifecycle, tracing
from aft_sdk.config import GraphConfig, load_yaml

logger = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise errors.ConfigError(
            "running on Ray needs the ray extra: pip install 'aft-sdk[ray]'") from e
    return ray


def portable_config(config: GraphConfig | str | os.PathLike[str]) -> GraphConfig:
    """A config that may travel to workers: backends as configs, keys only by name.

    Raises:
        ConfigError: A backend holds a literal ``api_key`` (name its variable with
            ``api_key_env`` and set it in the workers' environment instead).
    """
    cfg = load_yaml(config, GraphConfig) if isinstance(config, (str, os.PathLike)) else config
    backends = [*cfg.proposers, *cfg.aggregator,
                *(b for layer in cfg.layers.values() for b in (layer.backends or []))]
    if any(getattr(b, "api_key", None) is not None for b in backends):
        raise errors.ConfigError(
            "a backend in this graph config holds an api_key; keys never travel to Ray "
            "workers: use api_key_env=VAR and set VAR in the workers' environment "
            "(ray.init(runtime_env={'env_vars': {...}}) or the cluster's)")
    return cfg


class _GraphActor:
    """One graph inside a Ray worker (an async actor: many rows at once)."""

    def __init__(self, config: dict[str, Any]) -> None:
        from aft_sdk.graphs import AggregateGraph

        self.graph = AggregateGraph.from_config(config)
        # The driver's OTEL_* settings (sent as the actor's environment): spans export
        # from here, under the driver's span that the call carries.
        try:
            self.spans = tracing.configure_from_env()
        except ImportError as e:  # the SDK missing on this node: run untraced, say why
            logger.warning("Ray worker: %s; its runs are not traced", e)
            self.spans = None

    async def run(self, messages: list[dict[str, str]], call: dict[str, Any] | None = None,
                  trace_headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            with tracing.continued(tracing.incoming_context(trace_headers or {})):
                result = await self.graph.ainvoke(messages, call=call)
        except errors.AftError as e:  # handed back whole (errors pickle with their fields)
            return {"error": e}
        return {"result": result.model_dump(mode="json")}

    def flush(self) -> None:
        """Exports the spans still queued (before the actor is stopped)."""
        if self.spans is not None:
            self.spans.force_flush()


class Runs(Protocol):
    """A graph bound to where it runs: :meth:`run` one input, :meth:`close` at the end."""

    async def run(self, messages: list[dict[str, Any]],
                  call: dict[str, Any] | None = None) -> Any: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs the graph in this process (the default)."""

    def bind(self, graph: Any) -> Runs:
        """``graph`` (an ``AggregateGraph``, or a ``GraphConfig`` / YAML path to build
        one from) ready to run here."""
        return _Local(_built(graph))


class _Local:
    def __init__(self, graph: Any) -> None:
        self.graph = graph

    async def run(self, messages: list[dict[str, Any]],
                  call: dict[str, Any] | None = None) -> Any:
        return await self.graph.ainvoke(messages, call=call)

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs the graph in Ray actors built from its config; this process keeps the rest.

    Args:
        workers: Actors to start.
        address: A Ray cluster address (default: ``RAY_ADDRESS``, else a local cluster).
        num_gpus: GPUs per actor (a local vLLM engine inside; API backends need none).
    """

    def __init__(self, *, workers: int = 2, address: str | None = None,
                 num_gpus: float = 0) -> None:
        if workers < 1:
            raise errors.ConfigError(f"workers must be >= 1, got {workers}")
        self.workers, self.address, self.num_gpus = workers, address, num_gpus

    def bind(self, graph: Any) -> Runs:
        """Actors for ``graph``: a ``GraphConfig`` or YAML path (never built here, so a
        vLLM graph needs no vLLM on this machine), or an ``AggregateGraph`` built from
        one (its :attr:`config`)."""
        config = graph if isinstance(graph, (GraphConfig, str, os.PathLike)) else graph_source(graph)
        return RayGraphPool(config, workers=self.workers, address=self.address,
                            num_gpus=self.num_gpus)


Executor = LocalExecutor | RayExecutor


def as_executor(executor: Executor | str | None) -> Executor:
    """An executor object from one, or from the names ``"local"`` and ``"ray"``
    (``RayExecutor()`` with its defaults)."""
    if executor is None or executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor()
    if isinstance(executor, (LocalExecutor, RayExecutor)):
        return executor
    raise errors.ConfigError(
        f"executor must be 'local', 'ray', a LocalExecutor or a RayExecutor, got {executor!r}")


def _built(graph: Any) -> Any:
    if isinstance(graph, (GraphConfig, str, os.PathLike)):
        from aft_sdk.graphs import AggregateGraph

        return AggregateGraph.from_config(graph)
    return graph


class RayGraphPool:
    """Ray actors that each run a graph built from ``config`` (see :class:`RayExecutor`).

    Args:
        config: The graph config (or a YAML path); see :func:`portable_config`.
        workers, address, num_gpus: As :class:`RayExecutor`'s.
    """

    def __init__(self, config: GraphConfig | str | os.PathLike[str], *, workers: int = 2,
                 address: str | None = None, num_gpus: float = 0) -> None:
        ray = import_ray()
        data = portable_config(config).model_dump(mode="json")
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            # A local cluster started here ends with this process, however it ends.
            with lifecycle.adopting("Ray local cluster") if not address else nullcontext():
                ray.init(address=address, include_dashboard=False, ignore_reinit_error=True,
                         log_to_driver=False)
        have = ray.cluster_resources().get("GPU", 0)
        if num_gpus and have < num_gpus:
            raise errors.ConfigError(
                f"each actor asks for {num_gpus} GPU but the Ray cluster has {have:g}: join a "
                "cluster with GPU nodes (ray_address / RAY_ADDRESS), or use ray_gpus=0 for "
                "API backends (Ray would otherwise wait for GPUs forever)")
        actor = ray.remote(num_cpus=0, num_gpus=num_gpus)(_GraphActor)
        # Tracing settings travel to the actors (the cluster may predate them).
        self._otel = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
        if self._otel:
            actor = actor.options(runtime_env={"env_vars": self._otel})
        self.actors = [actor.remote(data) for _ in range(workers)]
        self._turn = itertools.cycle(self.actors)

    async def run(self, messages: list[dict[str, Any]],
                  call: dict[str, Any] | None = None) -> Any:
        """Runs one input on the next actor and returns its ``AggregateResult``; an error
        there is raised here, the same error with its fields."""
        from aft_sdk.graphs import AggregateResult

        out = await next(self._turn).run.remote(messages, call, tracing.outgoing_headers())
        if "error" in out:
            raise out["error"]
        return AggregateResult.model_validate(out["result"])

    def close(self) -> None:
        """Stops the actors (the cluster stays up), their queued spans exported first."""
        ray = import_ray()
        if self._otel:
            try:
                # Briefly (this may run on an event loop): what is not out by then is lost.
                ray.get([a.flush.remote() for a in self.actors], timeout=5)
            except Exception as e:  # noqa: BLE001 - a dead actor has nothing to flush
                logger.warning("could not flush the Ray actors' spans: %s", e)
        for a in self.actors:
            ray.kill(a)


def graph_source(graph: Any) -> GraphConfig:
    """The config a graph was built from, or a clear error if it holds live backends."""
    source = getattr(graph, "source", None)
    if source is None:
        raise errors.ConfigError(
            "running on Ray needs a graph built from a config (AggregateGraph.from_config, "
            "or aft batch --config / --proposer specs): backends are built inside the workers")
    return source
