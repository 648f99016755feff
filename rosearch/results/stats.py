"""Which architectures go with robustness and accuracy: one table per question, from a run's store.

Every finished candidate becomes one row of :func:`architecture_frame`: features read off its
genome (shapes, cell wiring, operation families, kernels, activations) next to its measured
metrics and its rank in the run's own selection order. The other functions aggregate that frame:
:func:`op_statistics` (is an operation over-represented among the top students, and do students
with it score higher?), :func:`feature_correlations` (Spearman, since features are counts and
shares with no reason to act linearly) and :func:`shape_effects` (per width, depth, embedding).

Robustness: a run compares candidates on one figure (see :mod:`rosearch.evaluate.fitness`), and
statistics must too, so one key is chosen per run: ``robust_accuracy`` (accuracy under the full
attack) when every candidate has it, else ``proxy_robust_accuracy`` (accuracy on the teacher's
adversarial examples) when candidates have that, else ``robust_accuracy`` on the subset that was
attacked. Mixing the two per row would compare numbers on different scales. A run with neither is
analysed on accuracy and fitness only; its robustness columns are NaN. With a panel of attack
recipes ``robust_accuracy`` is their mean; each recipe's ``attack.<recipe>.accuracy_under_attack``
is a column too, and :func:`attack_figures` summarises every real figure (and the proxy) side by
side, with the proxy's rank agreement with the real attack.

Accuracy is the figure the run selected on: ``val_accuracy`` (the validation slice) when the
candidates have it, else ``dev_accuracy`` (``data.validation_size=0``).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rosearch.defense.names import DEFENSE_NAMES
from rosearch.choices import DISTILL_METHOD_NAMES
from rosearch.errors import UserError
from rosearch.records.agreement import proxy_real_agreement, spearman
from rosearch.records.ranking import ranked, selection_weights
from rosearch.records.store import CandidateRecord, ResultStore, ResultStoreError
from rosearch.files.rundir import RESULTS_FILE, RUN_INFO_FILE, SUMMARY_FILE
from rosearch.search_space import labels
from rosearch.search_space.genome import CellSpec, Genome

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

ROBUSTNESS_KEYS = ("robust_accuracy", "proxy_robust_accuracy")
# the CSV tables `rosearch stats` writes (the last one only for runs with attack figures); a --out folder
# holding anything else is not the tool's own and is refused (rosearch.files.outputs)
STATS_FILES = ("architectures.csv", "op_statistics.csv", "feature_correlations.csv", "shape_effects.csv",
               "attack_figures.csv")
CONVOLUTION_FAMILIES = ("conv", "sepconv", "dilconv", "glu")
SHAPE_COLUMNS = ("hidden_size", "embedding_size", "num_layers")
# metrics copied from each candidate's record (absent ones are NaN)
METRIC_COLUMNS = (
    "val_accuracy", "dev_accuracy", "val_f1", "dev_f1", "robust_accuracy", "proxy_robust_accuracy", "attack_success_rate", "perturbed_word_pct", "attack_queries",
    "clean_accuracy_attacked_sample", "params", "flops", "latency_ms_b1", "latency_ms_b32", "train_seconds",
    "distill_steps",  # successive halving: the KD step budget the figures were measured at (NaN: the run's full budget)
)
COST_FEATURES = ("params", "flops", "latency_ms_b1")


class RunDirError(ResultStoreError):
    """A path given for analysis is not a run directory with results (or holds no finished candidate)."""


class StatsError(UserError, ValueError):
    """A statistics argument is impossible (e.g. a non-positive top-k)."""


# --------------------------------------------------------------------------------------------
# Opening a run
# --------------------------------------------------------------------------------------------


def results_path(run_dir: str | Path) -> Path:
    """The results file of ``run_dir`` (a run directory or the ``results.sqlite`` inside one)."""
    path = Path(run_dir)
    candidate = path if path.suffix == ".sqlite" else path / RESULTS_FILE
    if not candidate.is_file():
        raise RunDirError(
            f"no {RESULTS_FILE} at {candidate}; pass a run directory that a search wrote (e.g. runs/<run.name>)"
        )
    return candidate


def open_store(run_dir: str | Path) -> ResultStore:
    """The run's store, read-only (safe while the search is still writing to it)."""
    return ResultStore(results_path(run_dir), read_only=True)


