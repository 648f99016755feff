"""Does one gene change robustness? Paired differences of a variant against its base under the same seeds.

An ablation evaluates a base genome and each one-gene neighbour under the same ``k`` seeds. Seed ``s``
fixes what a seed fixes for both (student initialisation and batch order stand-alone; the evaluation
sample with the supernet), so ``d_s = metric(variant, s) - metric(base, s)`` cancels the part of the
noise the two share. The mean of ``d`` gets a Student-t interval with ``k - 1`` degrees of freedom; the
verdict is "changes it" when the interval excludes 0, else "within noise". The base's own seed standard
deviation is the noise floor a reader compares the differences with.

Only pure statistics live here (no store, no model), so the tests check them by hand.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rosearch.errors import UserError

CHANGES = "changes it"
WITHIN_NOISE = "within noise"
TOO_FEW = "too few seeds"  # fewer than 2 paired seeds: no interval
ABLATION_FILES = ("ablation.csv", "ablation.json")


class AblationError(UserError, ValueError):
    """The figures cannot be paired (different seeds, a missing metric)."""


@dataclass(frozen=True)
class PairedEffect:
    """Mean paired difference ``variant - base`` over the shared seeds, with its t-interval."""

    n: int  # paired seeds
    mean: float
    sd: float  # sample sd of the differences (ddof=1); NaN with one seed
    half_width: float  # t(1 - alpha/2, n - 1) * sd / sqrt(n)
    low: float
    high: float
    verdict: str  # CHANGES | WITHIN_NOISE | TOO_FEW


def sample_sd(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1): the seed noise of one genome; NaN for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def t_quantile(probability: float, df: int) -> float:
    """The Student-t quantile (scipy), e.g. ``t_quantile(0.975, 2) = 4.303``."""
    from scipy.stats import t  # lazy: scipy only for analysis

    return float(t.ppf(probability, df))


def paired_effect(base: Sequence[float], variant: Sequence[float], confidence: float = 0.95) -> PairedEffect:
    """The paired difference of ``variant`` against ``base`` (same order = same seed)."""
    if len(base) != len(variant):
        raise AblationError(f"paired figures need one value per seed on both sides, got {len(base)} base and "
                            f"{len(variant)} variant values")
    if not 0 < confidence < 1:
        raise AblationError(f"confidence must lie between 0 and 1, got {confidence}")
    diffs = [v - b for b, v in zip(base, variant)]
    n = len(diffs)
    if n == 0:
        return PairedEffect(0, math.nan, math.nan, math.nan, math.nan, math.nan, TOO_FEW)
    mean = sum(diffs) / n
    if n < 2:
        return PairedEffect(n, mean, math.nan, math.nan, math.nan, math.nan, TOO_FEW)
    sd = sample_sd(diffs)
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = CHANGES if low > 0 or high < 0 else WITHIN_NOISE
    return PairedEffect(n, mean, sd, half, low, high, verdict)


def paired_figures(base: Mapping[int, float], variant: Mapping[int, float]) -> tuple[list[float], list[float]]:
    """The values of the seeds both sides have (by seed), in seed order; NaN figures left out."""
    seeds = sorted(s for s in set(base) & set(variant) if _finite(base[s]) and _finite(variant[s]))
    return [base[s] for s in seeds], [variant[s] for s in seeds]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class AblationRow:
    """One line of the ablation table: a neighbour, or one that was skipped (``skipped`` says why)."""

    gene: str
    change: str
    genome_hash: str
    seeds: int  # paired seeds that entered the statistics
    metric: str  # the figure compared (e.g. robust_accuracy)
    base_mean: float
    base_sd: float  # the noise floor: the base's seed standard deviation
    variant_mean: float
    mean_diff: float
    ci_low: float
    ci_high: float
    verdict: str
    skipped: str = ""  # why it was not evaluated (over the parameter budget, ...) or has no figures


def effect_rows(gene: str, change: str, genome_hash: str, metric: str, base: Mapping[int, float],
                variant: Mapping[int, float], confidence: float = 0.95) -> AblationRow:
    """The table row of one neighbour on one metric (``base``/``variant``: seed -> figure)."""
    b, v = paired_figures(base, variant)
    effect = paired_effect(b, v, confidence)
    base_values = [x for x in base.values() if _finite(x)]
    return AblationRow(
        gene=gene, change=change, genome_hash=genome_hash, seeds=effect.n, metric=metric,
        base_mean=sum(base_values) / len(base_values) if base_values else math.nan, base_sd=sample_sd(base_values),
        variant_mean=sum(v) / len(v) if v else math.nan, mean_diff=effect.mean, ci_low=effect.low,
        ci_high=effect.high, verdict=effect.verdict, skipped="" if effect.n else "no finished seed to pair",
    )


def skipped_row(gene: str, change: str, metric: str, reason: str) -> AblationRow:
    """A neighbour that was not evaluated, with the reason."""
    nan = math.nan
    return AblationRow(gene, change, "", 0, metric, nan, nan, nan, nan, nan, nan, "skipped", reason)


def write_ablation(run_dir: Path, rows: Sequence[AblationRow], header: Mapping[str, Any]) -> list[Path]:
    """``ablation.csv`` (one row per neighbour and metric) and ``ablation.json`` (the same plus ``header``)."""
    csv_path, json_path = (run_dir / name for name in ABLATION_FILES)
    fields = list(AblationRow.__dataclass_fields__)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    plain = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(r).items()}
             for r in rows]
    json_path.write_text(json.dumps(dict(header) | {"rows": plain}, indent=2), encoding="utf-8")
    return [csv_path, json_path]
