#!/usr/bin/env python
"""Distil one genome under each robust KD method and compare clean and adversarial accuracy.

    python scripts/compare_distill_methods.py --config configs/sst2_offline.yaml --genome GENOME.json \\
        --methods plain augment mate_kd layer_kd rift adv_finetune --attack-recipes deepwordbug pwws \\
        --attack-n 200 --steps 1000 --out runs/methods

Every method distils the same genome from the same initial weights (same seed) for the same
number of KD steps (``plain`` is ``distill.methods=()``), then is measured on the whole dev split
and attacked with each recipe on one seeded dev sample (``attack.seed``). The once-per-run
inputs (teacher outputs with attention and features, augmented set, MATE-KD generator) are
built once for all methods and cached. Each method's row is written to ``<out>/rows/`` as soon
as it is done, and ``<out>/methods.md`` / ``methods.csv`` are rewritten after every row; a
re-run skips rows whose settings are unchanged, so a crash loses at most the method in
progress. Exit status: 0 when every method finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import torch

from rosearch.config import Config, load_config
from rosearch.data.tasks import get_task, load_split
from rosearch.distill.methods import METHODS, prepare_method_inputs, teacher_cache_request
from rosearch.distill.teacher import load_teacher
from rosearch.distill.teacher_cache import load_or_compute_teacher_outputs
from rosearch.distill.trainer import distill
from rosearch.data.predictions import accuracy
from rosearch.evaluate.candidate import build_student
from rosearch.prepare.inputs import prepare_inputs
from rosearch.runtime.settings import apply_run_settings
from rosearch.search_space.genome import Genome

logger = logging.getLogger("compare_distill_methods")

PLAIN = "plain"
DEFAULT_NEIGHBORS = "../shared/data/embeddings/counterfitted_neighbors.json.gz"  # the offline copy's usual place


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="run config (YAML/TOML); its distill section is the base")
    parser.add_argument("--genome", required=True, help="genome JSON (e.g. a search's best_genome.json)")
    parser.add_argument("--methods", nargs="+", default=[PLAIN, *METHODS],
                        help=f"methods to compare: {PLAIN} (no method) and any of {', '.join(METHODS)}")
    parser.add_argument("--attack-recipes", nargs="+", default=["deepwordbug"], help="rosearch.attack recipes")
    parser.add_argument("--attack-n", type=int, default=200, help="dev examples attacked per recipe (seeded sample)")
    parser.add_argument("--steps", type=int, default=None, help="KD steps per method (default: distill.max_steps)")
    parser.add_argument("--out", required=True, help="output folder for rows and tables")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set distill.augment.limit=4000 (repeatable)")
    parser.add_argument("--save-students", action="store_true", help="save each trained student under <out>/students/")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m != PLAIN and m not in METHODS]
    if unknown or len(set(args.methods)) != len(args.methods):
        parser.error(f"--methods {args.methods}: each once, from {PLAIN}, {', '.join(METHODS)}")
    if args.attack_n < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--attack-n and --steps must be >= 1")
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The base config with every compared method on (for validation and the once-per-run inputs)."""
    methods = [m for m in args.methods if m != PLAIN]
    overrides = [f"distill.methods={json.dumps(methods)}", "attack.enabled=false", *args.overrides]
    if args.steps is not None:
        overrides.append(f"distill.max_steps={args.steps}")
    probe = load_config(args.config, args.overrides)
    needs_table = "augment" in methods and "neighbors" in probe.distill.augment.recipes
    if needs_table and probe.attack.neighbors_path is None and Path(DEFAULT_NEIGHBORS).is_file():
        logger.info("attack.neighbors_path unset: using %s for the 'neighbors' augmenter", DEFAULT_NEIGHBORS)
        overrides.insert(0, f"attack.neighbors_path={DEFAULT_NEIGHBORS}")
    return load_config(args.config, overrides)


def method_config(config: Config, method: str) -> Any:
    return dataclasses.replace(config.distill, methods=() if method == PLAIN else (method,))