def ranked_records(store: ResultStore) -> list[CandidateRecord]:
    """Finished candidates, best first, in the order the search itself ranks them
    (:func:`rosearch.records.ranking.ranked`, with the weights of the stored run)."""
    ok = [r for r in store.candidates() if r.status == "ok" and r.objectives is not None]
    if not ok:
        return []
    return ranked(ok, selection_weights(store.run_config(), len(ok[0].objectives)))


def choose_robustness_key(records: Iterable[CandidateRecord]) -> str | None:
    """The run-wide robustness metric (see the module docstring), or None when there is none."""
    records = list(records)
    counts = {key: sum(_is_number(r.metrics.get(key)) for r in records) for key in ROBUSTNESS_KEYS}
    if records and counts["robust_accuracy"] == len(records):
        return "robust_accuracy"
    for key in recipe_columns(records):  # multi-fidelity: one cheap recipe on every candidate
        if all(_is_number(r.metrics.get(key)) for r in records):
            return key
    if counts["proxy_robust_accuracy"]:
        return "proxy_robust_accuracy"
    if counts["robust_accuracy"]:
        return "robust_accuracy"
    return None


def recipe_columns(records: Iterable[CandidateRecord]) -> list[str]:
    """The per-recipe accuracy-under-attack keys the records carry, in first-seen order."""
    keys: dict[str, None] = {}
    for r in records:
        keys |= {k: None for k in r.metrics if k.startswith("attack.") and k.endswith(".accuracy_under_attack")}
    return list(keys)


def accuracy_key(records: Iterable[CandidateRecord]) -> str:
    """The accuracy the run selected on: the validation slice when candidates have it, else dev."""
    records = list(records)
    return "val_accuracy" if records and all(_is_number(r.metrics.get("val_accuracy")) for r in records) else "dev_accuracy"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


# --------------------------------------------------------------------------------------------
# Genome features
# --------------------------------------------------------------------------------------------


def node_depths(cell: CellSpec) -> list[int]:
    """Each node's topological depth: edges on the longest path from the input to it."""
    depth = [0] * cell.num_nodes
    for j in range(1, cell.num_nodes):  # node order is a topological order
        depth[j] = 1 + max(depth[i] for i in cell.predecessors(j))
    return depth


def cell_depth(cell: CellSpec) -> int:
    """Edges on the longest input -> output path."""
    return node_depths(cell)[-1]


