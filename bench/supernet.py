"""Supernet fidelity vs stand-alone distillation: seconds per architecture, and whether the ranks agree.

One run measures, on the same seeded architectures of one search space and the same seeded
validation examples:

* ``standalone``: each architecture distilled from scratch (``distill.max_steps``, reduced here and
  stated next to every figure), its validation accuracy, and its accuracy under the attack panel
  on the attack sample; seconds split into KD, evaluation and attack;
* ``supernet``: the weight-sharing supernet trained once (single-path, cached by content key,
  resumable), then every architecture evaluated with inherited weights on the same examples;
  seconds split into extraction, evaluation and attack (the supernet's training, once, apart);
* ``report``: the ratio of seconds per architecture, and Spearman's rho (with p) between inherited
  and stand-alone accuracy and robustness, written to ``bench/results/supernet.json``.

Phases keep their per-architecture results under ``--work-dir`` and an interrupted phase goes on
where it stopped. From the repository root::

    .venv/bin/python bench/supernet.py standalone    # ~1 min per architecture on one core
    .venv/bin/python bench/supernet.py supernet      # the supernet's training, then ~seconds each
    .venv/bin/python bench/supernet.py standalone --retest   # again, other seeds: the reference's own rho
    .venv/bin/python bench/supernet.py report

The inherited figures' own noise: a supernet trained with another seed (``run.seed``: its
initialisation, batch order and sampled paths) evaluates the same architectures, and the report
gives the rank agreement of the two supernets::

    .venv/bin/python bench/supernet.py supernet --set run.seed=1 --side-by-side 0 --work-dir runs/bench-supernet-s1
    .venv/bin/python bench/supernet.py report --reseeded runs/bench-supernet-s1
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rosearch.config import Config, ConfigError, load_config

logger = logging.getLogger("bench.supernet")

DEFAULT_CONFIG = Path("configs/bench_robustness.yaml")
DEFAULT_JSON = Path("bench/results/supernet.json")
# the bench config plus a robustness figure: DeepWordBug on a seeded slice of the validation split
BENCH_OVERRIDES: tuple[str, ...] = (
    "attack.enabled=true",
    "attack.recipes=[deepwordbug]",
    "attack.num_examples=50",
    "attack.full_attack=all",
    "run.name=bench-supernet",
    "run.num_threads=1",  # a shared, loaded machine: more intra-op threads than free cores only spin
    # a narrower space than the bench config's (H <= 256, L <= 4), sized to this shared 2-core machine
    "search_space.hidden_sizes=[64,128]",
    "search_space.num_layers=[1,2,3]",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("phase", choices=("standalone", "supernet", "report"))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--architectures", type=int, default=20, help="seeded architectures compared (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the architectures' draw")
    parser.add_argument("--standalone-steps", type=int, default=200,
                        help="KD steps of each stand-alone distillation (default 200, reduced from the config's)")
    parser.add_argument("--supernet-steps", type=int, default=3000, help="single-path steps of the supernet (default 3000)")
    parser.add_argument("--side-by-side", type=int, default=2,
                        help="architectures also distilled stand-alone inside the supernet phase (default 2)")
    parser.add_argument("--retest", action="store_true",
                        help="standalone phase: distil again with other seeds (init, batch order): the noise ceiling of rho")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-supernet"))
    parser.add_argument("--reseeded", type=Path, action="append", default=[], metavar="WORK_DIR",
                        help="report: the work dir of a supernet phase run with another run.seed (repeatable)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def bench_config(args: argparse.Namespace) -> Config:
    return load_config(args.config, [*BENCH_OVERRIDES, *args.overrides])


def architectures(config: Config, inputs: Any, count: int, seed: int) -> list[Any]:
    """``count`` distinct seeded draws of the search space (the search's own sampler and budget)."""
    from rosearch.search_space.cost import count_parameters
    from rosearch.search_space.sampling import sample_genome

    param_count = partial(count_parameters, vocab_size=inputs.vocab_size, num_labels=inputs.num_labels,
                          max_position_embeddings=inputs.max_position_embeddings, type_vocab_size=inputs.type_vocab_size)
    rng = random.Random(seed)
    genomes: dict[str, Any] = {}
    while len(genomes) < count:
        genome = sample_genome(rng, config.search_space, param_count=param_count)
        genomes.setdefault(genome.hash(), genome)
    return list(genomes.values())


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def _attack_figures(model: Any, inputs: Any, config: Config, device: Any, name: str) -> tuple[dict[str, Any], float]:
    from rosearch.config import attack_panel
    from rosearch.evaluate.robustness import full_attack_metrics, panel_metrics

    start = time.perf_counter()
    metrics = full_attack_metrics(model, inputs, config.attack, config.data, cache_dir=config.run.cache_dir, device=device,
                                  name=name)
    metrics |= panel_metrics(metrics, attack_panel(config.attack), config.attack.panel_aggregate)
    return metrics, time.perf_counter() - start


def run_standalone(args: argparse.Namespace) -> int:
    import dataclasses

    from rosearch.evaluate.candidate import evaluate_candidate
    from rosearch.prepare.inputs import prepare_inputs
    from rosearch.runtime.settings import apply_run_settings
    from rosearch.search import candidate_seed

    config = bench_config(args)
    config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, max_steps=args.standalone_steps))
    device = apply_run_settings(config.run)
    inputs = prepare_inputs(config, device)
    path = args.work_dir / ("standalone-retest.json" if args.retest else "standalone.json")
    seed_of = partial(candidate_seed, config.run.seed + (1 if args.retest else 0))
    done = _load(path)
    for i, genome in enumerate(architectures(config, inputs, args.architectures, args.seed), start=1):
        key = genome.hash()
        if done.get(key, {}).get("steps") == args.standalone_steps:
            continue
        model, metrics = evaluate_candidate(genome, inputs, config.distill, seed=seed_of(key), device=device)
        attack, attack_seconds = _attack_figures(model, inputs, config, device, key[:12])
        done[key] = {"genome": genome.to_dict(), "steps": args.standalone_steps, "val_accuracy": metrics.val_accuracy,
                     "dev_accuracy": metrics.dev_accuracy, "robust_accuracy": attack["robust_accuracy"],
                     "params": metrics.params, "train_seconds": metrics.train_seconds,
                     "eval_seconds": metrics.eval_seconds, "attack_seconds": attack_seconds}
        _save(path, done)
        logger.info("standalone %d/%d %s: val %.3f, robust %.3f, %.0fs KD + %.1fs eval + %.1fs attack", i,
                    args.architectures, key[:12], metrics.val_accuracy, attack["robust_accuracy"],
                    metrics.train_seconds, metrics.eval_seconds, attack_seconds)
    return 0


