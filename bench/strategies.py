"""Evolution (generational, aging) vs random search at an equal number of evaluations.

Each strategy runs the same real, cheap search — real SST-2 and the quickstart's fine-tuned
teacher, small distillation budget, no attacks (the fitness is validation accuracy and size) —
once per seed, and the table reports the best fitness each run found, mean and sample standard
deviation over seeds, with the held-out dev accuracy of that best student. All strategies make
``population_size x generations`` evaluations. Runs are ordinary run directories under
``runs/strategies-<strategy>-s<seed>``; an interrupted benchmark resumes them. From the
repository root::

    .venv/bin/python bench/strategies.py                       # 3 strategies x seeds 0 1 2
    .venv/bin/python bench/strategies.py --seeds 0 1 2 3 4 --set distill.max_steps=400

With ``--preset none`` the config runs as written (no cheap overrides): the 1,000-evaluation
comparison on the supernet fidelity is::

    .venv/bin/python bench/strategies.py --preset none --config configs/supernet_search.yaml \
        --strategies aging random --name-prefix supernet --out bench/results/strategies_supernet

Besides each run's best, the table gives the best found after 10 %, 25 % and 50 % of the
evaluations (is one strategy only faster?) and the mean fitness of each run's ten best students (is
the best a lucky draw of a noisy figure, or does the strategy find a region of good students?).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rosearch.config import ConfigError, load_config
from rosearch.records import ranking
from rosearch.records.store import ResultStore
from rosearch.files.rundir import RESULTS_FILE
from rosearch.search import run_search
from rosearch.search_space.genome import Genome

logger = logging.getLogger("bench.strategies")

DEFAULT_CONFIG = Path("configs/quickstart.yaml")
STRATEGIES = ("generational", "aging", "random")
CHEAP_OVERRIDES: tuple[str, ...] = (
    "data.train_limit=2000",
    "data.validation_size=500",
    "distill.max_steps=100",
    "attack.enabled=false",
    "search_space.defenses=[]",
    "search_space.defense_choices=[]",
    "search_space.hidden_sizes=[64,128]",
    "search_space.embedding_sizes=[32,64,128]",
    "search_space.num_layers=[1,2,3]",
    "evolution.population_size=6",
    "evolution.generations=4",
    "evolution.elitism=1",
    "workers.backend=ray",
    "workers.num_cpus_per_candidate=1",
    "run.device=cpu",
)


PRESETS = {"cheap": CHEAP_OVERRIDES, "none": ()}
TOP_MEAN = 10  # the run's best students averaged in `top_mean`


def run_one(config_path: Path, overrides: list[str], strategy: str, seed: int,
            preset: tuple[str, ...] = CHEAP_OVERRIDES, prefix: str = "strategies") -> dict[str, Any]:
    """Run (or resume, or re-read) one search; the best candidate by the run's own selection values."""
    config = load_config(config_path, [*preset, *overrides, f"evolution.strategy={strategy}",
                                       f"run.seed={seed}", f"run.name={prefix}-{strategy}-s{seed}"])
    resume = (config.run.run_dir / RESULTS_FILE).exists()
    start = time.perf_counter()
    summary = run_search(config, resume=resume)
    with ResultStore(config.run.run_dir / RESULTS_FILE, read_only=True) as store:
        records = store.candidates()
    ok = ranking.ranked(records, (1.0,))  # weighted mode: one fitness, maximised
    best = ok[0]
    curve, best_so_far = [], float("-inf")
    for r in records:  # the store's order is completion order
        if r.status == "ok":
            best_so_far = max(best_so_far, r.objectives[0])
        curve.append(best_so_far)
    genome = Genome.from_json(best.genome_json)
    top = ok[:TOP_MEAN]
    return {
        "strategy": strategy, "seed": seed, "run": config.run.name, "evaluations": len(records),
        "failed": sum(r.status != "ok" for r in records), "best_fitness": best.objectives[0],
        "best_hash": best.genome_hash, "best_val_accuracy": best.metrics.get("val_accuracy"),
        "best_dev_accuracy": best.metrics.get("dev_accuracy"), "best_params": best.metrics.get("params"),
        "best_shape": f"H={genome.hidden_size} E={genome.embedding_size} L={genome.num_layers}",
        "best_robust_accuracy": best.metrics.get("robust_accuracy"),
        "top_mean": statistics.fmean(r.objectives[0] for r in top), "top_n": len(top),
        "best_so_far": curve, "wall_s": summary.wall_seconds if not resume else time.perf_counter() - start,
        "budget": config.evolution.population_size * config.evolution.generations,
    }


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(rows: list[dict[str, Any]], strategies: list[str]) -> str:
    lines = ["| strategy | runs | evaluations each | best fitness (mean ± sd) | its val acc | its dev acc (not selected on; inherited on the supernet) "
             "| best fitness per seed |", "|---|---|---|---|---|---|---|"]
    for strategy in strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        if not mine:
            continue
        fit, val, dev = (mean_sd([r[k] for r in mine]) for k in ("best_fitness", "best_val_accuracy", "best_dev_accuracy"))
        per_seed = ", ".join(f"s{r['seed']} {r['best_fitness']:.4f}" for r in mine)
        lines.append(f"| {strategy} | {len(mine)} | {mine[0]['evaluations']} | {fit[0]:.4f} ± {fit[1]:.4f} "
                     f"| {val[0]:.4f} ± {val[1]:.4f} | {dev[0]:.4f} ± {dev[1]:.4f} | {per_seed} |")
    lines += ["", *_budget_table(rows, strategies)]
    baseline = {r["seed"]: r["best_fitness"] for r in rows if r["strategy"] == "random"}
    paired = []
    for strategy in strategies:
        diffs = [r["best_fitness"] - baseline[r["seed"]] for r in rows
                 if r["strategy"] == strategy and strategy != "random" and r["seed"] in baseline]
        if diffs:
            mean, sd = mean_sd(diffs)
            wins = sum(d > 0 for d in diffs)
            paired.append(f"| {strategy} - random | {len(diffs)} | {mean:+.4f} ± {sd:.4f} | {wins} of {len(diffs)} |")
    if paired:  # seeds change the data subsets, so the same seed's runs are compared (paired)
        lines += ["", "| paired by seed | seeds | best fitness difference (mean ± sd) | seeds ahead |",
                  "|---|---|---|---|", *paired]
    return "\n".join(lines)