def genome_features(genome: Genome) -> dict[str, Any]:
    """Numeric architecture features of one genome, plus its op labels and families (tuples)."""
    cells = genome.cells
    ops = [op for cell in cells for op in cell.ops[1:-1]]
    specs = [labels.parse_op(op) for op in ops]
    families = Counter(spec.family for spec in specs)
    n_ops = len(ops)
    share = (lambda count: count / n_ops) if n_ops else (lambda count: math.nan)  # noqa: E731
    kernels = [spec.kernel for spec in specs if spec.kernel is not None]
    heads = [spec.heads for spec in specs if spec.heads is not None]
    activations = Counter(spec.activation for spec in specs if spec.activation is not None)
    row: dict[str, Any] = {
        "hidden_size": genome.hidden_size,
        "embedding_size": genome.embedding_size,
        "num_layers": genome.num_layers,
        "op_nodes": n_ops,
        "op_nodes_per_cell": n_ops / len(cells),
        "edges_per_cell": sum(cell.num_edges for cell in cells) / len(cells),
        "max_in_degree": max(max(sum(row[j] for row in cell.matrix) for j in range(cell.num_nodes)) for cell in cells),
        "max_out_degree": max(max(sum(row) for row in cell.matrix) for cell in cells),
        "cell_depth": sum(cell_depth(cell) for cell in cells) / len(cells),
        "skip_cells": sum(cell.matrix[0][-1] for cell in cells) / len(cells),  # share of cells with input -> output
        "attention_share": share(families["attn"]),
        "convolution_share": share(sum(families[f] for f in CONVOLUTION_FAMILIES)),
        "kernel_mean": sum(kernels) / len(kernels) if kernels else math.nan,
        "kernel_max": max(kernels) if kernels else math.nan,
        "heads_mean": sum(heads) / len(heads) if heads else math.nan,
    }
    for family in labels.OP_FAMILIES:
        row[f"n_{family}"] = families[family]
        row[f"share_{family}"] = share(families[family])
    for kernel, count in sorted(Counter(kernels).items()):
        row[f"n_kernel_{kernel}"] = count
    for activation in labels.ACTIVATIONS:
        row[f"n_act_{activation}"] = activations[activation]
    for name in DEFENSE_NAMES:
        row[f"defense_{name}"] = int(name in genome.defenses)
    for name in DISTILL_METHOD_NAMES:
        row[f"training_{name}"] = int(name in genome.training)
    row["op_labels"] = tuple(ops)
    row["op_families"] = tuple(spec.family for spec in specs)
    row["defenses"] = genome.defenses
    row["training"] = genome.training
    return row


# --------------------------------------------------------------------------------------------
# The frame
# --------------------------------------------------------------------------------------------


def architecture_frame(store_or_run_dir: ResultStore | str | Path) -> pandas.DataFrame:
    """One row per finished candidate, best first: rank, genome features, metrics.

    ``rank`` is the position in the run's selection order (1 = best); ``accuracy`` is the dev
    accuracy; ``robustness`` is the run-wide robustness metric named in ``robustness_key``
    (NaN everywhere when the run measured none); ``fitness`` is the weighted fitness (NaN in
    NSGA-II mode, whose ``objectives`` are kept as a list). Kernel-count columns exist for the
    kernel sizes that occur in the run.
    """
    # lazy: pandas only for analysis; the store and the search driver work without it
    import pandas as pd

    if isinstance(store_or_run_dir, ResultStore):
        return _frame(store_or_run_dir, pd)
    with open_store(store_or_run_dir) as store:
        return _frame(store, pd)


def _frame(store: ResultStore, pd: Any) -> pandas.DataFrame:
    records = ranked_records(store)
    key = choose_robustness_key(records)
    accuracy = accuracy_key(records)
    recipes = recipe_columns(records)
    rows = []
    for rank, record in enumerate(records, start=1):
        m = record.metrics
        row: dict[str, Any] = {
            "rank": rank, "genome_hash": record.genome_hash, "generation": record.generation,
            "accuracy": _number(m.get(accuracy)),
            "accuracy_key": accuracy,
            "robustness": _number(m.get(key)) if key else math.nan,
            "robustness_key": key,
            "fitness": _number(record.fitness),
            "objectives": list(record.objectives),
        }
        row |= {name: _number(m.get(name)) for name in METRIC_COLUMNS}
        row |= {name: _number(m.get(name)) for name in recipes}
        row |= genome_features(Genome.from_json(record.genome_json))
        rows.append(row)
    frame = pd.DataFrame.from_records(rows)
    if frame.empty:
        return frame
    kernel_columns = sorted((c for c in frame.columns if c.startswith("n_kernel_")), key=lambda c: int(c[9:]))
    frame[kernel_columns] = frame[kernel_columns].fillna(0).astype(int)
    ordered = [c for c in frame.columns if not c.startswith("n_kernel_")]
    at = ordered.index("kernel_max") + 1
    return frame[ordered[:at] + kernel_columns + ordered[at:]]


