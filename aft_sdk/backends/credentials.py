"""Which key an OpenAI-compatible backend may send, and to whom.

The rule: ``api_key`` wins, then the variable named by ``api_key_env``; the
environment's ``OPENAI_API_KEY`` goes only to OpenAI's own endpoint, or to the endpoint
the environment names beside it in ``OPENAI_BASE_URL`` (as the ``openai`` client pairs
them) when the backend is given no ``base_url``. Hosts other than
OpenAI's also lose the credentials the ``openai`` client collects from the environment
on its own (organization and project ids, ``OPENAI_CUSTOM_HEADERS``).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from aft_sdk import errors
from aft_sdk.config import OpenAIBackendConfig


def is_openai_endpoint(base_url: str | None) -> bool:
    """Whether ``base_url`` is OpenAI's own API (the only home of ``OPENAI_API_KEY``)."""
    if base_url is None:
        return True
    parts = urlsplit(base_url)
    return parts.scheme == "https" and parts.hostname == "api.openai.com"


def env_base_url() -> str | None:
    """``OPENAI_BASE_URL`` from the environment: where a backend given no ``base_url``
    goes, with the environment's ``OPENAI_API_KEY`` (``None`` when unset or empty)."""
    return os.environ.get("OPENAI_BASE_URL", "").strip().rstrip("/") or None


def resolve_api_key(cfg: OpenAIBackendConfig) -> str | None:
    """The key this backend may send, by the scoping rule.

    ``api_key`` wins, then the variable named by ``api_key_env``. The environment's
    ``OPENAI_API_KEY`` is used only for OpenAI's own endpoint, or for the environment's
    ``OPENAI_BASE_URL`` when ``base_url`` is unset (a server there may need no key): any
    other ``base_url`` gets no key unless the caller names one.

    Raises:
        ConfigError: A named variable is unset, or OpenAI's endpoint has no key.
    """
    if cfg.api_key is not None:
        return cfg.api_key.get_secret_value()
    if cfg.api_key_env is not None:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise errors.ConfigError(
                f"api_key_env names the environment variable {cfg.api_key_env}, which is "
                "not set or empty: export it, or pass api_key=..."
            )
        return key
    if cfg.base_url is None and env_base_url() is not None:
        return os.environ.get("OPENAI_API_KEY") or None
    if is_openai_endpoint(cfg.base_url):
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise errors.ConfigError(
                "no API key for OpenAI: set OPENAI_API_KEY, pass api_key=... or "
                "api_key_env=..., or give base_url=... for a server that needs no key"
            )
        return key
    return None


def scrub_ambient_headers(key: str | None) -> Any:
    """An httpx request hook for hosts other than OpenAI's.

    The openai client adds credentials it finds in the environment (organization and
    project ids, ``OPENAI_CUSTOM_HEADERS``); a third-party host gets only the key the
    caller named for it, or no Authorization header at all.
    """

    async def hook(request: Any) -> None:
        ambient = {"openai-organization", "openai-project", "authorization", "api-key",
                   "x-api-key"}
        for line in os.environ.get("OPENAI_CUSTOM_HEADERS", "").split("\n"):
            ambient.add(line.partition(":")[0].strip().lower())
        for name in list(request.headers):
            if name.lower() in ambient:
                del request.headers[name]
        if key is not None:
            request.headers["authorization"] = f"Bearer {key}"

    return hook
