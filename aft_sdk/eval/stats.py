"""Bootstrap confidence intervals for evaluation scores (``scipy.stats.bootstrap``).

Scores are per-item values in [0, 1]; intervals are percentile bootstrap intervals of the
mean, seeded so a table is reproducible. :func:`paired_difference` compares two methods
on the same items (resampling items, not methods), which is what decides whether one
method beats another at a given test size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aft_sdk.errors import ConfigError

RESAMPLES = 2000


def _arrays(*values: Sequence[float]) -> tuple[Any, ...]:
    import numpy as np

    arrays = tuple(np.asarray(v, dtype=float) for v in values)
    if any(a.size == 0 for a in arrays):
        raise ConfigError("a bootstrap interval needs at least one score")
    return arrays


def bootstrap_interval(scores: Sequence[float], *, confidence: float = 0.95,
                       resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """(low, high) percentile bootstrap interval of the mean of ``scores``."""
    import numpy as np
    from scipy.stats import bootstrap

    (x,) = _arrays(scores)
    if np.all(x == x[0]):  # every resample has the same mean
        return float(x[0]), float(x[0])
    r = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=resamples,
                  method="percentile", rng=np.random.default_rng(seed))
    return float(r.confidence_interval.low), float(r.confidence_interval.high)


def paired_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                      resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` over the same items, with its paired bootstrap interval.

    Raises:
        ConfigError: ``a`` and ``b`` differ in length (they must score the same items).
    """
    import numpy as np
    from scipy.stats import bootstrap

    x, y = _arrays(a, b)
    if x.shape != y.shape:
        raise ConfigError(f"paired scores must cover the same items: {x.size} vs {y.size}")
    diff = x - y
    if np.all(diff == diff[0]):
        low = high = float(diff[0])
    else:
        r = bootstrap((x, y), lambda u, v, axis=-1: np.mean(u - v, axis=axis), paired=True,
                      confidence_level=confidence, n_resamples=resamples, method="percentile",
                      rng=np.random.default_rng(seed))
        low, high = float(r.confidence_interval.low), float(r.confidence_interval.high)
    return {"difference": float(diff.mean()), "low": low, "high": high}
