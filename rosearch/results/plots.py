"""Figures of a run, each returned as PNG bytes (for the HTML report, or to write to a file).

Every figure is a standalone ``matplotlib.figure.Figure`` drawn on its own Agg canvas: nothing
touches pyplot's global figure registry or the process-wide backend, so plotting is safe in a
server, in tests and next to a user's own interactive session.
"""

from __future__ import annotations

import io
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rosearch.results.stats import node_depths
from rosearch.search_space import labels
from rosearch.search_space.genome import CellSpec, Genome

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

DPI = 100
FAMILY_COLOURS: Mapping[str, str] = {
    "attn": "#f4a259", "conv": "#cfe6f3", "sepconv": "#a9cfe8", "dilconv": "#7fb0d6", "glu": "#90be6d",
    "ffn": "#c59fc9", "identity": "#d9d9d9", "maxpool": "#c9a27e", "avgpool": "#e0c3a0",
    labels.INPUT: "#ffffff", labels.OUTPUT: "#ffffff",
}


def _figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot state)."""
    # lazy: matplotlib only when a report draws its plots
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Per generation
# --------------------------------------------------------------------------------------------


def generation_series(generations: Sequence[Mapping[str, Any]], frame: pandas.DataFrame) -> pandas.DataFrame:
    """Best and median per generation of the selection value, accuracy and robustness.

    The selection value comes from the store's generation stats (first objective); accuracy
    and robustness are read off the candidates of each generation's population. Without
    stored generations (an interrupted first generation), candidates are grouped by the
    generation that proposed them.
    """
    # lazy: pandas only for analysis; the store and the search driver work without it
    import pandas as pd

    by_hash = frame.set_index("genome_hash") if not frame.empty else frame
    rows = []
    if generations:
        for entry in generations:
            members = by_hash.loc[by_hash.index.intersection(entry["population"])] if not frame.empty else frame
            stats = entry.get("stats") or {}
            rows.append(_series_row(entry["generation"], members, stats.get("best"), stats.get("median")))
    elif not frame.empty:
        for generation, members in frame.groupby("generation", sort=True):
            first = members["objectives"].map(lambda values: values[0])
            rows.append(_series_row(int(generation), members, float(first.max()), float(first.median())))
    return pd.DataFrame.from_records(rows, columns=[
        "generation", "selection_best", "selection_median", "accuracy_best", "accuracy_median",
        "robustness_best", "robustness_median",
    ])


def _series_row(generation: int, members: pandas.DataFrame, best: float | None, median: float | None) -> dict:
    def stat(column: str, how: str) -> float:
        values = members[column].dropna() if column in members else []
        return float(getattr(values, how)()) if len(values) else math.nan

    return {
        "generation": generation,
        "selection_best": math.nan if best is None else float(best),
        "selection_median": math.nan if median is None else float(median),
        "accuracy_best": stat("accuracy", "max"), "accuracy_median": stat("accuracy", "median"),
        "robustness_best": stat("robustness", "max"), "robustness_median": stat("robustness", "median"),
    }


def generation_plot(series: pandas.DataFrame, *, selection_name: str = "fitness",
                    robustness_name: str | None = None) -> bytes:
    """Two panels over generations: the selection value, and accuracy (+ robustness), best and median."""
    figure = _figure(10, 3.6)
    left, right = figure.subplots(1, 2)
    x = series["generation"].to_numpy()
    left.plot(x, series["selection_best"], "o-", color="#1d3557", label="best")
    left.plot(x, series["selection_median"], "s--", color="#457b9d", label="median")
    left.set_title(f"{selection_name} of the population")
    left.set_ylabel(selection_name)
    right.plot(x, series["accuracy_best"], "o-", color="#2a9d8f", label="accuracy, best")
    right.plot(x, series["accuracy_median"], "s--", color="#2a9d8f", alpha=0.7, label="accuracy, median")
    if robustness_name and series["robustness_best"].notna().any():
        right.plot(x, series["robustness_best"], "o-", color="#e76f51", label=f"{robustness_name}, best")
        right.plot(x, series["robustness_median"], "s--", color="#e76f51", alpha=0.7, label=f"{robustness_name}, median")
        right.set_title("accuracy and robustness of the population")
    else:
        right.set_title("dev accuracy of the population\n(no robustness measured)")
    for ax in (left, right):
        ax.set_xlabel("generation")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(figure)


# --------------------------------------------------------------------------------------------
# Trade-off scatter
# --------------------------------------------------------------------------------------------


def pareto_mask(x: np.ndarray, y: np.ndarray, *, maximize_x: bool = True, maximize_y: bool = True) -> np.ndarray:
    """True for points no other point dominates (at least as good on both, better on one)."""
    sx = np.asarray(x, dtype=float) * (1 if maximize_x else -1)
    sy = np.asarray(y, dtype=float) * (1 if maximize_y else -1)
    mask = np.ones(len(sx), dtype=bool)
    for i in range(len(sx)):
        dominated = (sx >= sx[i]) & (sy >= sy[i]) & ((sx > sx[i]) | (sy > sy[i]))
        mask[i] = not dominated.any()
    return mask


def tradeoff_plot(frame: pandas.DataFrame, *, robustness_name: str | None = None,
                  teacher_accuracy: float | None = None) -> bytes:
    """Accuracy vs robustness (marker area ~ params), or accuracy vs params without robustness.

    The Pareto front is ringed in red and joined by a step line; colour is the generation.
    """
    # lazy: matplotlib only when a report draws its plots
    from matplotlib.ticker import MaxNLocator

    figure = _figure(7.5, 5.2)
    ax = figure.subplots()
    use_robustness = bool(robustness_name) and frame["robustness"].notna().any()
    data = frame.dropna(subset=["accuracy", "robustness"] if use_robustness else ["accuracy", "params"])
    params_m = data["params"].to_numpy(dtype=float) / 1e6
    if use_robustness:
        x, y = data["accuracy"].to_numpy(dtype=float), data["robustness"].to_numpy(dtype=float)
        mask = pareto_mask(x, y)
        span = max(float(np.nanmax(params_m) - np.nanmin(params_m)), 1e-9) if len(params_m) else 1.0
        sizes = 30 + 270 * (params_m - (np.nanmin(params_m) if len(params_m) else 0)) / span
        ax.set_xlabel("dev accuracy")
        ax.set_ylabel(robustness_name)
        ax.set_title("accuracy vs robustness (marker area ~ parameters; red: Pareto front)")
    else:
        x, y = params_m, data["accuracy"].to_numpy(dtype=float)
        mask = pareto_mask(x, y, maximize_x=False)
        sizes = np.full(len(x), 60.0)
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel("dev accuracy")
        ax.set_title("accuracy vs parameters (no robustness measured; red: Pareto front)")
    points = ax.scatter(x, y, s=sizes, c=data["generation"].to_numpy(), cmap="viridis", alpha=0.75,
                        edgecolors="black", linewidths=0.5, zorder=2)
    if len(x):
        ax.scatter(x[mask], y[mask], s=sizes[mask] + 60, facecolors="none", edgecolors="#d62828", linewidths=1.8, zorder=3)
        order = np.argsort(x[mask])
        # the boundary of the dominated region: with both axes maximised it drops before each next point
        ax.step(x[mask][order], y[mask][order], where="pre" if use_robustness else "post", color="#d62828",
                linewidth=1, alpha=0.7, zorder=1)
        best = int(np.argmin(data["rank"].to_numpy()))
        ax.annotate("best", (x[best], y[best]), xytext=(6, 6), textcoords="offset points", fontsize=8)
        colorbar = figure.colorbar(points, ax=ax)
        colorbar.set_label("generation")
        colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if teacher_accuracy is not None and math.isfinite(teacher_accuracy):
        style = dict(color="grey", linestyle=":", linewidth=1)
        if use_robustness:
            ax.axvline(teacher_accuracy, **style)
            ax.text(teacher_accuracy, 0.02, "teacher ", transform=ax.get_xaxis_transform(), fontsize=8, color="grey",
                    va="bottom", ha="right")
        else:
            ax.axhline(teacher_accuracy, **style)
            ax.text(0.01, teacher_accuracy, f"teacher {teacher_accuracy:.3f}", transform=ax.get_yaxis_transform(),
                    fontsize=8, color="grey", va="bottom")
    ax.grid(alpha=0.3)
    return _png(figure)


# --------------------------------------------------------------------------------------------
# Cell drawings
# --------------------------------------------------------------------------------------------


def _node_colour(label: str) -> str:
    if label in (labels.INPUT, labels.OUTPUT):
        return FAMILY_COLOURS[label]
    return FAMILY_COLOURS.get(labels.parse_op(label).family, "#eeeeee")


def _layout(cell: CellSpec) -> list[tuple[float, float]]:
    """(x, y) per node: rows by depth (input on top), nodes of a row centred, spaced 1 apart."""
    depth = node_depths(cell)
    rows: dict[int, list[int]] = {}
    for node, d in enumerate(depth):
        rows.setdefault(d, []).append(node)
    positions = [(0.0, 0.0)] * cell.num_nodes
    for d, nodes in rows.items():
        for k, node in enumerate(nodes):
            positions[node] = (k - (len(nodes) - 1) / 2, -float(d))
    return positions


def _draw_cell(ax: Axes, cell: CellSpec, title: str, width: float) -> None:
    # lazy: matplotlib only when a report draws its plots
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    positions = _layout(cell)
    depth = node_depths(cell)
    box_w, box_h = 0.92, 0.42
    skips = 0  # edges that skip rows, bent alternately left and right so they do not overlap
    boxes = []
    for node, ((x, y), label) in enumerate(zip(positions, cell.ops)):
        box = FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02,rounding_size=0.08",
                             facecolor=_node_colour(label), edgecolor="#333333", linewidth=0.9, zorder=2)
        ax.add_patch(box)
        boxes.append(box)
        weight = "bold" if label in (labels.INPUT, labels.OUTPUT) else "normal"
        ax.text(x, y, label, ha="center", va="center", fontsize=7.5, fontweight=weight, zorder=3)
    for i in range(cell.num_nodes):
        for j in range(i + 1, cell.num_nodes):
            if not cell.matrix[i][j]:
                continue
            (xa, ya), (xb, yb) = positions[i], positions[j]
            rad = 0.0
            if depth[j] - depth[i] > 1:  # it would cross the boxes in between: bend around them
                rad = (-1) ** skips * (0.3 + 0.12 * (skips // 2))
                skips += 1
            ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb), patchA=boxes[i], patchB=boxes[j], arrowstyle="-|>",
                                         mutation_scale=9, connectionstyle=f"arc3,rad={rad}", color="#444444",
                                         linewidth=0.9, zorder=1))
    ax.set_xlim(-width / 2, width / 2)
    ax.set_ylim(-max(depth) - 0.5, 0.5)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def cell_plot(genome: Genome, *, title: str | None = None) -> bytes:
    """One panel per layer: the cell's DAG, layered by topological depth, nodes labelled with their ops."""
    depths = [node_depths(cell) for cell in genome.cells]
    widest = max(max(Counter(d).values()) for d in depths)  # most nodes in one row of one cell
    deepest = max(max(d) for d in depths)
    width = max(widest, 2) + 0.4  # data units: a box is ~0.92 wide
    per_layer = 1.05 * width
    figure = _figure(max(per_layer * genome.num_layers, 4.0), 0.75 * (deepest + 1) + 0.9)
    axes = figure.subplots(1, genome.num_layers, squeeze=False)[0]
    for layer, (ax, cell) in enumerate(zip(axes, genome.cells)):
        _draw_cell(ax, cell, f"layer {layer}", width)
    figure.suptitle(title or f"H={genome.hidden_size}, E={genome.embedding_size}, L={genome.num_layers}", fontsize=10)
    return _png(figure)
