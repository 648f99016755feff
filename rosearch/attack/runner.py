"""Run one attack recipe against one model on a fixed sample of examples, and report numbers.

Examples are attacked one by one with ``Attack.attack`` (TextAttack's ``Attacker`` would write
CSV logs and print interactively), under seeded RNGs that are restored afterwards so a caller's
training is not perturbed. Every example is seeded from its own position in the sample, and
TextAttack clears its caches after each example, so an example's result does not depend on
which others ran before it in the same process. That is what lets ``attack.num_workers`` CPU
processes share the sample in contiguous chunks and still return exactly the sequential
results. The summary uses TextAttack's ``Attacker`` definitions exactly:
skipped = originally misclassified; clean accuracy = (n - skipped) / n; accuracy under attack
= failed / n; success rate = successful / (successful + failed); words-perturbed % averaged over
successful attacks; queries averaged over the attacked (non-skipped) examples.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import random
import re
import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from rich.table import Table
from torch import nn

from rosearch.attack.recipes import build_attack
from rosearch.attack.resources import prepare_textattack
from rosearch.attack.wrapper import make_wrapper
from rosearch.defense.pipeline import Defense
from rosearch.config import AttackConfig
from rosearch.data.tasks import Example

logger = logging.getLogger(__name__)

AttackExample = Example
Status = Literal["successful", "failed", "skipped"]
_PROGRESS_STEPS = 10
_WORKER_LOG_FORMAT = "%(asctime)s %(levelname).1s %(name)s [attack worker %(process)d]: %(message)s"


@dataclass(frozen=True)
class ExampleResult:
    """The outcome of attacking one example (texts of pairs are joined with a newline)."""

    index: int  # position in the attacked sequence
    label: int
    status: Status
    original: str
    perturbed: str | None  # the adversarial text of a successful attack, else None
    queries: int
    perturbed_word_pct: float | None  # words changed (% of the original's words), successful only
    original_prediction: int
    perturbed_prediction: int


_Attacked = tuple[ExampleResult, tuple[str, ...] | None]  # a row and its perturbed text's columns (None: skipped)


@dataclass(frozen=True)
class AttackReport:
    """One recipe against one model: TextAttack's summary numbers plus per-example rows."""

    recipe: str
    model: str
    n: int
    clean_accuracy: float
    accuracy_under_attack: float
    attack_success_rate: float
    successful: int
    failed: int
    skipped: int
    mean_perturbed_word_pct: float
    mean_queries: float
    wall_seconds: float
    constraints: tuple[str, ...]
    notes: tuple[str, ...]
    examples: tuple[ExampleResult, ...]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat, JSON-ready numbers (fractions in [0, 1], counts as floats)."""
        values = {
            "robust_accuracy": self.accuracy_under_attack,
            "clean_accuracy_attacked_sample": self.clean_accuracy,
            "attack_success_rate": self.attack_success_rate,
            "attack_successful": self.successful,
            "attack_failed": self.failed,
            "attack_skipped": self.skipped,
            "perturbed_word_pct": self.mean_perturbed_word_pct,
            "attack_queries": self.mean_queries,
            "attack_seconds": self.wall_seconds,
            "attack_examples": self.n,
        }
        return {f"{prefix}{key}": float(value) for key, value in values.items()}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["constraints"] = list(self.constraints)
        data["notes"] = list(self.notes)
        data["examples"] = [dataclasses.asdict(e) for e in self.examples]
        return data


@dataclass(frozen=True)
class AttackOutcome:
    """A report plus each attack's final perturbed texts, column by column (the proxy set
    needs the columns of pair tasks separately)."""

    report: AttackReport
    perturbed_columns: tuple[tuple[str, ...] | None, ...]  # per example; None when skipped


def sample_attack_examples(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A seeded sample of ``n`` examples without replacement, in their original order (all of
    them when ``n`` >= len)."""
    if n < 1:
        raise ValueError(f"attack sample size must be >= 1, got {n} (fix: attack.num_examples)")
    if n >= len(examples):
        return list(examples)
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), n))]


