"""Intervals for the architecture effects of `rosearch stats`, and whether each stands above the seed noise.

Two uncertainties, kept apart:

- **which candidates the run happened to evaluate**: every effect gets a percentile bootstrap interval
  (seeded). What is resampled: the finished candidates (rows of the architecture frame), with
  replacement, ``resamples`` times; each resample recomputes the effect. A group that is empty in a
  resample leaves that resample out.
- **how much one genome's figure moves under another seed** (the noise floor): the pooled within-genome
  standard deviation of the repeated evaluations the store holds (``rosearch ablate``, or any repeats of
  a genome under several seeds). A store without repeats has no noise floor, and the tables say
  "no noise floor measured" rather than invent one.

An effect is "above noise" when its whole bootstrap interval lies outside ``[-floor, +floor]`` (it moves
the figure by more than re-seeding one genome does, and not only by the luck of the sample); else it is
"inside noise". Effects in figure units: op statistics, mean with minus mean without; shapes, the mean at
one value minus the mean at the others; correlations, besides rho and its interval, the mean figure of the
candidates above the feature's median minus that of the others (``delta_*``), which is what the floor is
compared with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rosearch.records.store import RepeatRecord

if TYPE_CHECKING:
    import pandas

NO_FLOOR = "no noise floor measured"
INSIDE = "inside noise"
ABOVE = "above noise"
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
TARGETS = ("accuracy", "robustness")
_OP_COLUMNS = {"defense": "defenses", "training": "training", "family": "op_families", "label": "op_labels"}


@dataclass(frozen=True)
class NoiseFloor:
    """The pooled seed standard deviation of each figure over the genomes the store holds repeats of."""

    sd: Mapping[str, float] = field(default_factory=dict)  # "accuracy" / "robustness" -> pooled seed sd
    keys: Mapping[str, str] = field(default_factory=dict)  # the metric behind each
    genomes: int = 0  # genomes with at least two finished repeats
    evaluations: int = 0  # their finished repeats
    source: str = ""  # what a seed varied (the repeats' noise_source)

    def of(self, target: str) -> float | None:
        value = self.sd.get(target)
        return value if value is not None and math.isfinite(value) else None

    def describe(self) -> str:
        """One line for the command's output and the report."""
        if not self.sd:
            return (f"{NO_FLOOR} (the store holds no genome evaluated under several seeds; "
                    "`rosearch ablate --genes none --seeds 3` measures one)")
        figures = ", ".join(f"{target} ({self.keys[target]}) sd {value:.4f}" for target, value in self.sd.items())
        source = f"; {self.source}" if self.source else ""
        return f"noise floor: {figures}, pooled over {self.genomes} genomes x seeds ({self.evaluations} evaluations){source}"


def noise_floor(repeats: Iterable[RepeatRecord], keys: Mapping[str, str | None]) -> NoiseFloor:
    """Pooled within-genome sd, sqrt(sum (n_g - 1) var_g / sum (n_g - 1)), of each figure in ``keys``."""
    by_genome: dict[str, list[Mapping[str, Any]]] = {}
    sources = set()
    for r in repeats:
        if r.record.status == "ok":
            by_genome.setdefault(r.record.genome_hash, []).append(r.record.metrics)
            if isinstance(r.record.metrics.get("noise_source"), str):
                sources.add(r.record.metrics["noise_source"])
    sd: dict[str, float] = {}
    used: dict[str, str] = {}
    genomes = evaluations = 0
    for target, key in keys.items():
        if key is None:
            continue
        squares = dof = 0.0
        counted_genomes = counted = 0
        for metrics in by_genome.values():
            values = [float(m[key]) for m in metrics if _finite(m.get(key))]
            if len(values) >= 2:
                squares += float(np.var(values, ddof=1)) * (len(values) - 1)
                dof += len(values) - 1
                counted_genomes += 1
                counted += len(values)
        if dof:
            sd[target], used[target] = math.sqrt(squares / dof), key
            genomes, evaluations = max(genomes, counted_genomes), max(evaluations, counted)
    return NoiseFloor(sd, used, genomes, evaluations, "; ".join(sorted(sources)))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def verdict(low: float, high: float, floor: float | None) -> str:
    """ABOVE when the interval lies outside [-floor, floor], else INSIDE; NO_FLOOR without a floor."""
    if floor is None:
        return NO_FLOOR
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no interval"
    return ABOVE if low > floor or high < -floor else INSIDE


