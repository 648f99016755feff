"""Does the cheap robustness signal rank students like the real attack does?

The teacher-proxy (accuracy on the teacher's adversarial examples) costs one forward pass; the
real figure (accuracy under the panel's attacks) costs hundreds of queries per example. Wherever
a run has both on some candidates, their rank correlation tells a user whether the cheap signal
can be trusted for selection; the summary, ``rosearch stats`` and the report all quote it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

PROXY_KEY = "proxy_robust_accuracy"
REAL_KEY = "robust_accuracy"


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(float(value))


def spearman(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    """Spearman rho and its two-sided p of paired values; None below 3 pairs or when one side is constant."""
    # lazy: scipy only for the statistics of finished runs
    from scipy.stats import spearmanr

    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    result = spearmanr(xs, ys)
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(xs)}


def proxy_real_agreement(records: Iterable[Any], *, proxy_key: str = PROXY_KEY,
                         real_key: str = REAL_KEY) -> dict[str, Any] | None:
    """Spearman rho, p and n between ``proxy_key`` and ``real_key`` over finished candidates having both.

    ``records`` are store records (with ``status`` and ``metrics``) or plain metric mappings.
    """
    xs: list[float] = []
    ys: list[float] = []
    for record in records:
        if getattr(record, "status", "ok") != "ok":
            continue
        metrics: Mapping[str, Any] = getattr(record, "metrics", record)
        if _finite(metrics.get(proxy_key)) and _finite(metrics.get(real_key)):
            xs.append(float(metrics[proxy_key]))
            ys.append(float(metrics[real_key]))
    result = spearman(xs, ys)
    if result is None:
        return None
    return result | {"proxy": proxy_key, "real": real_key}