def supernet_config(args: argparse.Namespace) -> Config:
    return load_config(args.config, [*BENCH_OVERRIDES, "supernet.fidelity=supernet",
                                     f"supernet.max_steps={args.supernet_steps}", *args.overrides])


def run_supernet(args: argparse.Namespace) -> int:
    """Train (or resume, or read) the supernet, then evaluate every architecture with inherited weights;
    the first ``--side-by-side`` architectures are also distilled stand-alone in this same process,
    alternating with their inherited evaluation, for a ratio measured under one load."""
    import dataclasses

    from rosearch.evaluate.candidate import evaluate_candidate
    from rosearch.prepare.inputs import prepare_inputs
    from rosearch.runtime.settings import apply_run_settings
    from rosearch.search import candidate_seed
    from rosearch.supernet.fidelity import evaluate_inherited, load_or_train_supernet

    config = supernet_config(args)
    device = apply_run_settings(config.run)
    inputs = prepare_inputs(config, device)
    weights = load_or_train_supernet(config, inputs, (), device)
    inputs = dataclasses.replace(inputs, supernets={"": weights})
    path = args.work_dir / "inherited.json"
    done = _load(path)
    if done.get("supernet_key") != weights.key:
        done = {"supernet_key": weights.key, "architectures": {}}
    done["supernet"] = {"steps": weights.steps, "train_seconds": weights.train_seconds, "final_loss": weights.final_loss,
                        "parameters": int(sum(a.size for a in weights.arrays.values()))}
    standalone = dataclasses.replace(config, distill=dataclasses.replace(config.distill, max_steps=args.standalone_steps))
    for i, genome in enumerate(architectures(config, inputs, args.architectures, args.seed), start=1):
        key = genome.hash()
        start = time.perf_counter()
        metrics = evaluate_inherited(genome, inputs, config, device=device, name=key[:12])
        row = {"genome": genome.to_dict(), "seconds": time.perf_counter() - start,
               **{k: metrics.get(k) for k in ("val_accuracy", "dev_accuracy", "robust_accuracy", "params",
                                             "extract_seconds", "eval_seconds", "attack_wall_seconds")}}
        if i <= args.side_by_side:
            start = time.perf_counter()
            model, alone = evaluate_candidate(genome, inputs, standalone.distill, seed=candidate_seed(config.run.seed, key),
                                              device=device)
            _, attack_seconds = _attack_figures(model, inputs, standalone, device, key[:12])
            row["standalone_seconds_here"] = time.perf_counter() - start
            row["standalone_parts_here"] = {"train": alone.train_seconds, "eval": alone.eval_seconds,
                                            "attack": attack_seconds}
        done["architectures"][key] = row
        _save(path, done)
        logger.info("inherited %d/%d %s: val %.3f, robust %.3f, %.1fs (extract %.2f, eval %.2f, attack %.2f)%s", i,
                    args.architectures, key[:12], row["val_accuracy"], row["robust_accuracy"] or float("nan"),
                    row["seconds"], row["extract_seconds"], row["eval_seconds"], row["attack_wall_seconds"] or 0.0,
                    f"; stand-alone here {row['standalone_seconds_here']:.1f}s" if "standalone_seconds_here" in row else "")
    return 0


