"""Percentile-bootstrap confidence intervals for per-example figures (accuracy, accuracy under attack).

An accuracy on a few hundred examples moves by several points from one sample to the next, so
every figure the robustness benchmark reports carries an interval: the examples are resampled
with replacement (per example, seeded), the figure is recomputed on each resample, and the
interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of those figures
(Efron & Tibshirani 1993, ch. 13). A difference between two models measured on the *same*
examples is bootstrapped on the per-example differences (a paired bootstrap), which is
narrower than comparing two separate intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


def bootstrap_interval(values: Sequence[float] | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                       level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of ``values`` (one number per example).

    Deterministic for a given ``seed``. Raises ValueError for an empty sample, a non-positive
    number of resamples or a level outside (0, 1).
    """
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"bootstrap resamples must be a positive integer, got {resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // data.size)  # bounds the index matrix's memory for large samples
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_difference_interval(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                               resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                               level: float = DEFAULT_LEVEL) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its paired percentile-bootstrap interval (``a`` and ``b`` per
    example, on the same examples in the same order)."""
    left, right = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if left.shape != right.shape:
        raise ValueError(f"paired figures need the same examples: {left.size} values against {right.size}")
    difference = left - right
    low, high = bootstrap_interval(difference, resamples=resamples, seed=seed, level=level)
    return float(difference.mean()), low, high
