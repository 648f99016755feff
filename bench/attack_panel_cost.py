"""What each way of measuring robustness in a search costs, from a run that attacked every candidate.

A run with ``attack.full_attack=all`` stores, per candidate, the seconds and the accuracy under
attack of every recipe of its panel (``attack.<recipe>.*``), its KD training time, and (with the
proxy on) its teacher-proxy accuracy. From those measurements this script works out, for the
same population:

* ``panel on every candidate`` — what the run paid (measured);
* ``multi_fidelity`` — the panel's first (cheapest-first) recipe on every candidate, the whole panel
  on the best ``--top-k`` of each generation and of the run (estimated from the measured
  per-recipe means);
* ``proxy`` — one teacher attack (measured once per run, cached) and one forward pass per candidate;

and how well each cheap signal ranks the candidates against the panel's mean (Spearman rho, n, p),
which is what decides whether the cheaper protocol would have selected the same students.
Run from the repository root::

    .venv/bin/python bench/attack_panel_cost.py runs/sst2-panel
    .venv/bin/python bench/attack_panel_cost.py runs/sst2-panel --top-k 2 --json bench/results/attack_panel_cost.json
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from common import BenchError, console, print_table, write_figures
from rosearch.records.agreement import spearman
from rosearch.results.stats import open_store, read_run_json
from rosearch.files.rundir import RUN_INFO_FILE

logger = logging.getLogger("bench.attack_panel_cost")


def _recipes(metrics: dict[str, Any]) -> list[str]:
    return [k.split(".")[1] for k in metrics if k.startswith("attack.") and k.endswith(".accuracy_under_attack")]


def panel_costs(records: Sequence[Any], config: dict, run_info: dict, top_k: int) -> dict[str, Any]:
    """The figures of the module docstring from a run's finished records, stored config and run_info."""
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        raise BenchError("the run has no finished candidate")
    panel = (config.get("attack") or {}).get("recipes") or _recipes(ok[0].metrics)
    attacked = [r for r in ok if all(f"attack.{p}.seconds" in r.metrics for p in panel)]
    if len(attacked) < len(ok) or not panel:
        raise BenchError(f"only {len(attacked)} of {len(ok)} candidates carry the whole panel {panel}: this script needs "
                         "a run with attack.full_attack=all (e.g. configs/sst2_panel.yaml)")
    generations = len({r.generation for r in ok})
    seconds = {p: [float(r.metrics[f"attack.{p}.seconds"]) for r in attacked] for p in panel}
    train = [float(r.metrics.get("train_seconds", 0.0)) for r in attacked]
    mean = {p: statistics.fmean(v) for p, v in seconds.items()}
    total_attack = sum(sum(v) for v in seconds.values())
    n = len(attacked)
    full_runs = min(n, top_k * (generations + 1))  # each generation's top k and the final top k (at most all)
    multi = sum(seconds[panel[0]]) + full_runs * sum(mean[p] for p in panel[1:])
    teacher = run_info.get("teacher_attack") or {}
    real = [float(r.metrics["robust_accuracy"]) for r in attacked]
    signals = {f"{p} alone": [float(r.metrics[f"attack.{p}.accuracy_under_attack"]) for r in attacked] for p in panel}
    proxy = [r.metrics.get("proxy_robust_accuracy") for r in attacked]
    if all(isinstance(v, (int, float)) for v in proxy):
        signals["teacher-proxy"] = [float(v) for v in proxy]
    return {
        "run_candidates": n, "generations": generations, "panel": list(panel), "top_k": top_k,
        "attack_examples": (config.get("attack") or {}).get("num_examples"),
        "mean_seconds_per_candidate": {p: mean[p] for p in panel} | {"kd_training": statistics.fmean(train)},
        "attack_share_of_candidate_time": total_attack / (total_attack + sum(train)) if total_attack + sum(train) else None,
        "strategies_seconds": {
            "panel on every candidate (measured)": total_attack,
            f"multi_fidelity: {panel[0]} on all, panel on top {top_k} per generation (estimated)": multi,
            "proxy: one teacher attack (measured, cached across runs)": teacher.get("wall_seconds"),
        },
        "rank_agreement_with_panel_mean": {name: spearman(values, real) for name, values in signals.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/attack_panel_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run whose candidates all have the attack panel (runs/<name>)")
    parser.add_argument("--top-k", type=int, default=None, help="multi-fidelity's full-panel group (default: attack.top_k)")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    try:
        with open_store(args.run_dir) as store:
            records, config = store.candidates(), store.run_config() or {}
        top_k = args.top_k or int((config.get("attack") or {}).get("top_k", 2))
        if top_k < 1:
            raise BenchError(f"--top-k must be >= 1, got {top_k}")
        figures = panel_costs(records, config, read_run_json(args.run_dir, RUN_INFO_FILE) or {}, top_k)
    except BenchError as exc:
        logger.error("%s", exc)
        return 2
    out = console()
    print_table(out, f"seconds per candidate ({figures['run_candidates']} candidates, "
                     f"{figures['attack_examples']} examples per recipe)", ("", "seconds"),
                [(k, f"{v:.1f}") for k, v in figures["mean_seconds_per_candidate"].items()])
    print_table(out, "robustness measurement for the whole run", ("strategy", "seconds"),
                [(k, "-" if v is None else f"{v:.0f}") for k, v in figures["strategies_seconds"].items()])
    print_table(out, "rank agreement with the panel's mean accuracy under attack", ("signal", "rho", "p", "n"),
                [(k, *(("-",) * 3 if v is None else (f"{v['rho']:.3f}", f"{v['p']:.3g}", str(v["n"]))))
                 for k, v in figures["rank_agreement_with_panel_mean"].items()])
    share = figures["attack_share_of_candidate_time"]
    out.print(f"attacking takes {share:.0%} of a candidate's training + attack time" if share is not None else "")
    write_figures(args.json_path, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
