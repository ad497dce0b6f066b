"""What a generation cost, in US dollars.

A backend's own price (``price`` in its config: dollars per million input and output
tokens, for a self-hosted or fine-tuned model, or to override the database) wins;
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


def priced(price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> float:
    """Dollars for these tokens at ``price`` (per million)."""
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1e6


def looked_up(model: str, prompt_tokens: int, completion_tokens: int, *,
              provider: str | None = None, url: str | None = None) -> float | None:
    """Dollars from the price database; ``None`` where it knows no price for the model at
    that provider (or the ``genai-prices`` package is not installed)."""
    if not model or not (provider or url) or not _known(model, provider, url):
        return None
    from genai_prices import Usage, calc_price

    calc = calc_price(Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens),
                      model_ref=model, **_where(provider, url))
    return float(calc.total_price)


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
    if not gen.prompt_tokens and not gen.completion_tokens:
        return 0.0
    own = getattr(backend, "price", None)
    if own is not None:
        return priced(own, gen.prompt_tokens, gen.completion_tokens)
    # Looked up where the backend names a provider, or calls a URL (OpenAI-compatible).
    provider = getattr(backend, "price_provider", None)
    url = None if provider else getattr(backend, "base_url", None)
    return looked_up(gen.model or backend.model, gen.prompt_tokens, gen.completion_tokens,
                     provider=provider, url=url)
