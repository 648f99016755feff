"""Does what a search selects on predict what the held-out benchmark reports?

A search ranks its students by figures measured on the validation slice (accuracy, the attack
panel on a few dozen slice sentences, optionally the teacher-proxy); README reports accuracy under
attack on held-out dev sentences (``bench/robustness.py``). A selection signal is only worth its
cost if it ranks students as the held-out figure does. This script pairs, per student, the run's
stored selection figures with the held-out figures of the same genome (rows that
``bench/robustness.py --export DIR`` wrote for exported students of that run) and prints the
Spearman rank correlation (rho, p, n) of each pair, over all students and within each group of
students carrying the same input defenses (a defense moves robustness by tens of points, so a
signal can track the defense alone and still fail to rank students that share one).

Run from the repository root::

    rosearch export runs/sst2-robust-search --top 24 --out exports/srs
    python bench/robustness.py --n 200 --row plain_kd $(for d in exports/srs/*; do echo --export $d; done) \\
        --json bench/results/robustness_search_candidates.json
    python bench/selection_agreement.py runs/sst2-robust-search bench/results/robustness_search_candidates.json \\
        --json bench/results/selection_agreement.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from common import BenchError, console, print_table, write_figures
from rosearch.records.agreement import spearman
from rosearch.results.stats import open_store

logger = logging.getLogger("bench.selection_agreement")

MIN_GROUP = 5  # a rank correlation over fewer students says nothing


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def selection_signals(metrics: dict[str, Any], recipes: Sequence[str]) -> dict[str, float]:
    """The figures a search may rank students by, as stored for one candidate."""
    keys = {"panel mean (validation slice)": "robust_accuracy", "teacher-proxy": "proxy_robust_accuracy",
            "val accuracy": "val_accuracy"}
    keys |= {f"{r} (validation slice)": f"attack.{r}.accuracy_under_attack" for r in recipes}
    return {name: float(metrics[key]) for name, key in keys.items() if _finite(metrics.get(key))}


def heldout_figures(row: dict[str, Any]) -> dict[str, float]:
    """The held-out figures of one benchmark row."""
    figures = {"panel mean (held-out)": row.get("mean_accuracy_under_attack"), "clean (held-out)": row.get("clean_accuracy")}
    figures |= {f"{r} (held-out)": a.get("accuracy_under_attack") for r, a in (row.get("attacks") or {}).items()}
    return {k: float(v) for k, v in figures.items() if _finite(v)}


def pair_students(records: Sequence[Any], bench: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per benchmark row whose genome is a finished candidate of the run."""
    by_hash = {r.genome_hash: r for r in records if r.status == "ok"}
    recipes = list((bench.get("protocol") or {}).get("recipes") or [])
    students = []
    for row in bench.get("rows") or []:
        record = by_hash.get(row.get("genome_hash"))
        if record is None or row.get("kind") != "export":
            continue
        students.append({"genome_hash": record.genome_hash, "defenses": tuple(row.get("defenses") or ()),
                         "selection": selection_signals(record.metrics, recipes), "heldout": heldout_figures(row)})
    return students


def agreement(students: Sequence[dict[str, Any]], target: str = "panel mean (held-out)") -> dict[str, Any]:
    """Spearman of every selection signal against the held-out ``target``, overall and per defense group."""
    def correlate(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        names = sorted({k for s in group for k in s["selection"]})
        for name in names:
            pairs = [(s["selection"][name], s["heldout"][target]) for s in group
                     if name in s["selection"] and target in s["heldout"]]
            out[name] = spearman([a for a, _ in pairs], [b for _, b in pairs])
        return out

    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for student in students:
        groups[student["defenses"]].append(student)
    return {
        "target": target,
        "students": len(students),
        "all": correlate(students),
        "by_defenses": {"+".join(k) or "none": {"n": len(v), "rho": correlate(v) if len(v) >= MIN_GROUP else None}
                        for k, v in sorted(groups.items())},
    }


def _cells(result: dict[str, Any] | None) -> tuple[str, str, str]:
    if result is None:
        return "-", "-", "-"
    return f"{result['rho']:+.2f}", f"{result['p']:.2g}", str(result["n"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/selection_agreement.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the search run (runs/<name>)")
    parser.add_argument("bench_json", type=Path, help="bench/robustness.py output with --export rows of that run's students")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    try:
        if not args.bench_json.is_file():
            raise BenchError(f"{args.bench_json} does not exist (fix: run bench/robustness.py with --export rows first)")
        bench = json.loads(args.bench_json.read_text(encoding="utf-8"))
        with open_store(args.run_dir) as store:
            students = pair_students(store.candidates(), bench)
        if len(students) < 3:
            raise BenchError(f"only {len(students)} benchmark rows are students of {args.run_dir} (fix: export the run's "
                             "students and pass each with --export to bench/robustness.py)")
        protocol = {k: v for k, v in (bench.get("protocol") or {}).items() if k != "reference_genome"}  # not a row here
        figures = {"protocol": protocol,
                   "agreement": agreement(students), "students": students}
    except BenchError as exc:
        logger.error("%s", exc)
        return 2
    out = console()
    result = figures["agreement"]
    protocol = bench.get("protocol") or {}
    title = (f"selection signal vs held-out mean accuracy under attack ({protocol.get('split')}, n={protocol.get('n')}, "
             f"seed {protocol.get('seed')}, {'+'.join(protocol.get('recipes') or [])}; {result['students']} students)")
    rows = [("all", name, *_cells(v)) for name, v in result["all"].items()]
    for group, entry in result["by_defenses"].items():
        if entry["rho"] is None:
            rows.append((f"{group} (n={entry['n']})", "(too few students)", "-", "-", "-"))
            continue
        rows += [(f"{group}", name, *_cells(v)) for name, v in entry["rho"].items()]
    print_table(out, title, ("students", "signal", "rho", "p", "n"), rows)
    write_figures(args.json_path, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