# --------------------------------------------------------------------------------------------
# Attacking
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _restored_rngs() -> Iterator[None]:
    """Let recipes use python/numpy/torch (CPU) global RNGs, then put the caller's states back."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _seed_example(seed: int, index: int) -> None:
    """Per-example seeds: an example's attack does not depend on which others are attacked."""
    value = (seed * 1_000_003 + index) % 2**32
    random.seed(value)
    np.random.seed(value)
    torch.default_generator.manual_seed(value)  # CPU only: CUDA generators stay untouched


def _attack_input(example: Example, text_columns: tuple[str, ...]) -> str | OrderedDict:
    is_pair = example.text_b is not None
    if len(text_columns) != (2 if is_pair else 1):
        kind = "a sentence pair" if is_pair else "a single text"
        raise ValueError(
            f"text_columns {text_columns!r} do not fit {kind} (fix: pass one column name for single-text tasks, "
            "two for pair tasks, e.g. ('premise', 'hypothesis'))"
        )
    texts = (example.text_a, example.text_b) if is_pair else (example.text_a,)
    return OrderedDict(zip(text_columns, texts))


def _example_result(index: int, example: Example, result: Any) -> tuple[ExampleResult, tuple[str, ...] | None]:
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult

    original = result.original_result.attacked_text
    perturbed = result.perturbed_result.attacked_text
    if isinstance(result, SkippedAttackResult):
        status: Status = "skipped"
    elif isinstance(result, FailedAttackResult):
        status = "failed"
    else:  # SuccessfulAttackResult (untargeted classification never maximises)
        status = "successful"
    pct = columns = None
    if status == "successful":
        changed = len(original.all_words_diff(perturbed))
        pct = changed * 100.0 / len(original.words) if original.words else 0.0
    if status != "skipped":  # a failed attack's text is the hardest variant its search found
        columns = perturbed.tokenizer_input
        columns = (columns,) if isinstance(columns, str) else tuple(columns)
    row = ExampleResult(
        index=index, label=example.label, status=status, original=original.text,
        perturbed=perturbed.text if status == "successful" else None, queries=int(result.num_queries),
        perturbed_word_pct=pct, original_prediction=int(result.original_result.output),
        perturbed_prediction=int(result.perturbed_result.output),
    )
    return row, columns


def _summarise(recipe: str, model_name: str, rows: Sequence[ExampleResult], seconds: float,
               constraints: tuple[str, ...], notes: tuple[str, ...]) -> AttackReport:
    n = len(rows)
    successful = sum(r.status == "successful" for r in rows)
    failed = sum(r.status == "failed" for r in rows)
    skipped = n - successful - failed
    pcts = [r.perturbed_word_pct for r in rows if r.status == "successful" and r.perturbed_word_pct]
    queries = [r.queries for r in rows if r.status != "skipped"]
    return AttackReport(
        recipe=recipe, model=model_name, n=n,
        clean_accuracy=(n - skipped) / n,
        accuracy_under_attack=failed / n,
        attack_success_rate=successful / (successful + failed) if successful + failed else 0.0,
        successful=successful, failed=failed, skipped=skipped,
        mean_perturbed_word_pct=float(np.mean(pcts)) if pcts else 0.0,
        mean_queries=float(np.mean(queries)) if queries else 0.0,
        wall_seconds=seconds, constraints=constraints, notes=notes, examples=tuple(rows),
    )


