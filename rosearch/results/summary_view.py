"""The printed end-of-search summary: the top table and the lines a user needs to judge it.

It says which split selected the students (the validation slice; dev when there is none) and quotes dev
as the reported figure, the majority-class rate beside every accuracy (a student that predicts
one class must not look good), each attack recipe of the panel beside their mean, and how well
the teacher-proxy ranked students against the real attack.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from rosearch.evaluate.robustness import recipe_key


def _fmt(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return "-" if value is None else f"{value:.4f}"


def summary_table(summary: Any) -> Table:
    """The top students of a :class:`~rosearch.search.SearchSummary`, best first."""
    validation = summary.selection_split == "validation"
    table = Table(title=(
        f"top students of {summary.run_dir} (selected on {'the validation slice' if validation else 'dev'}) — "
        f"teacher dev accuracy {summary.teacher_dev_accuracy:.4f}; {summary.evaluated} evaluated, "
        f"{summary.failed} failed, {summary.reused} reused, {summary.wall_seconds / 60:.1f} min"
    ))
    panel = list(summary.attack_panel or [])
    has_f1 = any(row.get("dev_f1") is not None for row in summary.top)
    columns: list[tuple[str, str]] = []  # (header, metric key)
    if validation:
        columns.append(("val acc", "val_accuracy"))
    columns.append(("dev acc (reported)" if validation else "dev acc", "dev_accuracy"))
    if has_f1:
        columns += ([("val F1", "val_f1")] if validation else []) + [("dev F1", "dev_f1")]
    if len(panel) > 1:
        columns += [(f"{recipe} acc", recipe_key(recipe)) for recipe in panel]
    aggregate = summary.attack_aggregate
    columns += [("acc under attack" + (f" ({aggregate})" if len(panel) > 1 else ""), "robust_accuracy"),
                ("attack success", "attack_success_rate"), ("proxy acc", "proxy_robust_accuracy")]
    for header in ("rank", "hash", "gen", "H", "E", "L", "params", "MFLOPs", "ms@b1", *[c[0] for c in columns], "fitness"):
        table.add_column(header, justify="right")
    for rank, row in enumerate(summary.top, start=1):
        table.add_row(
            str(rank), row["hash"][:12], str(row["generation"]), str(row["H"]), str(row["E"]), str(row["L"]),
            f"{row['params'] / 1e6:.2f}M", f"{row['flops'] / 1e6:.1f}", f"{row.get('latency_ms_b1', float('nan')):.2f}",
            *[_fmt(row, key) for _, key in columns], ", ".join(f"{v:.4f}" for v in row["objectives"]),
        )
    return table


def summary_lines(summary: Any) -> list[str]:
    """Majority-class rates, the proxy-vs-real agreement and the teacher's attack, one line each."""
    lines = []
    stats = summary.split_stats or {}
    rates = [f"{name} {stats[key]:.4f} ({stats.get(size)} examples)"
             for name, key, size in (("validation slice", "val_majority_rate", "val_examples"),
                                     ("dev", "dev_majority_rate", "dev_examples")) if stats.get(key) is not None]
    if rates:
        lines.append("majority-class rate (accuracy of always predicting the most frequent label): " + "; ".join(rates))
    agreement = summary.proxy_vs_real
    if agreement:
        lines.append(f"teacher-proxy vs real attack robustness: Spearman rho {agreement['rho']:.3f} "
                     f"(p {agreement['p']:.3g}, n {agreement['n']})")
    if summary.teacher_attack:
        t = summary.teacher_attack
        lines.append(
            f"teacher under {t.get('recipe')}: accuracy {t.get('clean_accuracy', float('nan')):.4f} -> "
            f"{t.get('accuracy_under_attack', float('nan')):.4f} on {t.get('n')} "
            f"{'validation' if summary.selection_split == 'validation' else 'dev'} examples "
            f"(success rate {t.get('attack_success_rate', float('nan')):.4f})"
        )
    return lines
