"""``rosearch stats``, ``rosearch report`` and ``rosearch export``: the analysis of a finished run.

``run_*`` take the arguments :mod:`rosearch.cli` parsed (it defines them and imports this module
only when one of these commands runs).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from rosearch.files.outputs import check_output_dir, check_output_file, is_rosearch_report
from rosearch.runtime.logs import setup_logging
from rosearch.results.report import EFFECT_COLUMNS, HEADERS, NOISE_COLUMNS, correlation_columns, format_value, write_report
from rosearch.results.stats import STATS_FILES, compute_stats, results_path
from rosearch.files.rundir import REPORT_FILE, ensure_writable_dir

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

SHOWN_ROWS = 10  # op labels and correlations printed (the CSVs have all)


def _console() -> Console:
    """Stdout console; wide when redirected so that tables are not truncated."""
    console = Console()
    return console if console.is_terminal else Console(width=220)


def _table(title: str, frame: pandas.DataFrame, columns: Sequence[str], *, left: Sequence[str] = (),
           headers: dict[str, str] | None = None) -> Table:
    """A rich table of ``frame``'s ``columns`` (columns without any value are left out)."""
    headers = {**HEADERS, **(headers or {})}
    shown = [c for c in columns if c in frame and frame[c].notna().any()]
    table = Table(title=title, title_justify="left")
    for column in shown:
        table.add_column(headers.get(column, column), justify="left" if column in left else "right")
    for row in frame[shown].to_dict("records"):
        table.add_row(*(format_value(row[c], c) for c in shown))
    return table


def _writable(directory: Path, flag: str) -> None:
    ensure_writable_dir(directory, "output directory",
                        fix=f"pass {flag} on a writable filesystem; a read-only copy of a run is read, never written")


# --------------------------------------------------------------------------------------------
# rosearch stats
# --------------------------------------------------------------------------------------------


def run_stats(args: argparse.Namespace) -> int:
    """Print the run's statistics tables and write them as CSV."""

    setup_logging("INFO")
    out = args.out or results_path(args.run_dir).parent / "stats"
    check_output_dir(out, "--out", "the statistics tables", lambda entry: entry.name in STATS_FILES and entry.is_file())
    _writable(out, "--out DIR")  # a read-only copy of a run is analysed, but not written into
    report = compute_stats(args.run_dir, args.top_k)
    console = _console()
    frame = report.frame
    k = report.top_k
    if report.robustness_key is None:
        console.print(f"{args.run_dir}: {len(frame)} finished candidates; no robustness measured, "
                      "so accuracy and fitness only")
    else:
        console.print(f"{args.run_dir}: {len(frame)} finished candidates; robustness = {report.robustness_key} "
                      f"({int(frame['robustness'].notna().sum())} candidates have it)")
    console.print(report.noise.describe())
    console.print(f"effect intervals: {int(0.95 * 100)}% percentile bootstrap over the candidates ({report.resamples} "
                  "resamples of the finished candidates, with replacement, seeded); 'above noise' when the whole "
                  "interval lies beyond the noise floor")
    console.print(f"accuracy = {report.accuracy_key}"
                  + (" (the validation slice the search selected on; dev_accuracy is the reported figure)"
                     if report.accuracy_key == "val_accuracy" else " (the run selected on dev)"))
    if report.attacks is not None and not report.attacks.empty:
        console.print(_table("robustness figures (used = the one selection and these statistics compare)",
                             report.attacks, list(report.attacks.columns), left=["figure"]))
    if report.proxy_vs_real:
        agreement = report.proxy_vs_real
        console.print(f"teacher-proxy vs real attack robustness: Spearman rho {agreement['rho']:.3f} "
                      f"(p {agreement['p']:.3g}, n {agreement['n']})")
    top = report.top.assign(hash=report.top["genome_hash"].str[:12])
    budget = ["distill_steps"] if top["distill_steps"].notna().any() else []  # successive halving's budgets
    console.print(_table(f"top {k} by the run's selection", top, [
        "rank", "hash", "generation", "hidden_size", "embedding_size", "num_layers", "params", "flops", "latency_ms_b1",
        *budget, "accuracy", "robustness", "fitness", "attention_share", "convolution_share", "edges_per_cell",
    ], left=["hash"]))
    console.print(_table("shapes (effect: mean at this value minus mean at the others)", report.shapes,
                         list(report.shapes.columns), left=["dimension", "accuracy_vs_noise", "robustness_vs_noise"]))
    op_columns = ["op", "n_with", "n_without", "top_k_with", "top_k_frac", "all_frac", "mean_accuracy_with",
                  "mean_accuracy_without", "mean_robustness_with", "mean_robustness_without", *EFFECT_COLUMNS]
    ops = report.op_stats
    headers = {"top_k_with": f"in top-{k}", "top_k_frac": f"share of top-{k}", "all_frac": "share of all"}
    if (ops["level"] == "defense").any():
        console.print(_table(f"input defenses (top-{k} vs all)", ops[ops["level"] == "defense"], op_columns, left=["op", *NOISE_COLUMNS],
                             headers=headers))
    console.print(_table(f"op families (top-{k} vs all)", ops[ops["level"] == "family"], op_columns,
                         left=["op", *NOISE_COLUMNS], headers=headers))
    console.print(_table(f"op labels most enriched in the top-{k} (first {SHOWN_ROWS})",
                         ops[ops["level"] == "label"].head(SHOWN_ROWS), op_columns, left=["op", *NOISE_COLUMNS],
                         headers=headers))
    target = "robustness" if report.robustness_key else "accuracy"
    console.print(_table(f"Spearman correlation with {target} (first {SHOWN_ROWS} by |rho|; delta: mean above the "
                         "feature's median minus the rest)", report.correlations.head(SHOWN_ROWS),
                         correlation_columns(report.robustness_key is not None), left=["feature", *NOISE_COLUMNS]))
    paths = report.write_csv(out)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


