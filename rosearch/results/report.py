"""One self-contained HTML page per run: what was searched, how it went, what won and why.

The page embeds its figures as base64 PNGs and its style inline, loads no script, font or
image from anywhere, and so can be mailed, archived next to the run, or opened offline. Every
value that comes from the run (op labels, errors, paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rosearch.files.outputs import REPORT_GENERATOR, check_output_file, is_rosearch_report
from rosearch.results import plots
from rosearch.results.stats import (
    StatsReport, compute_stats, open_store, read_run_json, results_path, teacher_reference,
)
from rosearch.files.rundir import CONFIG_FILE, REPORT_FILE, SUMMARY_FILE
from rosearch.search_space.genome import Genome

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

LABEL_ROWS = 15  # op labels and correlations shown (the CSVs of `rosearch stats` have all)
NOISE_COLUMNS = ("accuracy_vs_noise", "robustness_vs_noise")
# each effect in figure units, its bootstrap interval, and its place against the noise floor (rosearch.results.noise)
EFFECT_COLUMNS = ("effect_accuracy", "effect_accuracy_low", "effect_accuracy_high", "accuracy_vs_noise",
                  "effect_robustness", "effect_robustness_low", "effect_robustness_high", "robustness_vs_noise")


def correlation_columns(robustness: bool) -> list[str]:
    """The correlation table's columns: rho, its interval and p, and the median-split effect against the noise."""
    targets = ("accuracy", "robustness") if robustness else ("accuracy",)
    return ["feature"] + [c for t in targets for c in (
        f"n_{t}", f"rho_{t}", f"rho_{t}_low", f"rho_{t}_high", f"p_{t}", f"delta_{t}", f"delta_{t}_low",
        f"delta_{t}_high", f"{t}_vs_noise")]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #1d3557; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-bottom: 0.4rem; }
