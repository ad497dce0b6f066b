"""What a generation cost, in US dollars.

A backend's own price (``price`` in its config: dollars per million input, cached input
and output tokens, for a self-hosted or fine-tuned model, or to override the database) wins;
otherwise an ``OpenAIBackend`` or a LangChain model is priced from ``genai-prices``
(maintained by Pydantic, updated with each provider's published rates), by its model id
and its provider (``price_provider``, else found from ``base_url``: api.openai.com,
api.together.xyz, ...). A model the database does not know, or a server on a local or
private address with no ``price`` of its own, has no price: its cost is unknown, never 0
(:attr:`~aft_sdk.graphs.Usage.unpriced` names it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import threading
from typing import Any

from aft_sdk.backend_config import ModelPrice
from aft_sdk.redact import redact_url

logger = logging.getLogger(__name__)


def priced(price: ModelPrice, prompt_tokens: int, completion_tokens: int,
           cached_tokens: int = 0) -> float:
    """Dollars for these tokens at ``price`` (per million); ``cached_tokens`` of the
    prompt at its cached-input rate (the input rate where it has none)."""
    cached = min(cached_tokens, prompt_tokens)
    rate = price.input if price.cached_input is None else price.cached_input
    return ((prompt_tokens - cached) * price.input + cached * rate
            + completion_tokens * price.output) / 1e6


def looked_up(model: str, prompt_tokens: int, completion_tokens: int, *,
              provider: str | None = None, url: str | None = None,
              cached_tokens: int = 0) -> float | None:
    """Dollars from the price database; ``None`` where it knows no price for the model at
    that provider (or the ``genai-prices`` package is not installed)."""
    if not model or not (provider or url) or not _known(model, provider, url):
        return None
    from genai_prices import Usage, calc_price

    usage = Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                  cache_read_tokens=min(cached_tokens, prompt_tokens) or None)
    return float(calc_price(usage, model_ref=model, **_where(provider, url)).total_price)


def _where(provider: str | None, url: str | None) -> dict[str, str]:
    return {"provider_id": provider} if provider else {"provider_api_url": url or ""}


@functools.lru_cache(maxsize=512)
def _known(model: str, provider: str | None, url: str | None) -> bool:
    """Whether the database prices ``model`` there (asked once per model and place: a
    miss scans every provider)."""
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a dependency; kept optional for slim installs
        return False
    try:
        calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=model,
                   **_where(provider, url))
    except LookupError:
        logger.info("no price known for %s (%s): its cost is unknown; set price in its "
                    "backend config", model, provider or redact_url(url or ""))
        return False
    return True


_warming: threading.Thread | None = None


def warm() -> None:
    """Imports the price database in a background thread, once per process (about 0.4 s
    of import that would otherwise stall the event loop at the first priced call)."""
    global _warming
    if _warming is None:
        def load() -> None:
            with contextlib.suppress(ImportError):
                importlib.import_module("genai_prices")

        _warming = threading.Thread(target=load, name="aft-price-database", daemon=True)
        _warming.start()


def cost_of(backend: Any, gen: Any) -> float | None:
    """What ``gen`` (a :class:`~aft_sdk.backends.Generation` of ``backend``) cost; ``None``
    when nothing prices it. A generation that used no tokens cost nothing."""
    return cost_for(backend, gen.prompt_tokens, gen.completion_tokens,
                    cached_tokens=gen.cached_tokens, model=gen.model)


def cost_for(backend: Any, prompt_tokens: int, completion_tokens: int, *,
             cached_tokens: int = 0, model: str = "") -> float | None:
    """What these tokens cost on ``backend`` (its ``model`` unless one is named);
    ``None`` when nothing prices it."""
    if not prompt_tokens and not completion_tokens:
        return 0.0
    own = getattr(backend, "price", None)
    if own is not None:
        return priced(own, prompt_tokens, completion_tokens, cached_tokens)
    # Looked up where the backend names a provider, or calls a URL (OpenAI-compatible).
    provider = getattr(backend, "price_provider", None)
    url = None if provider else getattr(backend, "base_url", None)
    for name in dict.fromkeys((model or backend.model, backend.model)):
        # The server's name for the model (a dated snapshot) first, then the one asked for.
        cost = looked_up(name, prompt_tokens, completion_tokens, provider=provider, url=url,
                         cached_tokens=cached_tokens)
        if cost is not None:
            return cost
    return None


def has_price(backend: Any) -> bool:
    """Whether ``backend``'s calls can be priced (its own price, or the database's)."""
    return cost_for(backend, 1, 1) is not None
