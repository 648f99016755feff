"""Held-out robustness benchmark.

Every row (the teacher, a plain-KD student of a fixed reference genome, the best student of a
search, exported students, the reference genome distilled with input defenses and/or robust
distill methods) is attacked with the same panel of TextAttack recipes (default DeepWordBug, PWWS,
textfooler-local, Pruthi and, on defended rows, the adaptive DeepWordBug and PWWS; TextAttack's stock
constraints; any replaced offline are listed in the protocol) on the
same seeded sample of SST-2 dev sentences. A defended student is attacked through its defense
(black box). Per row: clean accuracy, accuracy under each attack, their mean over the panel,
attack success rate, queries, seconds, and a 95% percentile-bootstrap interval (per-example
resampling, seeded) for every accuracy; each row is also compared with the plain-KD reference
on the same examples (paired bootstrap of the difference).

Resumable: every finished (row, recipe) attack is saved at once under the work dir, keyed by the
model's weights + defense, the recipe, the examples, n and the seed, and skipped on a re-run; the
table and JSON are rewritten after each one, so a run stopped early still reports what it did.

Run from the repository root (the config's teacher must be fine-tuned: ``rosearch teacher``)::

    python bench/robustness.py                                   # teacher + plain KD, 500 dev sentences
    python bench/robustness.py --row plain_kd --row teacher --row defense:word_recognition \\
        --row defense:synonym_encoding --row defense:word_recognition+synonym_encoding
    python bench/robustness.py --run runs/sst2-robust --export runs/exported/rank1-abc  # + searched, exported
    python bench/robustness.py --quick --config my_tiny.yaml     # CI-sized (n=24, 200 resamples)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common import BenchError, console, describe_machine
from robustness_models import REFERENCE_GENOME, RowModel, RowSpec, load_row, parse_row
from rosearch.attack.recipes import RECIPES
from rosearch.config import Config, ConfigError, load_config
from rosearch.data.tasks import DataError, Example, load_examples, task_spec
from rosearch.evaluate.bootstrap import bootstrap_interval, paired_difference_interval
from rosearch.search_space.genome import Genome

logger = logging.getLogger("bench.robustness")

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = Path("configs/bench_robustness.yaml")
DEFAULT_JSON = BENCH_DIR / "results" / "robustness.json"
# the panel every row faces: two character-level and two word-substitution attacks, plus the adaptive
# checks built from a defended row's own defense (n/a on undefended rows)
DEFAULT_RECIPES = ("deepwordbug", "pwws", "textfooler-local", "pruthi", "deepwordbug-adaptive", "pwws-adaptive")
QUICK_N, QUICK_RESAMPLES = 24, 200
RESULT_VERSION = 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="teacher, data, distill, attack and defense settings (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set distill.max_steps=200 (repeatable)")
    parser.add_argument("--row", action="append", default=[], metavar="SPEC",
                        help="a row, in order: teacher, plain_kd, defense:NAME[+NAME], method:NAME[+NAME], "
                             "defense:...,method:..., export:DIR, searched:RUN_DIR (default: teacher, plain_kd)")
    parser.add_argument("--run", action="append", default=[], type=Path, metavar="RUN_DIR",
                        help="add the best student of this search as a row (= --row searched:RUN_DIR)")
    parser.add_argument("--export", action="append", default=[], type=Path, metavar="DIR",
                        help="add an exported student directory as a row (= --row export:DIR)")
    parser.add_argument("--genome", type=Path, default=REFERENCE_GENOME,
                        help="reference genome of the distilled rows (default: bench/reference_genome.json)")
    parser.add_argument("--recipe", action="append", help=f"attack recipe, repeatable (default: {', '.join(DEFAULT_RECIPES)})")
    parser.add_argument("--n", type=int, help="dev sentences attacked per row (default 500; --quick: 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dev sample, the recipes and the bootstrap")
    parser.add_argument("--resamples", type=int, help="bootstrap resamples (default 2000; --quick: 200)")
    parser.add_argument("--saved-only", action="store_true",
                        help="tabulate only the (row, recipe) attacks already saved under the work dir; attack "
                             "nothing (a panel stopped early, or run in pieces)")
    parser.add_argument("--quick", action="store_true", help="CI size: n=24, 200 bootstrap resamples")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-robustness"),
                        help="distilled students and per-(row, recipe) results, reused on re-runs (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="summary JSON (default: bench/results/robustness.json)")
    parser.add_argument("--markdown", type=Path, help="markdown table (default: the JSON path with .md)")
    args = parser.parse_args(argv)
    args.n = args.n if args.n is not None else (QUICK_N if args.quick else 500)
    args.resamples = args.resamples if args.resamples is not None else (QUICK_RESAMPLES if args.quick else 2000)
    args.recipes = tuple(dict.fromkeys(args.recipe or DEFAULT_RECIPES))
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        parser.error(f"--recipe {unknown[0]!r} is not a recipe (known: {', '.join(RECIPES)})")
    if all(RECIPES[r].defense_aware for r in args.recipes):
        parser.error("--recipe: add at least one stock recipe (e.g. deepwordbug); adaptive checks are reported beside it")
    args.markdown = args.markdown or args.json.with_suffix(".md")
    return args


def row_specs(args: argparse.Namespace) -> list[RowSpec]:
    texts = list(args.row) + [f"searched:{p}" for p in args.run] + [f"export:{p}" for p in args.export]
    specs = [parse_row(t) for t in (texts or ["teacher", "plain_kd"])]
    seen = set()
    for spec in specs:
        key = (spec.kind, str(spec.path))
        if key in seen:
            raise BenchError(f"row {spec.kind} {spec.path or ''} is listed twice (fix: list each row once)")
        seen.add(key)
    return specs


def sample_examples(config: Config, n: int, seed: int) -> list[Example]:
    from rosearch.attack.runner import sample_attack_examples

    examples = load_examples(task_spec(config.data), "dev", config.data.data_dir)
    if n > len(examples):
        raise BenchError(f"--n {n} is more than the {len(examples)} dev examples of {config.data.task} (fix: --n <= {len(examples)})")
    return sample_attack_examples(examples, n, seed)


def examples_digest(examples: Sequence[Example]) -> str:
    return hashlib.sha256(json.dumps([[e.text_a, e.text_b, e.label] for e in examples]).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Attacking, with one saved result per (row, recipe)
# --------------------------------------------------------------------------------------------


def result_path(work_dir: Path, row: RowModel, recipe: str, n: int, seed: int, digest: str, config: Config) -> Path:
    """Where one (row, recipe) result lives: keyed by the model, the recipe and the attacked sample."""
    attack = config.attack
    key = {"model": row.fingerprint, "recipe": recipe, "n": n, "seed": seed, "examples": digest,
           "query_budget": attack.query_budget, "max_length": config.data.max_length, "version": RESULT_VERSION}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return work_dir / "attacks" / f"{recipe}-{name}.json"


def attack_row(row: RowModel, recipe: str, examples: Sequence[Example], config: Config, seed: int,
               path: Path, device: Any) -> dict[str, Any]:
    """The saved result of attacking ``row`` with ``recipe``, attacking now when none is saved."""
    import dataclasses

    from rosearch.attack.runner import attack_model

    if path.is_file():
        logger.info("%s / %s: reusing %s", row.name, recipe, path.name)
        return json.loads(path.read_text())
    cfg = dataclasses.replace(config.attack, seed=seed)
    report = attack_model(row.model, row.tokenizer, examples, cfg, recipe=recipe, cache_dir=config.run.cache_dir,
                          model_name=row.name, max_length=config.data.max_length, device=device,
                          text_columns=task_spec(config.data).hf_text_columns, defense=row.defense)
    result = {
        "recipe": recipe, "n": report.n, "clean_accuracy": report.clean_accuracy,
        "accuracy_under_attack": report.accuracy_under_attack, "attack_success_rate": report.attack_success_rate,
        "successful": report.successful, "failed": report.failed, "skipped": report.skipped,
        "mean_queries": report.mean_queries, "mean_perturbed_word_pct": report.mean_perturbed_word_pct,
        "seconds": report.wall_seconds, "constraints": list(report.constraints), "notes": list(report.notes),
        # per example, in sample order: 1 = correct before the attack / still correct after it
        "examples": examples_digest(examples),  # the sample's sha256: what bench/paired_attacks.py pairs on
        "clean": "".join("0" if e.status == "skipped" else "1" for e in report.examples),
        "robust": "".join("1" if e.status == "failed" else "0" for e in report.examples),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    return result


def outcome_bits(text: str) -> np.ndarray:
    """A saved per-example outcome string ('0'/'1' per sentence, in sample order) as an array."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) - ord("0")


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def _interval(values: np.ndarray, args: argparse.Namespace) -> list[float]:
    low, high = bootstrap_interval(values, resamples=args.resamples, seed=args.seed)
    return [round(low, 4), round(high, 4)]


