"""Run one attack recipe against one model on a fixed sample of examples, and report numbers.

Examples are attacked one by one with ``Attack.attack`` (TextAttack's ``Attacker`` would write
CSV logs and print interactively), under seeded RNGs that are restored afterwards so a caller's
training is not perturbed. The summary uses TextAttack's ``Attacker`` definitions exactly:
skipped = originally misclassified; clean accuracy = (n - skipped) / n; accuracy under attack
= failed / n; success rate = successful / (successful + failed); words-perturbed % averaged over
successful attacks; queries averaged over the attacked (non-skipped) examples.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import random
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
from rich.table import Table
from torch import nn

from rosearch.attack.recipes import build_attack
from rosearch.attack.resources import prepare_textattack
from rosearch.attack.wrapper import make_wrapper
from rosearch.config import AttackConfig
from rosearch.data import Example

logger = logging.getLogger(__name__)

AttackExample = Example
Status = Literal["successful", "failed", "skipped"]
_PROGRESS_STEPS = 10


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


def run_attack(model: nn.Module, tokenizer: Any, examples: Sequence[Example], cfg: AttackConfig, *,
               recipe: str | None, cache_dir: str | Path, model_name: str, max_length: int,
               device: torch.device | str, text_columns: tuple[str, ...]) -> AttackOutcome:
    """:func:`attack_model`, also returning the perturbed texts column by column."""
    if not examples:
        raise ValueError("no examples to attack (fix: check attack.num_examples and the dev split)")
    inputs = [_attack_input(e, text_columns) for e in examples]  # validates the columns up front
    name = recipe or cfg.recipe
    start = time.perf_counter()
    prepare_textattack(cfg, cache_dir)
    device = torch.device(device)
    wrapper = make_wrapper(model, tokenizer, max_length=max_length, batch_size=cfg.model_batch_size, device=device)
    built = build_attack(name, wrapper, cfg)
    n = len(examples)
    every = max(1, math.ceil(n / _PROGRESS_STEPS))
    rows: list[ExampleResult] = []
    columns: list[tuple[str, ...] | None] = []
    logger.info("attack: %s on %s: %d examples", name, model_name, n)
    with _restored_rngs():
        for i, (example, attack_input) in enumerate(zip(examples, inputs)):
            _seed_example(cfg.seed, i)
            row, perturbed = _example_result(i, example, built.attack.attack(attack_input, example.label))
            rows.append(row)
            columns.append(perturbed)
            done = i + 1
            if done % every == 0 or done == n:
                elapsed = time.perf_counter() - start
                wins = sum(r.status == "successful" for r in rows)
                logger.info("attack: %s on %s: %d/%d done, %d successful, %.1fs elapsed, ETA %.1fs",
                            name, model_name, done, n, wins, elapsed, elapsed / done * (n - done))
    report = _summarise(name, model_name, rows, time.perf_counter() - start, built.constraints, built.notes)
    logger.info(
        "attack: %s on %s: clean acc %.3f, acc under attack %.3f, success rate %.3f (%d/%d/%d succ/fail/skip), "
        "%.1f%% words perturbed, %.1f queries, %.1fs", name, model_name, report.clean_accuracy,
        report.accuracy_under_attack, report.attack_success_rate, report.successful, report.failed, report.skipped,
        report.mean_perturbed_word_pct, report.mean_queries, report.wall_seconds,
    )
    return AttackOutcome(report=report, perturbed_columns=tuple(columns))


def attack_model(model: nn.Module, tokenizer: Any, examples: Sequence[Example], cfg: AttackConfig, *,
                 recipe: str | None = None, cache_dir: str | Path, model_name: str, max_length: int,
                 device: torch.device | str, text_columns: tuple[str, ...] = ("text",)) -> AttackReport:
    """Attack ``model`` (already on ``device``) on every example with ``recipe`` (default
    ``cfg.recipe``) and return the report.

    ``text_columns`` names the input columns (one for single-text tasks, two for pairs).
    Raises :class:`~rosearch.attack.resources.MissingResourceError` when the recipe's resources
    are missing, ValueError for bad input. Python/numpy/torch RNG states are left as found.
    """
    return run_attack(model, tokenizer, examples, cfg, recipe=recipe, cache_dir=cache_dir, model_name=model_name,
                      max_length=max_length, device=device, text_columns=text_columns).report


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
