"""Validation with messages that name the field, and YAML loading, for every config.

Validation failures surface as :class:`~aft_sdk.errors.ConfigError` with the dotted field
path and the rule it broke; values that could be secrets are never shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from aft_sdk.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class _ConfigErrors(type(BaseModel)):  # type: ignore[misc]
    """Built by keyword (``GraphConfig(widht=3)``), a config fails as every other config
    input does: a ConfigError naming the field. (A metaclass, not ``__init__``: pydantic
    calls a custom ``__init__`` for nested models too, which would hide their paths.)"""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as e:
            raise ConfigError(describe_validation_error(e, cls.__name__)) from e


class Strict(BaseModel, metaclass=_ConfigErrors):
    """Base of every config: unknown keys are errors (a typo names its field), and
    configs are frozen (shared safely, compared by value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_SECRET_NAME = re.compile(r"key|token|secret|passw|auth|credential|cookie", re.IGNORECASE)


def _shown_value(item: Mapping[str, Any]) -> str:
    """`` (got VALUE)`` for an error, or nothing where the value could be a secret."""
    got = item.get("input")
    names = [str(p) for p in item.get("loc", ())]
    if (
        item.get("type") == "extra_forbidden"  # a misspelt field could hold anything
        or any(_SECRET_NAME.search(n) for n in names)
        or isinstance(got, (dict, list, SecretStr))
    ):
        return ""
    text = repr(got)
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def describe_validation_error(err: ValidationError, source: str) -> str:
    """Turns a pydantic error into one line per bad field, naming the field.

    Values of unknown fields and of fields whose names suggest a secret (``key``,
    ``token``, ``password``, ...) are never shown.
    """
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item.get("type") == "extra_forbidden":
            msg += " (an unknown field: check its spelling; its value is not shown)"
        lines.append(f"  {loc}: {msg}{_shown_value(item)}")
    return f"invalid {source}:\n" + "\n".join(lines)


def validate(model: type[M], data: Any, *, source: str | None = None) -> M:
    """Validates ``data`` into ``model``, raising :class:`ConfigError` that names fields."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, source or model.__name__)) from e


def validate_arguments(model: type[M], arguments: dict[str, Any], *, source: str) -> M:
    """A constructor's keyword arguments (its ``locals()``) validated into its config:
    each of ``model``'s fields is taken by name (paths given as ``os.PathLike`` become
    strings), anything else in ``arguments`` is left out."""
    return validate(model, {
        name: os.fspath(value) if isinstance(value, os.PathLike) else value
        for name, value in arguments.items() if name in model.model_fields}, source=source)


def load_yaml(path: str | os.PathLike[str], model: type[M]) -> M:
    """Reads a YAML file with ``yaml.safe_load`` and validates it into ``model``.

    Raises:
        ConfigError: The file is missing, is not YAML, or a field is invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (check the path)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of settings, got {type(data).__name__}")
    return validate(model, data, source=str(p))