def has_robustness(frame: pandas.DataFrame) -> bool:
    return "robustness" in frame and bool(frame["robustness"].notna().any())


def robustness_key(frame: pandas.DataFrame) -> str | None:
    """The metric behind the frame's ``robustness`` column, or None."""
    if frame.empty or "robustness_key" not in frame:
        return None
    value = frame["robustness_key"].iloc[0]
    return value if isinstance(value, str) else None


def feature_columns(frame: pandas.DataFrame) -> list[str]:
    """The numeric architecture features (no metrics, no identifiers) of ``frame``, in order."""
    skip = {"rank", "generation", "accuracy", "robustness", "fitness", *METRIC_COLUMNS}
    numeric = frame.select_dtypes("number").columns
    return [c for c in numeric if c not in skip]


def _check_frame(frame: pandas.DataFrame, what: str) -> None:
    if frame.empty:
        raise RunDirError(f"{what}: the run has no finished candidate to analyse (wait for the search, or check its errors)")


# --------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------


def _check_top_k(top_k: int, n: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise StatsError(f"top_k must be a positive integer, got {top_k!r}")
    if top_k > n:
        logger.info("top-k %d is more than the %d finished candidates; using all of them", top_k, n)
    return min(top_k, n)


def _mean(values: pandas.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else math.nan


def op_statistics(frame: pandas.DataFrame, top_k: int) -> pandas.DataFrame:
    """Per input defense, robust-training method (the training gene), op family and full op label: how
    common among the top-k vs all, and what it goes with (defenses and training methods are reported
    like ops, so their effect reads next to the architecture's).

    Columns: ``level`` (defense | training | family | label), ``op``, ``n_with`` / ``n_without`` (candidates that
    contain / lack it), ``top_k_with`` and ``top_k_frac`` (of the top-k), ``all_frac``,
    ``top_k_node_share`` / ``all_node_share`` (share of all op nodes), then mean accuracy,
    robustness and fitness of candidates with vs without it. Sorted by level, then by how much
    more often it appears among the top-k than overall.
    """
    # lazy: pandas only for analysis; the store and the search driver work without it
    import pandas as pd

    _check_frame(frame, "op_statistics")
    k = _check_top_k(top_k, len(frame))
    top = frame["rank"] <= k
    rows = []
    levels = tuple((level, column) for level, column in (("defense", "defenses"), ("training", "training"))
                   if column in frame and any(frame[column].map(len)))
    for level, column in (*levels, ("family", "op_families"), ("label", "op_labels")):
        nodes_all = Counter(chain.from_iterable(frame[column]))
        nodes_top = Counter(chain.from_iterable(frame.loc[top, column]))
        total_all, total_top = sum(nodes_all.values()), sum(nodes_top.values())
        for op in sorted(nodes_all):
            has = frame[column].map(lambda ops, op=op: op in ops)
            row: dict[str, Any] = {
                "level": level, "op": op, "n_with": int(has.sum()), "n_without": int((~has).sum()),
                "top_k_with": int((has & top).sum()), "top_k_frac": float((has & top).sum() / k),
                "all_frac": float(has.mean()),
                "top_k_node_share": nodes_top[op] / total_top if total_top else math.nan,
                "all_node_share": nodes_all[op] / total_all if total_all else math.nan,
            }
            for metric in ("accuracy", "robustness", "fitness"):
                row[f"mean_{metric}_with"] = _mean(frame.loc[has, metric])
                row[f"mean_{metric}_without"] = _mean(frame.loc[~has, metric])
            rows.append(row)
    table = pd.DataFrame.from_records(rows)
    table["enrichment"] = table["top_k_frac"] - table["all_frac"]
    table["level_order"] = table["level"].map({"defense": -2, "training": -1, "family": 0, "label": 1})
    table = table.sort_values(["level_order", "enrichment", "n_with", "op"], ascending=[True, False, False, True])
    return table.drop(columns="level_order").reset_index(drop=True)


def feature_correlations(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Spearman rho and p of each numeric feature (and cost) with accuracy and with robustness.

    A feature that is constant over the run (or over fewer than 3 candidates) has no rank
    correlation: rho and p are NaN. Sorted by |rho| with robustness when the run has it, else
    with accuracy.
    """
    # lazy: pandas only for analysis; the store and the search driver work without it
    import pandas as pd
    from scipy.stats import ConstantInputWarning, spearmanr

    _check_frame(frame, "feature_correlations")
    targets = ("accuracy", "robustness")
    rows = []
    for feature in [*feature_columns(frame), *COST_FEATURES]:
        if feature not in frame:
            continue
        row: dict[str, Any] = {"feature": feature}
        for target in targets:
            pair = frame[[feature, target]].dropna()
            rho = p = math.nan
            if len(pair) >= 3 and pair[feature].nunique() > 1 and pair[target].nunique() > 1:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConstantInputWarning)
                    result = spearmanr(pair[feature], pair[target])
                rho, p = float(result.statistic), float(result.pvalue)
            row |= {f"n_{target}": len(pair), f"rho_{target}": rho, f"p_{target}": p}
        rows.append(row)
    table = pd.DataFrame.from_records(rows)
    by = "rho_robustness" if has_robustness(frame) else "rho_accuracy"
    order = table[by].abs().fillna(-1.0)
    return table.iloc[order.sort_values(ascending=False, kind="stable").index].reset_index(drop=True)


def shape_effects(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Mean and best accuracy / robustness / fitness per hidden size, embedding size and depth."""
    # lazy: pandas only for analysis; the store and the search driver work without it
    import pandas as pd

    _check_frame(frame, "shape_effects")
    rows = []
    for dimension in SHAPE_COLUMNS:
        for value, group in frame.groupby(dimension, sort=True):
            rows.append({
                "dimension": dimension, "value": int(value), "n": len(group),
                "mean_accuracy": _mean(group["accuracy"]), "max_accuracy": float(group["accuracy"].max()),
                "mean_robustness": _mean(group["robustness"]),
                "max_robustness": float(group["robustness"].max()) if group["robustness"].notna().any() else math.nan,
                "mean_fitness": _mean(group["fitness"]), "mean_params": _mean(group["params"]),
                "best_rank": int(group["rank"].min()),
            })
    return pd.DataFrame.from_records(rows)


# --------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsReport:
    """All statistics of one run, as computed by :func:`compute_stats`."""

    frame: pandas.DataFrame  # architecture_frame
    op_stats: pandas.DataFrame  # op_statistics
    correlations: pandas.DataFrame  # feature_correlations
    shapes: pandas.DataFrame  # shape_effects
    top_k: int
    robustness_key: str | None  # the metric behind `robustness`; None: the run measured no robustness
    attacks: pandas.DataFrame | None = None  # attack_figures: every robustness figure the run has, side by side
    proxy_vs_real: dict[str, Any] | None = None  # Spearman rho, p, n of proxy vs real robustness

    @property
    def accuracy_key(self) -> str:
        """The metric behind ``accuracy``: ``val_accuracy`` (selection on the validation slice) or ``dev_accuracy``."""
        if self.frame.empty or "accuracy_key" not in self.frame:
            return "dev_accuracy"
        return str(self.frame["accuracy_key"].iloc[0])

    @property
    def top(self) -> pandas.DataFrame:
        """The top-k rows of the frame, best first."""
        return self.frame[self.frame["rank"] <= self.top_k]

    def write_csv(self, out_dir: str | Path) -> list[Path]:
        """Write each table as CSV under ``out_dir``; list columns become JSON / space-joined text."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        frame = self.frame.copy()
        for column in ("op_labels", "op_families", "defenses", "training"):
            if column in frame:
                frame[column] = frame[column].map(" ".join)
        frame["objectives"] = frame["objectives"].map(json.dumps)
        tables = dict(zip(STATS_FILES, (frame, self.op_stats, self.correlations, self.shapes)))
        if self.attacks is not None and not self.attacks.empty:
            tables[STATS_FILES[4]] = self.attacks
        paths = []
        for name, table in tables.items():
            path = out / name
            table.to_csv(path, index=False)
            paths.append(path)
        logger.info("statistics: wrote %s", ", ".join(str(p) for p in paths))
        return paths


def compute_stats(store_or_run_dir: ResultStore | str | Path, top_k: int = 5) -> StatsReport:
    """Every statistics table of a run (top-k by the run's own selection order)."""
    frame = architecture_frame(store_or_run_dir)
    _check_frame(frame, "statistics")
    k = _check_top_k(top_k, len(frame))
    key = robustness_key(frame)
    if key is None:
        logger.info("statistics: the run measured no robustness; analysing accuracy and fitness only")
    records = [_MetricsRow(m) for m in frame.to_dict("records")]
    return StatsReport(
        frame=frame, op_stats=op_statistics(frame, k), correlations=feature_correlations(frame),
        shapes=shape_effects(frame), top_k=k, robustness_key=key, attacks=attack_figures(frame, k, key),
        proxy_vs_real=proxy_real_agreement(records),
    )


@dataclass(frozen=True)
class _MetricsRow:
    metrics: Mapping[str, Any]
    status: str = "ok"


def attack_figures(frame: pandas.DataFrame, top_k: int, used: str | None) -> pandas.DataFrame:
    """One row per robustness figure the run has (panel mean, each recipe, proxy).

    Columns: ``figure``, ``used`` (the one the statistics and selection compare), ``n``
    (candidates having it), ``mean_all``, ``mean_top_k``, ``max``, and the Spearman
    ``rho_accuracy``/``p_accuracy`` with the run's accuracy.
    """
    # lazy: pandas only for analysis; the store and the search driver work without it
    import pandas as pd

    figures = ["robust_accuracy", *[c for c in frame.columns if c.startswith("attack.")], "proxy_robust_accuracy"]
    rows = []
    for figure in figures:
        if figure not in frame or not frame[figure].notna().any():
            continue
        have = frame[frame[figure].notna()]
        top = have[have["rank"] <= top_k]
        agreement = spearman(list(have[figure]), list(have["accuracy"]))
        rows.append({
            "figure": figure, "used": figure == used, "n": len(have), "mean_all": _mean(have[figure]),
            "mean_top_k": _mean(top[figure]), "max": float(have[figure].max()),
            "rho_accuracy": agreement["rho"] if agreement else math.nan,
            "p_accuracy": agreement["p"] if agreement else math.nan,
        })
    return pd.DataFrame.from_records(rows, columns=["figure", "used", "n", "mean_all", "mean_top_k", "max",
                                                    "rho_accuracy", "p_accuracy"])


# --------------------------------------------------------------------------------------------
# The run's side files
# --------------------------------------------------------------------------------------------


def read_run_json(run_dir: str | Path, name: str) -> dict[str, Any] | None:
    """A JSON file a search wrote next to its results (``summary.json``, ``run_info.json``), or None."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        logger.warning("%s is not valid JSON (%s); ignoring it", path, exc)
        return None
    return data if isinstance(data, dict) else None


def teacher_reference(run_dir: str | Path) -> dict[str, Any]:
    """The teacher's reference numbers: ``run_info.json``, else what the run's ``summary.json`` holds.

    Keys (absent when unknown): teacher_dir, teacher_dev_accuracy, teacher_params, teacher_flops,
    dev_mean_length, teacher_attack.
    """
    info = read_run_json(run_dir, RUN_INFO_FILE)
    if info is not None:
        return {k: v for k, v in info.items() if v is not None}
    summary = read_run_json(run_dir, SUMMARY_FILE) or {}
    keep = ("teacher_dev_accuracy", "teacher_attack")
    return {k: summary[k] for k in keep if summary.get(k) is not None}
