"""``aft serve``: propose-and-aggregate behind an OpenAI-compatible HTTP API.

Needs the ``serve`` extra (``pip install 'aft-sdk[serve]'``: FastAPI and uvicorn)::

    from aft_sdk.serve import create_app, load_configs
    app = create_app(load_configs(["graph.yaml"]))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from aft_sdk.config import GraphConfig, load_yaml
from aft_sdk.errors import ConfigError


def load_configs(paths: Sequence[str | os.PathLike[str]]) -> dict[str, GraphConfig]:
    """Model id -> graph config, for YAML files; the id is ``name:`` or the file stem.

    Raises:
        ConfigError: A file is missing or invalid, or two files claim one model id.
    """
    out: dict[str, GraphConfig] = {}
    for path in paths:
        cfg = load_yaml(path, GraphConfig)
        name = cfg.name or Path(path).stem
        if name in out:
            raise ConfigError(f"two configs serve the model id {name!r}: give one a name: field")
        out[name] = cfg
    return out


def __getattr__(name: str):  # FastAPI loads only when the app is asked for
    if name in ("create_app", "ServeSettings"):
        from aft_sdk.serve import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ServeSettings", "create_app", "load_configs"]