def _spearman(pairs: list[tuple[float, float]]) -> dict[str, Any] | None:
    from rosearch.records.agreement import spearman

    return spearman([a for a, _ in pairs], [b for _, b in pairs])


def _reseeded_agreement(rows: dict[str, Any], common: list[str], dirs: list[Path]) -> list[dict[str, Any]]:
    """Per other-seed supernet: Spearman's rho and the sd of one figure's difference / sqrt 2 (one supernet's noise)."""
    results = []
    for folder in dirs:
        reseeded = _load(folder / "inherited.json")
        other = reseeded.get("architectures", {})
        shared = [k for k in common if k in other]
        if len(shared) < 3:
            raise ConfigError(f"report --reseeded {folder}: {len(shared)} shared architectures (fix: run its supernet "
                              "phase with the same --architectures and --seed)")
        entry: dict[str, Any] = {"work_dir": folder.name, "architectures": len(shared),
                                 "supernet": reseeded.get("supernet")}
        for figure in ("val_accuracy", "dev_accuracy", "robust_accuracy"):
            pairs = [(float(rows[k][figure]), float(other[k][figure])) for k in shared
                     if rows[k].get(figure) is not None and other[k].get(figure) is not None]
            diffs = np.array([a - b for a, b in pairs])
            entry[figure] = {"spearman": _spearman(pairs),
                             "seed_sd": float(np.sqrt(np.mean(diffs ** 2) / 2)) if len(diffs) else None,
                             "between_architectures_sd": float(np.std([a for a, _ in pairs], ddof=1)) if len(pairs) > 1 else None}
        results.append(entry)
    return results