class Bootstrap:
    """Seeded resamples of the candidates (row indices with replacement), shared by every effect of a table."""

    def __init__(self, n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> None:
        self.resamples, self.seed = resamples, seed
        self.idx = self.indices(n)

    def indices(self, n: int) -> np.ndarray:
        """``resamples`` x ``n`` row indices drawn with replacement (the same for the same n and seed)."""
        return np.random.default_rng([self.seed, n]).integers(0, n, size=(self.resamples, n))

    def difference(self, values: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        """Interval of mean(values[mask]) - mean(values[~mask]) (NaN values left out)."""
        v, m = values[self.idx], mask[self.idx]
        ok = ~np.isnan(v)
        v = np.where(ok, v, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            inside = (v * (m & ok)).sum(axis=1) / (m & ok).sum(axis=1)
            outside = (v * (~m & ok)).sum(axis=1) / (~m & ok).sum(axis=1)
        return _interval(inside - outside)

    def spearman(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Interval of Spearman's rho of (x, y) over the resamples (pairs with a NaN left out first)."""
        from scipy.stats import rankdata  # lazy: scipy only for analysis

        keep = ~(np.isnan(x) | np.isnan(y))
        if keep.sum() < 3:
            return math.nan, math.nan
        idx = self.idx if keep.all() else self.indices(int(keep.sum()))  # a resample of the kept pairs
        rx, ry = rankdata(x[keep][idx], axis=1), rankdata(y[keep][idx], axis=1)
        rx -= rx.mean(axis=1, keepdims=True)
        ry -= ry.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (rx * ry).sum(axis=1) / np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
        return _interval(rho)


def _interval(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return math.nan, math.nan
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _effect_columns(row: dict[str, Any], target: str, effect: float, interval: tuple[float, float],
                    floor: NoiseFloor, name: str = "effect") -> None:
    row[f"{name}_{target}"] = effect
    row[f"{name}_{target}_low"], row[f"{name}_{target}_high"] = interval
    row[f"{target}_vs_noise"] = verdict(*interval, floor.of(target)) if math.isfinite(effect) else "no effect"


def _targets(frame: pandas.DataFrame) -> list[str]:
    return [t for t in TARGETS if t in frame and frame[t].notna().any()]


def with_intervals(frame: pandas.DataFrame, op_stats: pandas.DataFrame, correlations: pandas.DataFrame,
                   shapes: pandas.DataFrame, floor: NoiseFloor, *, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0) -> tuple[pandas.DataFrame, pandas.DataFrame, pandas.DataFrame]:
    """The three effect tables with interval and noise columns added (see the module docstring)."""
    import pandas as pd  # lazy: pandas only for analysis

    boot = Bootstrap(len(frame), resamples, seed)
    targets = _targets(frame)
    values = {t: frame[t].to_numpy(dtype=float) for t in targets}

    def augmented(table: pandas.DataFrame, masks: Sequence[np.ndarray | None], extra=None) -> pandas.DataFrame:
        rows = []
        for (_, row), mask in zip(table.iterrows(), masks):
            out: dict[str, Any] = {}
            for t in targets:
                if mask is None or mask.all() or not mask.any():
                    _effect_columns(out, t, math.nan, (math.nan, math.nan), floor, "delta" if extra else "effect")
                    continue
                v = values[t]
                effect = float(np.nanmean(v[mask]) - np.nanmean(v[~mask])) if (~np.isnan(v[mask])).any() and (
                    ~np.isnan(v[~mask])).any() else math.nan
                _effect_columns(out, t, effect, boot.difference(v, mask), floor, "delta" if extra else "effect")
            if extra:
                out |= extra(row)
            rows.append(out)
        return pd.concat([table.reset_index(drop=True), pd.DataFrame.from_records(rows, index=range(len(table)))],
                         axis=1) if len(table) else table

    op_masks = [frame[_OP_COLUMNS[r.level]].map(lambda ops, op=r.op: op in ops).to_numpy(dtype=bool)
                for r in op_stats.itertuples()]
    shape_masks = [(frame[r.dimension] == r.value).to_numpy(dtype=bool) for r in shapes.itertuples()]

    def median_split(feature: str) -> np.ndarray | None:
        if feature not in frame:
            return None
        x = frame[feature].to_numpy(dtype=float)
        median = np.nanmedian(x) if (~np.isnan(x)).any() else math.nan
        above = x > median
        return above if above.any() else x >= median

    def rho_intervals(row: Any) -> dict[str, float]:
        x = frame[row["feature"]].to_numpy(dtype=float)
        out = {}
        for t in targets:
            out[f"rho_{t}_low"], out[f"rho_{t}_high"] = boot.spearman(x, values[t])
        return out

    correlation_masks = [median_split(feature) for feature in correlations["feature"]] if len(correlations) else []
    return (augmented(op_stats, op_masks), augmented(correlations, correlation_masks, rho_intervals),
            augmented(shapes, shape_masks))