def _attack_range(attack: Any, examples: Sequence[Example], inputs: Sequence[str | OrderedDict], seed: int,
                  start: int, on_result: Callable[[ExampleResult], None]) -> list[_Attacked]:
    """Attack ``examples`` (positions ``start``, ``start + 1``, ... of the whole sample) in order,
    each under its own seed; ``on_result`` sees every row as it is done (progress logging)."""
    results = []
    with _restored_rngs():
        for offset, (example, attack_input) in enumerate(zip(examples, inputs)):
            index = start + offset
            _seed_example(seed, index)
            row, columns = _example_result(index, example, attack.attack(attack_input, example.label))
            results.append((row, columns))
            on_result(row)
    return results


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker_count(cfg: AttackConfig, n: int, device: torch.device) -> int:
    """Processes to use: ``attack.num_workers``, at most one per example, and one on a GPU (where
    batched queries already keep the device busy and each process would hold its own model copy)."""
    workers = min(cfg.num_workers, n)
    if workers > 1 and device.type != "cpu":
        logger.info("attack: attack.num_workers=%d applies to CPU attacks; attacking on %s in this process",
                    cfg.num_workers, device)
        return 1
    return workers


@dataclass(frozen=True)
class _Chunk:
    """One worker process's contiguous share of a parallel attack (pickled once, sent once)."""

    model: nn.Module
    tokenizer: Any
    examples: tuple[Example, ...]
    text_columns: tuple[str, ...]
    start: int  # position of examples[0] in the whole sample (its seed)
    cfg: AttackConfig
    recipe: str
    cache_dir: str
    max_length: int
    threads: int  # torch intra-op threads in the worker: usable CPUs // workers
    log_level: int | None  # the parent's logging level (None: it configured no logging)
    defense: Defense | None = None  # the model's input defenses (part of what is attacked)


@dataclass(frozen=True)
class _ChunkResult:
    start: int
    rows: tuple[_Attacked, ...]
    constraints: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float


def _configure_worker_logging(level: int | None) -> None:
    """Spawned processes start with bare logging: mirror the parent's level on stderr."""
    if level is None:
        return
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_WORKER_LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)


def _attack_chunk(chunk: _Chunk) -> _ChunkResult:
    """Body of one worker process: build the attack on a CPU wrapper, attack the chunk."""
    start_time = time.perf_counter()
    _configure_worker_logging(chunk.log_level)
    torch.set_num_threads(chunk.threads)
    prepare_textattack(chunk.cfg, chunk.cache_dir)
    wrapper = make_wrapper(chunk.model, chunk.tokenizer, max_length=chunk.max_length,
                           batch_size=chunk.cfg.model_batch_size, device="cpu", defense=chunk.defense)
    built = build_attack(chunk.recipe, wrapper, chunk.cfg)
    inputs = [_attack_input(e, chunk.text_columns) for e in chunk.examples]
    n, end = len(chunk.examples), chunk.start + len(chunk.examples) - 1
    every = max(1, math.ceil(n / _PROGRESS_STEPS))
    done: list[ExampleResult] = []

    def progress(row: ExampleResult) -> None:
        done.append(row)
        if len(done) % every == 0 or len(done) == n:
            logger.info("attack: examples %d-%d: %d/%d done, %d successful, %.1fs elapsed", chunk.start, end,
                        len(done), n, sum(r.status == "successful" for r in done), time.perf_counter() - start_time)

    rows = _attack_range(built.attack, chunk.examples, inputs, chunk.cfg.seed, chunk.start, progress)
    return _ChunkResult(start=chunk.start, rows=tuple(rows), constraints=built.constraints, notes=built.notes,
                        seconds=time.perf_counter() - start_time)