def run_report(args: argparse.Namespace) -> int:
    """The ratio of seconds per architecture and the rank agreement, from the two phases' files."""
    import dataclasses

    import torch
    from common import describe_machine

    alone = _load(args.work_dir / "standalone.json")
    inherited = _load(args.work_dir / "inherited.json")
    rows = inherited.get("architectures", {})
    common = [k for k in rows if k in alone]
    if len(common) < 3:
        raise ConfigError(f"report: {len(common)} architectures have both figures (fix: run the standalone and "
                          "supernet phases first)")
    agreement = {}
    for figure in ("val_accuracy", "dev_accuracy", "robust_accuracy"):
        pairs = [(float(rows[k][figure]), float(alone[k][figure])) for k in common
                 if rows[k].get(figure) is not None and alone[k].get(figure) is not None]
        agreement[figure] = _spearman(pairs)
    retest = _load(args.work_dir / "standalone-retest.json")
    ceiling = {}
    for figure in ("val_accuracy", "dev_accuracy", "robust_accuracy"):
        pairs = [(float(alone[k][figure]), float(retest[k][figure])) for k in common if k in retest]
        ceiling[figure] = _spearman(pairs)
    noise = {}
    for figure in ("val_accuracy", "dev_accuracy", "robust_accuracy"):
        diffs = np.array([float(alone[k][figure]) - float(retest[k][figure]) for k in common if k in retest])
        if len(diffs):  # one run's seed noise (sd of a difference of two runs / sqrt 2) vs the architectures' spread
            noise[figure] = {"seed_sd": float(np.sqrt(np.mean(diffs ** 2) / 2)), "pairs": len(diffs),
                             "between_architectures_sd": float(np.std([float(alone[k][figure]) for k in common], ddof=1))}
    reseeded = _reseeded_agreement(rows, common, args.reseeded)
    standalone_seconds = [alone[k]["train_seconds"] + alone[k]["eval_seconds"] + alone[k]["attack_seconds"] for k in common]
    inherited_seconds = [rows[k]["seconds"] for k in common]
    side = [rows[k] for k in common if "standalone_seconds_here" in rows[k]]
    supernet = inherited["supernet"]
    summary = {
        "protocol": {
            "config": str(args.config), "overrides": [*BENCH_OVERRIDES, *args.overrides],
            "architectures": len(common), "architecture_seed": args.seed,
            "standalone_kd_steps": alone[common[0]]["steps"], "supernet": supernet,
            "machine": dataclasses.asdict(describe_machine(torch.device("cpu"))),
        },
        "seconds_per_architecture": {
            "standalone_mean": float(np.mean(standalone_seconds)),
            "standalone_parts_mean": {part: float(np.mean([alone[k][f"{part}_seconds"] for k in common]))
                                      for part in ("train", "eval", "attack")},
            "supernet_mean": float(np.mean(inherited_seconds)),
            "supernet_parts_mean": {part: float(np.mean([rows[k][f"{part}_seconds"] or 0.0 for k in common]))
                                    for part in ("extract", "eval")}
            | {"attack": float(np.mean([rows[k]["attack_wall_seconds"] or 0.0 for k in common]))},
            "ratio": float(np.mean(standalone_seconds) / np.mean(inherited_seconds)),
            "supernet_training_per_architecture_at_1000": supernet["train_seconds"] / 1000,
            "side_by_side": [{"standalone": r["standalone_seconds_here"], "supernet": r["seconds"],
                              "ratio": r["standalone_seconds_here"] / r["seconds"]} for r in side],
        },
        "spearman": agreement,
        # the same architectures distilled stand-alone again with other seeds: how well the reference ranks itself
        "spearman_standalone_retest": ceiling,
        "standalone_seed_noise": noise,
        # the same architectures inherited from supernets trained with other seeds: how well a supernet ranks itself
        "supernet_reseeded": reseeded,
        "rows": {k: {"standalone": {f: alone[k].get(f) for f in ("val_accuracy", "dev_accuracy", "robust_accuracy")},
                     "inherited": {f: rows[k].get(f) for f in ("val_accuracy", "dev_accuracy", "robust_accuracy")},
                     "params": alone[k]["params"]} for k in common},
    }
    _save(args.json, summary)
    for figure, result in agreement.items():
        if result is None:
            logger.info("%s: no rank correlation (constant figures)", figure)
        else:
            logger.info("%s: Spearman rho %.3f (p %.3g, n %d)%s", figure, result["rho"], result["p"], result["n"],
                        "" if result["rho"] >= 0.6 else "  -- below the 0.6 target")
    s = summary["seconds_per_architecture"]
    logger.info("seconds per architecture: stand-alone %.1f, supernet %.2f, ratio %.1fx; wrote %s",
                s["standalone_mean"], s["supernet_mean"], s["ratio"], args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        if args.phase == "standalone":
            return run_standalone(args)
        if args.phase == "supernet":
            return run_supernet(args)
        return run_report(args)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