def settings_of(config: Config, method: str, genome: Genome, args: argparse.Namespace) -> dict[str, Any]:
    """Everything a row's numbers depend on; a stored row is reused only when these are equal."""
    return {
        "method": method, "genome": genome.hash(), "seed": config.run.seed,
        "distill": dataclasses.asdict(method_config(config, method)),
        "data": dataclasses.asdict(config.data), "teacher": config.teacher.model,
        "attack": {"recipes": list(args.attack_recipes), "n": args.attack_n, "seed": config.attack.seed,
                   "query_budget": config.attack.query_budget, "neighbors_path": config.attack.neighbors_path},
    }


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_row(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("row %s is unreadable (%s); running the method again", path, err)
        return None
    if row.get("settings") != json.loads(json.dumps(settings)):
        logger.info("row %s was made with other settings; running the method again", path)
        return None
    return row


def run_method(method: str, config: Config, genome: Genome, shared: dict[str, Any], args: argparse.Namespace,
               device: torch.device) -> dict[str, Any]:
    """Distil, evaluate and attack one student; returns the row (settings added by the caller)."""
    from rosearch.attack.runner import attack_model

    inputs = shared["inputs"]
    cfg = method_config(config, method)
    student = build_student(genome, inputs, config.distill, seed=config.run.seed).to(device)
    every = max(1, cfg.max_steps // 10)

    def progress(step: int, total: int, loss: float) -> None:
        logger.info("%s: step %d/%d, loss %.4f", method, step, total, loss)

    result = distill(student, inputs.train, shared["teacher_outputs"], cfg, seed=config.run.seed, device=device,
                     progress=progress, log_every=every, method_inputs=shared["method_inputs"] if method != PLAIN else None)
    start = time.perf_counter()
    dev_accuracy = accuracy(student, inputs.dev, batch_size=cfg.eval_batch_size, device=device)
    logger.info("%s: dev accuracy %.4f (%.1fs), trained in %.1fs", method, dev_accuracy, time.perf_counter() - start,
                result.train_seconds)
    row: dict[str, Any] = {
        "method": method, "dev_accuracy": dev_accuracy, "train_seconds": result.train_seconds,
        "steps": result.steps, "final_loss": result.final_loss, "examples_per_second": result.examples_per_second,
        "method_stats": result.method_stats, "attacks": {},
    }
    for recipe in args.attack_recipes:
        report = attack_model(
            student, shared["tokenizer"], shared["attack_examples"], config.attack, recipe=recipe,
            cache_dir=config.run.cache_dir, model_name=method, max_length=config.data.max_length, device=device,
            text_columns=shared["text_columns"],
        )
        row["attacks"][recipe] = {k: v for k, v in report.to_dict().items() if k != "examples"}
    if args.save_students:
        student.save_pretrained(Path(args.out) / "students" / method)
    return row


def write_tables(rows: list[dict[str, Any]], errors: dict[str, str], recipes: list[str], out: Path) -> None:
    """methods.md (human) and methods.csv (one row per method), rewritten from all rows so far."""
    header = ["method", "dev acc"]
    for recipe in recipes:
        header += [f"acc under {recipe}", f"{recipe} success rate", f"{recipe} s"]
    header += ["train s", "notes"]
    lines = []
    records = []
    for row in rows:
        cells = [row["method"], f"{row['dev_accuracy']:.4f}"]
        record = {"method": row["method"], "dev_accuracy": row["dev_accuracy"]}
        for recipe in recipes:
            attack = row["attacks"].get(recipe, {})
            cells += [f"{attack.get('accuracy_under_attack', float('nan')):.4f}",
                      f"{attack.get('attack_success_rate', float('nan')):.3f}",
                      f"{attack.get('wall_seconds', float('nan')):.0f}"]
            for key in ("accuracy_under_attack", "attack_success_rate", "clean_accuracy", "mean_perturbed_word_pct",
                        "mean_queries", "wall_seconds", "n"):
                record[f"{recipe}_{key}"] = attack.get(key)
        stats = row.get("method_stats", {})
        notes = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(stats.items()))
        cells += [f"{row['train_seconds']:.0f}", notes]
        record.update({"train_seconds": row["train_seconds"], "steps": row["steps"], "final_loss": row["final_loss"],
                       "method_stats": json.dumps(stats, sort_keys=True)})
        lines.append("| " + " | ".join(cells) + " |")
        records.append(record)
    for method, error in errors.items():
        lines.append("| " + " | ".join([method, "failed: " + error.replace("|", "/")] + [""] * (len(header) - 2)) + " |")
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *lines]) + "\n"
    write_atomically(out / "methods.md", markdown)
    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    write_atomically(out / "methods.csv", buffer.getvalue())