p.note { color: #555; font-size: 0.9rem; margin-top: 0.2rem; }
p.warn { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.5rem 0.8rem; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.82rem; margin: 0.4rem 0 1rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.55rem; text-align: right; }
th { background: #f1f4f8; }
td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
table.kv td:first-child { font-weight: 600; text-align: left; background: #f6f8fa; }
table.kv td { text-align: left; }
div.scroll { overflow-x: auto; }
img { max-width: 100%; height: auto; border: 1px solid #e5e5e5; }
figure { margin: 0.6rem 0 1.4rem 0; }
figcaption { font-size: 0.85rem; color: #444; }
code { font-size: 0.85em; background: #f3f3f3; padding: 0 0.2em; }
"""


# --------------------------------------------------------------------------------------------
# HTML pieces
# --------------------------------------------------------------------------------------------


# short column headers, so the wide tables fit the page
HEADERS: Mapping[str, str] = {
    "n_with": "n with", "n_without": "n w/o", "mean_accuracy_with": "acc with", "mean_accuracy_without": "acc w/o",
    "mean_robustness_with": "rob. with", "mean_robustness_without": "rob. w/o", "mean_fitness_with": "fitness with",
    "mean_fitness_without": "fitness w/o", "mean_accuracy": "mean acc", "max_accuracy": "max acc",
    "mean_robustness": "mean rob.", "max_robustness": "max rob.", "mean_fitness": "mean fitness",
    "mean_params": "mean params", "best_rank": "best rank", "n_accuracy": "n (acc)", "rho_accuracy": "ρ acc",
    "p_accuracy": "p acc", "n_robustness": "n (rob.)", "rho_robustness": "ρ rob.", "p_robustness": "p rob.",
    "accuracy_best": "acc best", "accuracy_median": "acc median", "robustness_best": "rob. best",
    "robustness_median": "rob. median", "proxy_robust_accuracy": "proxy acc", "robust_accuracy": "acc under attack",
    "attack_success_rate": "attack success", "hidden_size": "H", "embedding_size": "E", "num_layers": "L",
    "flops": "FLOPs", "latency_ms_b1": "ms@b1", "latency_ms_b32": "ms@b32", "generation": "gen",
    "distill_steps": "KD steps",
    "effect_accuracy": "acc effect", "effect_accuracy_low": "acc 95% lo", "effect_accuracy_high": "acc 95% hi",
    "accuracy_vs_noise": "acc vs noise", "effect_robustness": "rob. effect", "effect_robustness_low": "rob. 95% lo",
    "effect_robustness_high": "rob. 95% hi", "robustness_vs_noise": "rob. vs noise",
    "rho_accuracy_low": "ρ acc lo", "rho_accuracy_high": "ρ acc hi", "rho_robustness_low": "ρ rob. lo",
    "rho_robustness_high": "ρ rob. hi", "delta_accuracy": "acc Δ (median split)", "delta_accuracy_low": "acc Δ lo",
    "delta_accuracy_high": "acc Δ hi", "delta_robustness": "rob. Δ (median split)", "delta_robustness_low": "rob. Δ lo",
    "delta_robustness_high": "rob. Δ hi",
}


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _si(value: float, digits: int) -> str:
    """12_345_678 -> '12.35M' (digits=2); 45_600 -> '45.60K': sizes at a glance."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f}{suffix}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def format_value(value: Any, column: str = "") -> str:
    """A cell's text: counts as integers, parameters in millions, FLOPs in MFLOPs, rates to 4 digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if column in ("params", "teacher_params", "mean_params", "flops", "teacher_flops") and isinstance(value, (int, float)):
        return _si(value, 2 if "params" in column else 1)
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:
            return f"{value:,.0f}"
        if column.startswith("p_"):
            return f"{value:.3g}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def html_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, headers: Mapping[str, str] | None = None,
               text_columns: Iterable[str] = ()) -> str:
    """An HTML table of ``rows`` (dicts) over ``columns``; every value escaped."""
    headers = {**HEADERS, **(headers or {})}
    text = set(text_columns)
    head = "".join(f'<th class="{"text" if c in text else ""}">{_esc(headers.get(c, c))}</th>' for c in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"text" if c in text else ""}">{_esc(format_value(row.get(c), c))}</td>' for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def frame_table(frame: pandas.DataFrame, columns: Sequence[str] | None = None, *, text_columns: Iterable[str] = (),
                headers: Mapping[str, str] | None = None) -> str:
    """A DataFrame as an HTML table, leaving out columns with no value at all."""
    columns = [c for c in (columns or list(frame.columns)) if c in frame and frame[c].notna().any()]
    return html_table(frame[columns].to_dict("records"), columns, headers=headers, text_columns=text_columns)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(format_value(v))}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def image(png: bytes, alt: str, caption: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    figcaption = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">{figcaption}</figure>'


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _wall_time(summary: Mapping[str, Any] | None, meta: Mapping[str, str], finished: Sequence[float]) -> str:
    if summary and isinstance(summary.get("wall_seconds"), (int, float)):
        return _duration(summary["wall_seconds"])
    try:
        created = float(meta["created_at"])
    except (KeyError, ValueError):
        return "unknown"
    if not finished:
        return "unknown"
    return f"about {_duration(max(finished) - created)} (first store write to last candidate; the run wrote no summary)"


def _run_section(run_dir: Path, config: Mapping[str, Any], report: StatsReport, counts: Mapping[str, int],
                 meta: Mapping[str, str], wall: str) -> str:
    teacher = teacher_reference(run_dir)
    section = lambda name: config.get(name) or {}  # noqa: E731
    run, data, fit, evo, dist = (section(n) for n in ("run", "data", "fitness", "evolution", "distill"))
    teacher_name = str(section("teacher").get("model", "?"))
    if teacher.get("teacher_dir"):
        teacher_name += f" → {Path(teacher['teacher_dir']).name}"
    pairs: list[tuple[str, Any]] = [
        ("run directory", str(run_dir)),
        ("task", f"{data.get('task', '?')} (train subset {data.get('train_limit') or 'all'}, "
                 f"max length {data.get('max_length', '?')})"),
        ("teacher", teacher_name),
        ("teacher dev accuracy", teacher.get("teacher_dev_accuracy")),
    ]
    if teacher.get("teacher_params"):
        pairs.append(("teacher parameters / FLOPs per example", f"{format_value(teacher['teacher_params'], 'params')} / "
                      f"{format_value(teacher.get('teacher_flops'), 'flops')}"))
    attack = teacher.get("teacher_attack")
    if isinstance(attack, Mapping):
        pairs.append(("teacher under attack", (
            f"{attack.get('recipe', '?')}: accuracy {format_value(attack.get('clean_accuracy'))} → "
            f"{format_value(attack.get('accuracy_under_attack'))} on {attack.get('n', '?')} "
            f"{'validation' if teacher.get('selection_split') == 'validation' else 'dev'} examples "
            f"(success rate {format_value(attack.get('attack_success_rate'))})")))
    attack_cfg = section("attack")
    validation = teacher.get("selection_split") == "validation"
    for label, key, size in (("validation slice (selection)", "val_majority_rate", "val_examples"),
                             ("dev (reported)" if validation else "dev", "dev_majority_rate", "dev_examples")):
        if teacher.get(key) is not None:
            pairs.append((f"{label}: examples, majority-class rate",
                          f"{teacher.get(size)}, {format_value(teacher[key])}"))
    if attack_cfg.get("enabled"):
        full = attack_cfg.get("full_attack")
        panel = attack_cfg.get("recipes") or [attack_cfg.get("recipe")]
        where = "validation" if validation else "dev"
        pairs.append(("attack", (
            f"{' + '.join(map(str, panel))} on {attack_cfg.get('num_examples')} {where} examples; proxy set "
            f"{'on' if attack_cfg.get('proxy') else 'off'}; full attack: {full}"
            + (f" (best {attack_cfg.get('top_k')} per generation and of the run)" if full in ("top_k", "multi_fidelity") else ""))))
    pairs += [
        ("selection", f"{evo.get('mode', 'weighted')}; weights accuracy {fit.get('accuracy_weight')}, robustness "
                      f"{fit.get('robustness_weight')}, efficiency {fit.get('efficiency_weight')} ({fit.get('efficiency_metric')})"
                      + (f"; accuracy floor {fit['accuracy_floor']} (below it a candidate ranks after all above it)"
                         if fit.get("accuracy_floor") is not None else "")),
        ("population × generations", f"{evo.get('population_size', '?')} × {evo.get('generations', '?')}"),
        ("distillation steps per candidate", dist.get("max_steps") if evo.get("strategy") != "halving" else
         f"successive halving: rungs of {dist.get('max_steps')} / {evo.get('halving_eta')}^k steps, "
         f"{evo.get('halving_rungs')} rungs; candidates rank at the highest budget first"),
        ("candidates", f"{counts['ok']} finished, {counts['failed']} failed, {counts['generations']} generations recorded"),
        ("wall time", wall),
        ("accuracy figure", report.accuracy_key + (" (validation slice; dev accuracy is reported beside it)"
                                                   if report.accuracy_key == "val_accuracy" else "")),
        ("robustness figure", report.robustness_key or "none"),
        ("config fingerprint", meta.get("config_fingerprint", "unknown")),
        ("written by rosearch", meta.get("rosearch_version", "unknown")),
        ("seed", run.get("seed")),
    ]
    note = ""
    if report.robustness_key is None:
        note = ('<p class="warn">This run measured no robustness (no attack, no proxy set): it is analysed on '
                "accuracy, fitness and cost only, and every robustness column is left out.</p>")
    elif report.robustness_key == "robust_accuracy" and report.frame["robustness"].isna().any():
        n = int(report.frame["robustness"].notna().sum())
        note = (f'<p class="note">Robustness is the accuracy under the full attack, which only {n} of '
                f"{len(report.frame)} candidates got; statistics on robustness use those {n}.</p>")
    return f"<h2>Run</h2>{key_values(pairs)}{note}{_attack_figures_section(report)}"


def _attack_figures_section(report: StatsReport) -> str:
    """Every robustness figure of the run side by side, and whether the proxy ranks like the real attack."""
    if report.attacks is None or report.attacks.empty:
        return ""
    agreement = report.proxy_vs_real
    line = (f'<p class="note">Teacher-proxy vs real attack robustness over the {agreement["n"]} candidates that have '
            f'both: Spearman rho {agreement["rho"]:.3f} (p {agreement["p"]:.3g}).</p>') if agreement else ""
    return ("<h3>Robustness figures</h3>"
            '<p class="note">robust_accuracy is the mean (attack.panel_aggregate: mean) or the lowest (min) accuracy under '
            "the panel's attacks; attack.&lt;recipe&gt;.* "
            "are each recipe's; used marks the figure selection and these statistics compare. rho/p: Spearman with "
            f"{_esc(report.accuracy_key)}.</p>"
            + frame_table(report.attacks, list(report.attacks.columns), text_columns=["figure", "used"]) + line)


def _generation_section(series: pandas.DataFrame, selection_name: str, robustness_name: str | None) -> str:
    png = plots.generation_plot(series, selection_name=selection_name, robustness_name=robustness_name)
    table = frame_table(series, headers={
        "selection_best": f"{selection_name} best", "selection_median": f"{selection_name} median",
    })
    return (f"<h2>Progress per generation</h2>{image(png, 'per-generation progress')}"
            f'<p class="note">Each generation\'s population (survivors included). Best and median {selection_name} come '
            f"from the search's own generation records.</p>{table}")


def _tradeoff_section(report: StatsReport, teacher_accuracy: float | None) -> str:
    png = plots.tradeoff_plot(report.frame, robustness_name=report.robustness_key, teacher_accuracy=teacher_accuracy)
    title = "Accuracy vs robustness" if report.robustness_key else "Accuracy vs size"
    return f"<h2>{title}</h2>{image(png, title.lower())}"


def _statistics_section(report: StatsReport) -> str:
    ops = report.op_stats
    target = "robustness" if report.robustness_key else "accuracy"
    op_columns = ["op", "n_with", "n_without", "top_k_with", "top_k_frac", "all_frac", "top_k_node_share",
                  "all_node_share", "mean_accuracy_with", "mean_accuracy_without", "mean_robustness_with",
                  "mean_robustness_without", "mean_fitness_with", "mean_fitness_without", *EFFECT_COLUMNS]
    headers = {"top_k_with": f"in top-{report.top_k}", "top_k_frac": f"share of top-{report.top_k}",
               "all_frac": "share of all", "top_k_node_share": f"node share top-{report.top_k}",
               "all_node_share": "node share all"}
    families = ops[ops["level"] == "family"]
    defenses = ops[ops["level"] == "defense"]
    label_rows = ops[ops["level"] == "label"].head(LABEL_ROWS)
    correlations = report.correlations.head(LABEL_ROWS)
    noise_text = ["feature", "dimension", "op", *NOISE_COLUMNS]
    return (
        "<h2>Statistics</h2>"
        f'<p class="note">Top-{report.top_k} by the run\'s own selection order. "with"/"without": mean over the '
        "candidates that contain the operation somewhere in their cells, or do not. Tables are sorted by how much "
        f"more often an operation occurs in the top-{report.top_k} than in the whole population.</p>"
        f'<p class="note">Every effect has a 95% percentile bootstrap interval: the finished candidates are resampled '
        f"with replacement ({report.resamples} seeded resamples) and the effect recomputed. "
        f"{_esc(report.noise.describe())}. An effect is 'above noise' when its whole interval lies beyond the "
        "noise floor (the seed sd of one genome), else 'inside noise'.</p>"
        "<h3>Shapes: width, embedding width, depth</h3>"
        + frame_table(report.shapes, text_columns=noise_text)
        + ("<h3>Input defenses</h3>" + frame_table(defenses, op_columns, text_columns=noise_text, headers=headers)
           if len(defenses) else "")
        + "<h3>Operation families</h3>" + frame_table(families, op_columns, text_columns=noise_text, headers=headers)
        + f"<h3>Operation labels (first {min(LABEL_ROWS, len(label_rows))} of {int((ops['level'] == 'label').sum())})</h3>"
        + frame_table(label_rows, op_columns, text_columns=noise_text, headers=headers)
        + f"<h3>Rank correlation of architecture features with {target} (Spearman; first {len(correlations)})</h3>"
        + f'<p class="note">Over {len(report.frame)} candidates; a feature constant over the run has none. '
          "Candidates of an evolutionary search are not independent samples: read p-values as a guide only.</p>"
        + frame_table(correlations, correlation_columns(report.robustness_key is not None), text_columns=noise_text)
    )


_TOP_COLUMNS = ["rank", "hash", "generation", "hidden_size", "embedding_size", "num_layers", "params", "flops",
                "latency_ms_b1", "latency_ms_b32", "accuracy", "dev_accuracy", "dev_f1", "proxy_robust_accuracy", "robust_accuracy",
                "attack_success_rate", "fitness", "objectives"]


def _top_section(report: StatsReport, genomes: Mapping[str, Genome]) -> str:
    top = report.top.copy()
    top["hash"] = top["genome_hash"].str[:12]
    validation = report.accuracy_key == "val_accuracy"
    headers = {"accuracy": "val acc (selected on)" if validation else "dev acc", "dev_accuracy": "dev acc (reported)"}
    columns = [c for c in _TOP_COLUMNS if (validation or c != "dev_accuracy") and (c != "dev_f1" or top[c].notna().any())]
    if top["distill_steps"].notna().any():  # successive halving: the budget each row was measured at
        columns.insert(columns.index("accuracy"), "distill_steps")
    columns[columns.index("robust_accuracy") + 1:columns.index("robust_accuracy") + 1] = [
        c for c in top.columns if c.startswith("attack.")]
    parts = [f"<h2>Top {len(top)} students</h2>", frame_table(top, columns, text_columns=["hash"], headers=headers)]
    for row in top.itertuples():
        genome = genomes[row.genome_hash]
        robust = f", {report.robustness_key} {format_value(row.robustness)}" if report.robustness_key else ""
        caption = (f"#{row.rank} {row.genome_hash} — H={genome.hidden_size}, E={genome.embedding_size}, "
                   f"L={genome.num_layers}, {format_value(row.params, 'params')} parameters, "
                   f"{'validation' if validation else 'dev'} accuracy {format_value(row.accuracy)}"
                   + (f", dev accuracy {format_value(row.dev_accuracy)}" if validation else "") + robust)
        title = f"#{row.rank} {row.genome_hash[:12]}: H={genome.hidden_size}, E={genome.embedding_size}, L={genome.num_layers}"
        parts.append(image(plots.cell_plot(genome, title=title), f"cells of student {row.rank}", caption))
    return "".join(parts)


def _failed_section(failed: Sequence[Any]) -> str:
    if not failed:
        return ""
    rows = [{"hash": r.genome_hash[:12], "generation": r.generation, "attempts": r.attempts,
             "error": (r.error or "").splitlines()[0][:200]} for r in failed]
    return (f"<h2>Failed candidates ({len(failed)})</h2>"
            + html_table(rows, ["hash", "generation", "attempts", "error"], text_columns=["hash", "error"]))


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def render_report(run_dir: str | Path, top_k: int = 5) -> str:
    """The report of ``run_dir`` as one HTML string (see :func:`write_report`)."""
    run_dir = results_path(run_dir).parent
    with open_store(run_dir) as store:
        report = compute_stats(store, top_k)
        records = store.candidates()
        generations = store.generations()
        config = store.run_config() or read_run_json(run_dir, CONFIG_FILE) or {}
        meta = store.metadata()
    failed = [r for r in records if r.status == "failed"]
    counts = {"ok": len(records) - len(failed), "failed": len(failed), "generations": len(generations)}
    genomes = {r.genome_hash: Genome.from_json(r.genome_json) for r in records if r.status == "ok"}
    wall = _wall_time(read_run_json(run_dir, SUMMARY_FILE), meta, [r.finished_at for r in records])
    mode = (config.get("evolution") or {}).get("mode", "weighted")
    selection_name = "fitness" if mode == "weighted" else "accuracy (first objective)"
    teacher_accuracy = teacher_reference(run_dir).get("teacher_dev_accuracy")
    series = plots.generation_series(generations, report.frame)
    name = (config.get("run") or {}).get("name") or run_dir.name
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join([
        f"<h1>rosearch run report: {_esc(name)}</h1>",
        f'<p class="note">Generated {stamp} from {_esc(run_dir)}.</p>',
        _run_section(run_dir, config, report, counts, meta, wall),
        _generation_section(series, selection_name, report.robustness_key),
        _tradeoff_section(report, teacher_accuracy if isinstance(teacher_accuracy, (int, float)) else None),
        _statistics_section(report),
        _top_section(report, genomes),
        _failed_section(failed),
    ])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="{REPORT_GENERATOR}">'
            f"<title>rosearch report: {_esc(name)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def write_report(run_dir: str | Path, out: Path | None = None, top_k: int = 5) -> Path:
    """Write the run's self-contained ``report.html`` (default: inside the run directory); return its path.

    An existing file at the path is replaced only when it is an earlier rosearch report.
    """
    path = Path(out) if out is not None else results_path(run_dir).parent / REPORT_FILE
    check_output_file(path, "--out", "an HTML report", is_rosearch_report)
    page = render_report(run_dir, top_k)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    logger.info("report: wrote %s (%.0f kB)", path, path.stat().st_size / 1024)
    return path