def _budget_table(rows: list[dict[str, Any]], strategies: list[str]) -> list[str]:
    """Best found after a share of the evaluations, and the mean of each run's best ten (mean ± sd over seeds)."""
    shares = (0.1, 0.25, 0.5, 1.0)
    lines = ["| strategy | " + " | ".join(f"best after {s:.0%}" for s in shares) + f" | mean of its best {TOP_MEAN} |",
             "|---|" + "---|" * (len(shares) + 1)]
    for strategy in strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        if not mine:
            continue
        cells = []
        for share in shares:
            at = [r["best_so_far"][max(0, round(share * len(r["best_so_far"])) - 1)] for r in mine]
            cells.append("{:.4f} ± {:.4f}".format(*mean_sd(at)))
        tops = [r["top_mean"] for r in mine if "top_mean" in r]
        cells.append("{:.4f} ± {:.4f}".format(*mean_sd(tops)) if tops else "-")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cheap",
                        help="cheap: the small, attack-free search above (default); none: the config as written")
    parser.add_argument("--name-prefix", default="strategies", help="run names are <prefix>-<strategy>-s<seed>")
    parser.add_argument("--out", type=Path, default=Path("bench/results/strategies"),
                        help="writes <out>.json and <out>.md")
    parser.add_argument("--table-only", action="store_true", help="re-print the tables of <out>.json, run nothing")
    args = parser.parse_args(argv)
    if args.table_only:
        md = table(json.loads(args.out.with_suffix(".json").read_text())["rows"], args.strategies)
        args.out.with_suffix(".md").write_text(md + "\n")
        print(md)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    rows: list[dict[str, Any]] = []
    try:
        for seed in args.seeds:  # seed-major: a cut-short benchmark still compares every strategy
            for strategy in args.strategies:
                rows.append(run_one(args.config, args.overrides, strategy, seed, PRESETS[args.preset], args.name_prefix))
                logger.info("%s seed %d: best fitness %.4f (%s)", strategy, seed, rows[-1]["best_fitness"], rows[-1]["best_shape"])
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.with_suffix(".json").write_text(json.dumps(
                    {"overrides": [*PRESETS[args.preset], *args.overrides], "config": str(args.config), "rows": rows}, indent=2))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    md = table(rows, args.strategies)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