def prepare_shared(config: Config, device: torch.device, n: int) -> dict[str, Any]:
    """Inputs every method shares: data, teacher outputs (with what layer_kd/rift need), method
    inputs, the tokenizer and the seeded dev sample to attack."""
    from rosearch.attack.runner import sample_attack_examples

    inputs = prepare_inputs(config, device)
    task = get_task(config.data.task)
    teacher, tokenizer = load_teacher(inputs.teacher_dir, task.num_labels, device)
    request = teacher_cache_request(config, int(teacher.config.num_hidden_layers))
    outputs = load_or_compute_teacher_outputs(
        teacher, inputs.teacher_dir, inputs.train, batch_size=config.teacher.eval_batch_size, device=device,
        cache_dir=config.run.cache_dir, **request.kwargs(),
    )
    del teacher
    train_examples, _ = load_split(config.data, "train", tokenizer, config.run.cache_dir, config.run.seed)
    dev_examples, _ = load_split(config.data, "dev", tokenizer, config.run.cache_dir, config.run.seed)
    method_inputs = prepare_method_inputs(config, teacher_dir=inputs.teacher_dir, train_examples=train_examples,
                                          train=inputs.train, device=device)
    return {
        "inputs": inputs, "teacher_outputs": outputs, "method_inputs": method_inputs, "tokenizer": tokenizer,
        "attack_examples": sample_attack_examples(dev_examples, n, config.attack.seed),
        "text_columns": tuple(task.text_columns),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    device = apply_run_settings(config.run)
    genome = Genome.from_json(Path(args.genome).read_text(encoding="utf-8"))
    out = Path(args.out)
    rows_dir = out / "rows"
    logger.info("comparing %s on genome %s: %d steps, seed %d, attacks %s on %d dev examples -> %s",
                ", ".join(args.methods), genome.hash()[:12], config.distill.max_steps, config.run.seed,
                ", ".join(args.attack_recipes), args.attack_n, out)
    todo, rows = [], {}
    for method in args.methods:
        row = load_row(rows_dir / f"{method}.json", settings_of(config, method, genome, args))
        if row is not None:
            logger.info("%s: already done (%s), skipping", method, rows_dir / f"{method}.json")
            rows[method] = row
        else:
            todo.append(method)
    errors: dict[str, str] = {}
    if todo:
        start = time.perf_counter()
        shared = prepare_shared(config, device, args.attack_n)
        logger.info("shared inputs ready in %.1fs", time.perf_counter() - start)
        for method in todo:
            logger.info("=== %s ===", method)
            try:
                row = run_method(method, config, genome, shared, args, device)
            except Exception as err:  # one method's failure must not lose the others' rows
                logger.error("%s failed: %s\n%s", method, err, traceback.format_exc())
                errors[method] = f"{type(err).__name__}: {err}"
                write_tables([rows[m] for m in args.methods if m in rows], errors, args.attack_recipes, out)
                continue
            row["settings"] = settings_of(config, method, genome, args)
            write_atomically(rows_dir / f"{method}.json", json.dumps(row, indent=2, sort_keys=True) + "\n")
            rows[method] = row
            write_tables([rows[m] for m in args.methods if m in rows], errors, args.attack_recipes, out)
            logger.info("%s: row saved (%s)", method, rows_dir / f"{method}.json")
    write_tables([rows[m] for m in args.methods if m in rows], errors, args.attack_recipes, out)
    logger.info("table: %s\n%s", out / "methods.md", (out / "methods.md").read_text(encoding="utf-8"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