def _attack_in_workers(model: nn.Module, tokenizer: Any, examples: Sequence[Example], cfg: AttackConfig, *,
                       recipe: str, cache_dir: str | Path, model_name: str, max_length: int,
                       text_columns: tuple[str, ...], workers: int, defense: Defense | None = None
                       ) -> tuple[list[_Attacked], tuple[str, ...], tuple[str, ...]]:
    """Split the sample into ``workers`` contiguous chunks and attack each in a spawned process.

    ``spawn`` (not ``fork``) because a forked child of a process that already ran OpenMP
    threads, or holds Ray or CUDA state, can deadlock. The model travels to each worker once
    (torch shares its tensors through shared memory); each worker imports TextAttack and builds
    its own attack, which costs seconds, so workers pay off on attacks that take longer than that.
    """
    n = len(examples)
    bounds = [i * n // workers for i in range(workers + 1)]  # contiguous chunks, sizes differ by at most one
    threads = max(1, _usable_cpus() // workers)
    root = logging.getLogger()
    log_level = root.getEffectiveLevel() if root.handlers else None
    chunks = [
        _Chunk(model=model, tokenizer=tokenizer, examples=tuple(examples[a:b]), text_columns=text_columns, start=a,
               cfg=cfg, recipe=recipe, cache_dir=str(cache_dir), max_length=max_length, threads=threads,
               log_level=log_level, defense=defense)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    logger.info("attack: %s on %s: %d examples in %d worker processes (%d torch thread(s) each)", recipe, model_name,
                n, workers, threads)
    start = time.perf_counter()
    results: list[_ChunkResult] = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_attack_chunk, chunk) for chunk in chunks]
        try:
            for future in concurrent.futures.as_completed(futures):
                result = future.result()
                results.append(result)
                done = sum(len(r.rows) for r in results)
                logger.info("attack: %s on %s: %d/%d done (examples %d-%d in %.1fs), %.1fs elapsed", recipe,
                            model_name, done, n, result.start, result.start + len(result.rows) - 1, result.seconds,
                            time.perf_counter() - start)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    results.sort(key=lambda r: r.start)
    rows = [row for result in results for row in result.rows]
    return rows, results[0].constraints, results[0].notes


def run_attack(model: nn.Module, tokenizer: Any, examples: Sequence[Example], cfg: AttackConfig, *,
               recipe: str | None, cache_dir: str | Path, model_name: str, max_length: int,
               device: torch.device | str, text_columns: tuple[str, ...], defense: Defense | None = None) -> AttackOutcome:
    """:func:`attack_model`, also returning the perturbed texts column by column."""
    if not examples:
        raise ValueError("no examples to attack (fix: check attack.num_examples and the dev split)")
    inputs = [_attack_input(e, text_columns) for e in examples]  # validates the columns up front
    name = recipe or cfg.recipe
    start = time.perf_counter()
    prepare_textattack(cfg, cache_dir)
    device = torch.device(device)
    n = len(examples)
    workers = _worker_count(cfg, n, device)
    if workers > 1:
        results, constraints, notes = _attack_in_workers(
            model, tokenizer, examples, cfg, recipe=name, cache_dir=cache_dir, model_name=model_name,
            max_length=max_length, text_columns=text_columns, workers=workers, defense=defense,
        )
    else:
        wrapper = make_wrapper(model, tokenizer, max_length=max_length, batch_size=cfg.model_batch_size, device=device,
                               defense=defense)
        built = build_attack(name, wrapper, cfg)
        constraints, notes = built.constraints, built.notes
        every = max(1, math.ceil(n / _PROGRESS_STEPS))
        done: list[ExampleResult] = []
        logger.info("attack: %s on %s: %d examples", name, model_name, n)

        def progress(row: ExampleResult) -> None:
            done.append(row)
            if len(done) % every == 0 or len(done) == n:
                elapsed = time.perf_counter() - start
                logger.info("attack: %s on %s: %d/%d done, %d successful, %.1fs elapsed, ETA %.1fs", name, model_name,
                            len(done), n, sum(r.status == "successful" for r in done), elapsed,
                            elapsed / len(done) * (n - len(done)))

        results = _attack_range(built.attack, examples, inputs, cfg.seed, 0, progress)
    rows = [row for row, _ in results]
    columns = [perturbed for _, perturbed in results]
    report = _summarise(name, model_name, rows, time.perf_counter() - start, constraints, notes)
    logger.info(
        "attack: %s on %s: clean acc %.3f, acc under attack %.3f, success rate %.3f (%d/%d/%d succ/fail/skip), "
        "%.1f%% words perturbed, %.1f queries, %.1fs", name, model_name, report.clean_accuracy,
        report.accuracy_under_attack, report.attack_success_rate, report.successful, report.failed, report.skipped,
        report.mean_perturbed_word_pct, report.mean_queries, report.wall_seconds,
    )
    return AttackOutcome(report=report, perturbed_columns=tuple(columns))


def attack_model(model: nn.Module, tokenizer: Any, examples: Sequence[Example], cfg: AttackConfig, *,
                 recipe: str | None = None, cache_dir: str | Path, model_name: str, max_length: int,
                 device: torch.device | str, text_columns: tuple[str, ...] = ("text",),
                 defense: Defense | None = None) -> AttackReport:
    """Attack ``model`` (already on ``device``) on every example with ``recipe`` (default
    ``cfg.recipe``) and return the report.

    ``text_columns`` names the input columns (one for single-text tasks, two for pairs).
    Raises :class:`~rosearch.attack.resources.MissingResourceError` when the recipe's resources
    are missing, ValueError for bad input. Python/numpy/torch RNG states are left as found.
    With ``cfg.num_workers`` > 1 (CPU only) the examples are shared among that many spawned
    processes; the report is the same as a sequential run's except for ``wall_seconds``.
    ``defense`` (the model's input defenses) is applied to every query, so the attack sees the
    deployed pipeline as a black box, with the recipe's stock constraints.
    """
    return run_attack(model, tokenizer, examples, cfg, recipe=recipe, cache_dir=cache_dir, model_name=model_name,
                      max_length=max_length, device=device, text_columns=text_columns, defense=defense).report


# --------------------------------------------------------------------------------------------
# Presenting
# --------------------------------------------------------------------------------------------


def reports_table(reports: Sequence[AttackReport]) -> Table:
    """A rich table with one row per report."""
    table = Table(title="TextAttack results", show_lines=False)
    for header in ("recipe", "model", "n", "clean acc", "acc under attack", "success rate", "perturbed %", "queries",
                   "seconds", "constraints"):
        table.add_column(header, overflow="fold")
    for r in reports:
        table.add_row(
            r.recipe, r.model, str(r.n), f"{r.clean_accuracy:.3f}", f"{r.accuracy_under_attack:.3f}",
            f"{r.attack_success_rate:.3f}", f"{r.mean_perturbed_word_pct:.1f}", f"{r.mean_queries:.1f}",
            f"{r.wall_seconds:.1f}", "; ".join(r.constraints),
        )
    return table


_CSV_FIELDS = ("recipe", "model", "n", "clean_accuracy", "accuracy_under_attack", "attack_success_rate", "successful",
               "failed", "skipped", "mean_perturbed_word_pct", "mean_queries", "wall_seconds", "constraints", "notes")


def _replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_reports(reports: Sequence[AttackReport], out_dir: Path) -> tuple[Path, Path]:
    """Write ``attack_<model>_<time>.json`` (full reports with per-example rows) and ``.csv``
    (one summary row per report) into ``out_dir``; return their paths."""
    if not reports:
        raise ValueError("write_reports needs at least one report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = {r.model for r in reports}
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", models.pop() if len(models) == 1 else "models").strip("-") or "model"
    stem = f"attack_{model}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    _replace_atomically(json_path, lambda fh: json.dump([r.to_dict() for r in reports], fh, indent=1))

    def write_csv(fh: Any) -> None:
        writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        for r in reports:
            row = {k: getattr(r, k) for k in _CSV_FIELDS}
            row["constraints"] = "; ".join(r.constraints)
            row["notes"] = "; ".join(r.notes)
            writer.writerow(row)

    _replace_atomically(csv_path, write_csv)
    logger.info("attack: wrote %s and %s", json_path, csv_path)
    return json_path, csv_path