def stock_recipes(args: argparse.Namespace) -> list[str]:
    """The panel the mean and the comparisons are over: the requested recipes that are not adaptive checks."""
    return [r for r in args.recipes if not RECIPES[r].defense_aware]


def summarise_row(row: RowModel, results: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """A row of the JSON: figures with intervals, no per-example data."""
    out: dict[str, Any] = {"name": row.name, "kind": row.spec.kind, "params": row.params}
    out["defenses"] = list(row.defense.names) if row.defense else []
    out |= {k: v for k, v in row.extra.items() if k != "defenses" and v is not None}
    out["fingerprint"] = row.fingerprint
    if results:
        first = next(iter(results.values()))
        clean = outcome_bits(first["clean"])
        out["clean_accuracy"] = round(float(clean.mean()), 4)
        out["clean_ci95"] = _interval(clean, args)
    out["attacks"] = {}
    for recipe, r in results.items():
        robust = outcome_bits(r["robust"])
        out["attacks"][recipe] = {
            "accuracy_under_attack": round(r["accuracy_under_attack"], 4), "ci95": _interval(robust, args),
            "attack_success_rate": round(r["attack_success_rate"], 4), "successful": r["successful"],
            "failed": r["failed"], "skipped": r["skipped"], "mean_queries": round(r["mean_queries"], 1),
            "mean_perturbed_word_pct": round(r["mean_perturbed_word_pct"], 2), "seconds": round(r["seconds"], 1),
            "file": r.get("file"),  # the per-example outcomes, under the work dir's attacks/ (bench/paired_attacks.py)
        }
    if results and set(stock_recipes(args)) <= set(results):
        mean = np.mean([outcome_bits(results[r]["robust"]) for r in stock_recipes(args)], axis=0)
        out["mean_accuracy_under_attack"] = round(float(mean.mean()), 4)
        out["mean_ci95"] = _interval(mean, args)
    return out


def comparisons(rows: list[tuple[RowModel, dict[str, dict[str, Any]]]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each row minus the plain-KD reference on the same examples (paired bootstrap), per figure."""
    reference = next(((m, r) for m, r in rows if m.spec.kind == "plain_kd"), None)
    if reference is None:
        return []
    ref_model, ref_results = reference
    out = []
    for model, results in rows:
        if model is ref_model:
            continue
        figures: dict[str, Any] = {}
        shared = [r for r in stock_recipes(args) if r in results and r in ref_results]
        pairs = [(r, outcome_bits(results[r]["robust"]), outcome_bits(ref_results[r]["robust"])) for r in shared]
        if shared:
            pairs.insert(0, ("clean", outcome_bits(results[shared[0]]["clean"]), outcome_bits(ref_results[shared[0]]["clean"])))
        if len(shared) == len(stock_recipes(args)):
            pairs.append(("mean", np.mean([p[1] for p in pairs[1:]], axis=0), np.mean([p[2] for p in pairs[1:]], axis=0)))
        for figure, a, b in pairs:
            diff, low, high = paired_difference_interval(a, b, resamples=args.resamples, seed=args.seed)
            figures[figure] = {"difference": round(diff, 4), "ci95": [round(low, 4), round(high, 4)],
                               "outside_interval": bool(low > 0 or high < 0)}
        if figures:
            out.append({"row": model.name, "against": ref_model.name, "figures": figures})
    return out


def protocol(config: Config, args: argparse.Namespace, digest: str, results: list[dict[str, dict[str, Any]]],
             genome: Genome, device: Any) -> dict[str, Any]:
    constraints: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    for per_row in results:
        for recipe, r in per_row.items():
            constraints.setdefault(recipe, r["constraints"])
            notes.setdefault(recipe, r["notes"])
    machine = describe_machine(device)
    return {
        "task": config.data.task, "split": "dev", "n": args.n, "seed": args.seed, "recipes": list(args.recipes),
        "defense_aware_recipes": [r for r in args.recipes if RECIPES[r].defense_aware],
        "examples_sha256": digest, "query_budget": config.attack.query_budget, "max_length": config.data.max_length,
        "constraints": constraints, "replaced_offline": notes,
        "bootstrap": {"method": "percentile, per-example resampling (paired for differences)", "level": 0.95,
                      "resamples": args.resamples, "seed": args.seed},
        "reference_genome": genome.to_dict(), "reference_genome_hash": genome.hash(),
        "config": {"file": args.config.name, "teacher": config.teacher.model, "train_limit": config.data.train_limit,
                   "distill_max_steps": config.distill.max_steps, "overrides": list(args.overrides)},
        "machine": {"device": machine.device, "cpu": machine.cpu_model, "usable_cpus": machine.usable_cpus, "torch_threads": machine.torch_threads,
                    "torch": machine.torch, "transformers": machine.transformers},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _pct(value: float | None, ci: Sequence[float] | None = None) -> str:
    if value is None:
        return "…"
    text = f"{100 * value:.1f}"
    return f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else text


def markdown(summary: dict[str, Any]) -> str:
    """The table README quotes: one line per row, accuracies in % with 95% intervals."""
    proto = summary["protocol"]
    recipes = proto["recipes"]
    head = ["model", "kind", "params", "clean acc"] + [f"{r} acc" for r in recipes] + ["mean under attack"]
    head += [f"{r} success / queries / s" for r in recipes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["rows"]:
        attacks = row.get("attacks", {})
        cells = [row["name"], row["kind"], f"{row['params'] / 1e6:.2f}M", _pct(row.get("clean_accuracy"), row.get("clean_ci95"))]
        missing = {r: "n/a" if r in proto.get("defense_aware_recipes", ()) and not row.get("defenses") else "…" for r in recipes}
        cells += [_pct(attacks[r]["accuracy_under_attack"], attacks[r]["ci95"]) if r in attacks else missing[r] for r in recipes]
        cells.append(_pct(row.get("mean_accuracy_under_attack"), row.get("mean_ci95")))
        cells += [f"{100 * attacks[r]['attack_success_rate']:.1f}% / {attacks[r]['mean_queries']:.0f} / {attacks[r]['seconds']:.0f}"
                  if r in attacks else missing[r] for r in recipes]
        lines.append("| " + " | ".join(cells) + " |")
    replaced = "; ".join(f"{r}: {', '.join(n)}" for r, n in proto["replaced_offline"].items() if n) or "none"
    lines += ["", f"SST-2 dev, n={proto['n']} (seed {proto['seed']}), accuracies in % with 95% percentile-bootstrap "
              f"intervals ({proto['bootstrap']['resamples']} per-example resamples); TextAttack stock constraints, "
              f"replaced offline: {replaced}. {proto['date']}."]
    aware = proto.get("defense_aware_recipes") or []
    if aware:
        lines += ["", f"Mean under attack and the paired differences are over the stock recipes "
                  f"({', '.join(r for r in recipes if r not in aware)}); {', '.join(aware)} are adaptive checks built from "
                  "a row's own defense (n/a on undefended rows)."]
    for comp in summary.get("comparisons", []):
        parts = [f"{k} {100 * v['difference']:+.1f} [{100 * v['ci95'][0]:+.1f}, {100 * v['ci95'][1]:+.1f}]"
                 for k, v in comp["figures"].items()]
        lines.append(f"- {comp['row']} minus {comp['against']} (paired, points): {'; '.join(parts)}")
    return "\n".join(lines) + "\n"


def write_summary(summary: dict[str, Any], args: argparse.Namespace) -> None:
    for path, text in ((args.json, json.dumps(summary, indent=1) + "\n"), (args.markdown, markdown(summary))):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def run(args: argparse.Namespace) -> int:
    from rosearch.runtime.settings import apply_run_settings

    config = load_config(args.config, args.overrides)
    device = apply_run_settings(config.run)
    if config.data.task != "sst2":
        logger.warning("robustness benchmark: task %s (the reported protocol is SST-2)", config.data.task)
    specs = row_specs(args)
    genome = Genome.from_json(args.genome.read_text())
    if genome.defenses:
        raise BenchError(f"--genome {args.genome} carries defenses {list(genome.defenses)}; the reference genome is "
                         "the bare architecture (fix: drop 'defenses' and add a defense:... row instead)")
    examples = sample_examples(config, args.n, args.seed)
    digest = examples_digest(examples)
    logger.info("robustness: %d rows x %s on %d %s dev examples (seed %d, sha256 %s)", len(specs),
                "+".join(args.recipes), len(examples), config.data.task, args.seed, digest)
    done: list[tuple[RowModel, dict[str, dict[str, Any]]]] = []
    start = time.perf_counter()

    def publish() -> dict[str, Any]:
        summary = {"protocol": protocol(config, args, digest, [r for _, r in done], genome, device),
                   "rows": [summarise_row(m, r, args) for m, r in done], "comparisons": comparisons(done, args)}
        write_summary(summary, args)
        return summary

    for i, spec in enumerate(specs, start=1):
        row = load_row(spec, config, genome, args.work_dir)
        logger.info("row %d/%d: %s (%s, %.2fM params, defense %s)", i, len(specs), row.name, spec.kind,
                    row.params / 1e6, row.defense or "none")
        row.model.to(device)
        results: dict[str, dict[str, Any]] = {}
        done.append((row, results))
        for recipe in args.recipes:
            if RECIPES[recipe].defense_aware and not row.defense:
                logger.info("%s / %s: skipped (an adaptive check of a defense; this row has none)", row.name, recipe)
                continue
            path = result_path(args.work_dir, row, recipe, args.n, args.seed, digest, config)
            if args.saved_only and not path.is_file():
                logger.info("%s / %s: not attacked yet; left out (--saved-only)", row.name, recipe)
                continue
            results[recipe] = {**attack_row(row, recipe, examples, config, args.seed, path, device), "file": path.name}
            publish()
            logger.info("%s / %s: accuracy under attack %.3f (%.0fs since start)", row.name, recipe,
                        results[recipe]["accuracy_under_attack"], time.perf_counter() - start)
        row.model = None  # type: ignore[assignment]  # free the weights before the next row
    summary = publish()
    console().print(markdown(summary), markup=False, highlight=False)
    logger.info("robustness: wrote %s and %s", args.json, args.markdown)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from rosearch.attack.resources import MissingResourceError
    from rosearch.defense import DefenseError
    from rosearch.runtime.logs import setup_logging

    args = parse_args(argv)
    setup_logging("INFO")
    try:
        return run(args)
    except (BenchError, ConfigError, DataError, DefenseError, MissingResourceError) as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