# --------------------------------------------------------------------------------------------
# rosearch report
# --------------------------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    """Write the run's self-contained HTML report."""
    setup_logging("INFO")
    out = args.out or results_path(args.run_dir).parent / REPORT_FILE
    check_output_file(out, "--out", "an HTML report", is_rosearch_report)
    _writable(out.parent, "--out FILE")
    path = write_report(args.run_dir, args.out, top_k=args.top_k)
    _console().print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------------------------
# rosearch export
# --------------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    """Export the run's best students as Hugging Face folders and list them."""
    from rosearch.commands.export import export_students  # lazy: torch, transformers and Ray; stats and report need none

    setup_logging("INFO")
    folders = export_students(args.run_dir, args.out, top=args.top, retrain_steps=args.retrain_steps, device=args.device,
                              onnx=args.onnx, int8=args.int8)
    console = _console()
    for folder in folders:
        console.print(f"exported {folder}")
        if args.onnx or args.int8:
            console.print(onnx_summary(folder))
    console.print("load with: from rosearch.student.modeling import register_auto_classes; register_auto_classes(); "
                  "AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)")
    return 0


def onnx_summary(folder: Path) -> str:
    """One line of an export's ONNX figures (from its metrics.json): the logit check and int8's accuracy change."""
    onnx = json.loads((folder / "metrics.json").read_text())["onnx"]
    line = (f"  onnx: max |Δlogit| vs PyTorch {onnx['max_abs_logit_diff']:.2g} on {onnx['check_texts']} dev texts "
            f"(tolerance {onnx['logit_tolerance']:g}); dev accuracy {onnx['dev_accuracy_onnx']:.4f}, {onnx['size_mb']:.1f} MB")
    int8 = onnx.get("int8")
    if int8:
        line += (f"\n  int8: dev accuracy {int8['dev_accuracy']:.4f} ({int8['dev_accuracy_change']:+.4f} vs fp32), "
                 f"{int8['size_mb']:.1f} MB, same label as fp32 on {100 * int8['agreement_with_fp32']:.1f}% of texts")
    return line
