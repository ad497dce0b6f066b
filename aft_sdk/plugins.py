"""Where strategies come from: the built-in ones, and other packages' entry points.

A strategy is one class on the contract of
:class:`aft_sdk.graphs.strategies.Strategy` (its name, settings, checks, cost and graph
builder). The built-ins are named here as ``"module:Class"``; a package adds one by
declaring an entry point in the group ``aft_sdk.strategies``::

    [project.entry-points."aft_sdk.strategies"]
    best-of-k = "my_package.best_of_k:BestOfK"

and from then on ``GraphConfig(strategy="best-of-k")``, YAML, ``aft run --strategy``,
``aft serve``, Ray workers, LangChain and eval all run it. Nothing is imported until a
strategy is asked for by name, so a broken plug-in fails only where it is used, with
an error that names it, never at ``import aft_sdk``.

This module sits in the lowest layer (the config validates against strategies) and
loads the classes by name, the way entry points do, so it imports nothing above it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aft_sdk.errors import ConfigError

STRATEGY_GROUP = "aft_sdk.strategies"

BUILTIN_STRATEGIES = {
    "propose-aggregate": "aft_sdk.graphs.strategies.propose_aggregate:ProposeAggregate",
    "vote": "aft_sdk.graphs.strategies.vote:Vote",
    "best-of-n": "aft_sdk.graphs.strategies.best_of_n:BestOfN",
    "rsa": "aft_sdk.graphs.strategies.rsa:RSA",
    "beam": "aft_sdk.graphs.strategies.beam:Beam",
    "particle-filtering": "aft_sdk.graphs.strategies.particle_filtering:ParticleFiltering",
}


def _entry_points(group: str) -> dict[str, str]:
    """The group's entry points (read once per ``sys.path``: a scan of every installed
    distribution costs tens of milliseconds, and configs are validated often)."""
    return _scan(group, tuple(sys.path))


@functools.lru_cache(maxsize=16)
def _scan(group: str, path: tuple[str, ...]) -> dict[str, str]:
    return {e.name: e.value for e in importlib.metadata.entry_points(group=group)}


def strategy_targets() -> dict[str, str]:
    """Every strategy name and where it lives (built-ins win over a plug-in's same name)."""
    return {**_entry_points(STRATEGY_GROUP), **BUILTIN_STRATEGIES}


def strategy_names() -> list[str]:
    """The names ``GraphConfig.strategy`` accepts: built-ins first, then plug-ins."""
    return [*BUILTIN_STRATEGIES, *sorted(set(strategy_targets()) - set(BUILTIN_STRATEGIES))]


def plugin_sections(keys: set[str] | None = None) -> set[str]:
    """The settings sections of plug-in strategies (a section is the strategy's name
    with ``-`` as ``_``), or those among ``keys``; nothing is imported to tell."""
    if keys is not None and not keys:
        return set()
    plugins = set(_entry_points(STRATEGY_GROUP)) - set(BUILTIN_STRATEGIES)
    sections = {name.replace("-", "_") for name in plugins}
    return sections if keys is None else keys & sections


def check_strategy_name(name: str) -> str:
    """``name`` if some strategy has it, else a ``ConfigError`` listing those that do."""
    if name not in strategy_targets():
        raise ConfigError(f"unknown strategy {name!r}: use one of {', '.join(strategy_names())} "
                          f"(or install a package that adds it under {STRATEGY_GROUP!r})")
    return name


def get_strategy(name: str) -> Any:
    """The strategy named ``name`` (an instance, loaded once).

    Raises:
        ConfigError: No strategy has that name, or its plug-in cannot be loaded or does
            not keep the contract (the message names the plug-in and what is wrong).
    """
    return _load_strategy(check_strategy_name(name), strategy_targets()[name])


def strategy_settings() -> dict[str, Any]:
    """The registered strategies that have settings of their own, by name, with their
    settings model (a plug-in that cannot load is left out here; it says what is wrong
    where it is used)."""
    found = {}
    for name in strategy_names():
        try:
            model = get_strategy(name).settings
        except Exception:  # noqa: BLE001 - reported by name where the strategy is used
            continue
        if model is not None:
            found[name] = model
    return found


@functools.lru_cache(maxsize=None)
def _load_strategy(name: str, target: str) -> Any:
    where = "built-in" if BUILTIN_STRATEGIES.get(name) == target else "plug-in"
    obj = load_object(target, f"strategy {where} {name!r}")
    strategy = obj() if isinstance(obj, type) else obj
    missing = [m for m in ("own", "shape", "check", "cost", "build")
               if not callable(getattr(strategy, m, None))]
    if missing or getattr(strategy, "name", None) != name:
        problem = (f"it lacks {', '.join(missing)}" if missing else
                   f"its name is {getattr(strategy, 'name', None)!r}, not {name!r}")
        raise ConfigError(f"strategy {where} {name!r} ({target}) does not keep the strategy "
                          f"contract (aft_sdk.graphs.strategies.Strategy): {problem}")
    return strategy


BACKEND_GROUP = "aft_sdk.backends"


@dataclass(frozen=True)
class BackendKind:
    """One kind of backend: what a package declares to add one.

    Attributes:
        kind: The config's ``type`` tag (YAML ``type: KIND``) and the spec prefix
            (``KIND:...`` on the command line).
        config: The pydantic model of its settings, with ``type: Literal[KIND]``.
        backend: ``"module:Class"`` of the backend; the class has
            ``from_config(cfg, sampling=None)``.
        parse: Turns the part of a spec after ``KIND:`` into a config (``None``: the
            kind has no spec form, only YAML and Python).
        forms: The spec forms, for help texts (``"'echo:PREFIX'"``).
    """

    kind: str
    config: type
    backend: str
    parse: Callable[[str], Any] | None = None
    forms: tuple[str, ...] = ()


def backend_plugins() -> dict[str, str]:
    """Plug-in backend kinds and where their :class:`BackendKind` lives."""
    return _entry_points(BACKEND_GROUP)


@functools.lru_cache(maxsize=None)
def get_backend_plugin(kind: str) -> BackendKind:
    """The plug-in backend ``kind``.

    Raises:
        ConfigError: No installed package adds it, or it cannot be loaded, or what its
            entry point names is not a :class:`BackendKind` of that kind.
    """
    targets = backend_plugins()
    if kind not in targets:
        raise ConfigError(f"unknown backend type {kind!r}: use openai, vllm, embedded, "
                          f"langchain, or install a package that adds it under "
                          f"{BACKEND_GROUP!r} (installed: {', '.join(sorted(targets)) or 'none'})")
    entry = load_object(targets[kind], f"backend plug-in {kind!r}")
    if not isinstance(entry, BackendKind) or entry.kind != kind:
        raise ConfigError(f"backend plug-in {kind!r} ({targets[kind]}) must name a "
                          f"aft_sdk.plugins.BackendKind with kind={kind!r}")
    return entry


def load_object(target: str, what: str) -> Any:
    """The object at ``"module:attr"``; a ``ConfigError`` naming ``what`` if it fails."""
    try:
        module, _, attr = target.partition(":")
        obj = importlib.import_module(module)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        return obj
    except Exception as e:  # a plug-in's import may raise anything: name it
        raise ConfigError(f"{what} ({target}) cannot be loaded: {type(e).__name__}: {e}") from e
