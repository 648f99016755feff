"""KD training throughput: rosearch's trainer against the loop a user would write by hand.

Both sides train the same fixed student (4 layers, H=256, attention + FFN cells) with the same
KD loss, AdamW, linear warm-up/decay schedule, gradient clipping, data, batch size, step count,
device and thread count. They differ in exactly what rosearch is for:

* baseline — a plain Hugging Face-style KD loop: the teacher runs forward on every batch (no
  cache) and every batch is padded to ``data.max_length`` (``tokenizer(padding="max_length")``,
  a ``DataLoader`` over the pre-tokenised tensors);
* ours — :func:`rosearch.distill.trainer.distill`: teacher logits gathered from a cache built
  once, ragged data batched with length bucketing and dynamic padding.

The cache build (one teacher forward over the transfer set) is timed on its own and then
amortised over the N candidates of a search. Warm-up steps are excluded from every timing.
A short profile says where the time goes on each side. Run from the repository root::

    .venv/bin/python bench/kd_throughput.py            # real teacher, 200 steps, batch 32, 1 thread
    .venv/bin/python bench/kd_throughput.py --tiny     # random-weight teacher of the same shape
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import dataclasses
import json
import logging
import pstats
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from common import (
    write_figures,
    BenchError,
    MachineInfo,
    PeakMemory,
    SegmentTimer,
    console,
    describe_machine,
    print_machine,
    print_table,
    synchronize,
)
from rosearch.data.batching import EncodedSplit, batch_indices
from rosearch.config import Config, ConfigError, DistillConfig, load_config
from rosearch.data.tasks import DataError, Example, load_split, task_spec
from rosearch.distill.losses import kd_loss
from rosearch.distill.optim import adamw
from rosearch.distill.teacher import TeacherError, load_teacher, resolve_model_path
from rosearch.distill.teacher_cache import TeacherOutputs, compute_teacher_outputs
from rosearch.distill.trainer import distill
from rosearch.prepare.inputs import teacher_output_dir
from rosearch.runtime.settings import apply_run_settings
from rosearch.search_space.genome import Genome
from rosearch.student.configuration import StudentConfig
from rosearch.student.modeling import StudentForSequenceClassification

logger = logging.getLogger("bench.kd_throughput")

DEFAULT_CONFIG = Path("configs/sst2_offline.yaml")

# The fixed student: E=128 factorised embeddings, H=256, 4 identical cells. Each cell is
#   node1 = attn_h4(x); node2 = ffn_r4_gelu(x + node1); out = node1 + node2
# followed by the model's residual + LayerNorm: a transformer layer in the genome's grammar.
STUDENT_GENOME_JSON = json.dumps({
    "hidden_size": 256,
    "embedding_size": 128,
    "cells": [
        {
            "matrix": [[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
            "ops": ["input", "attn_h4", "ffn_r4_gelu", "output"],
        }
    ] * 4,
})


@dataclass(frozen=True)
class Settings:
    """What to measure, as given on the command line (validated by :func:`settings_from_args`)."""

    config_path: Path
    overrides: tuple[str, ...]
    steps: int
    batch_size: int
    warmup: int
    threads: int
    device: str
    teacher: Path | None
    tiny: bool
    candidates: int | None  # None: population_size x generations of the config
    profile_steps: int
    top: int
    json_path: Path | None


@dataclass(frozen=True)
class LoopTiming:
    """One timed training run, warm-up steps excluded."""

    steps: int
    samples: int
    seconds: float
    positions: int  # token positions the student processed, padding included
    real_tokens: int
    segments: dict[str, float]  # seconds per loop segment (baseline only)
    peak_rss_growth_mib: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / self.steps

    @property
    def positions_per_real_token(self) -> float:
        return self.positions / self.real_tokens


@dataclass(frozen=True)
class CacheBuild:
    """The one-off teacher forward over the whole transfer set."""

    examples: int
    tokens: int
    seconds: float
    peak_rss_growth_mib: float


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    seconds: float
    calls: int


@dataclass(frozen=True)
class TrainerProfile:
    """cProfile of a separate short run of our trainer: time per part of a step."""

    steps: int
    total_seconds: float
    parts: tuple[ProfileEntry, ...]  # forward, backward, optimizer, batching, collate, ... + other
    top: tuple[ProfileEntry, ...]  # functions with the most self time


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="bench/kd_throughput.py",
        description="KD training samples/s: rosearch's trainer (cached teacher logits, dynamic padding) "
        "against a plain KD loop (teacher forward every step, padding to max_length).",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.train_limit=4000 (repeatable)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per side (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per step (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="initial steps left out of every timing (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads, both sides (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="fine-tuned teacher directory (default: the config's, as `rosearch teacher` builds it)")
    parser.add_argument("--tiny", action="store_true",
                        help="use a random-weight teacher of the real teacher's shape (no fine-tuned teacher needed)")
    parser.add_argument("--candidates", type=int, default=None,
                        help="candidates the cache build is amortised over (default: population x generations)")
    parser.add_argument("--profile-steps", type=int, default=30,
                        help="steps of the separate cProfile run of our trainer; 0 skips it (default: %(default)s)")
    parser.add_argument("--top", type=int, default=10, help="cProfile entries to list (default: %(default)s)")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write all figures to this file")
    args = parser.parse_args(argv)
    return settings_from_args(args)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Check the numbers up front so that a typo fails in a second, not after the cache build."""
    for name, minimum in (("steps", 1), ("batch_size", 1), ("threads", 1), ("warmup", 0), ("profile_steps", 0),
                          ("top", 0)):
        value = getattr(args, name)
        if value < minimum:
            flag = "--" + name.replace("_", "-")
            raise BenchError(f"{flag} must be >= {minimum}, got {value}")
    if args.warmup >= args.steps:
        raise BenchError(
            f"--warmup {args.warmup} leaves no timed step out of --steps {args.steps} (fix: raise --steps or lower --warmup)"
        )
    if args.candidates is not None and args.candidates < 1:
        raise BenchError(f"--candidates must be >= 1, got {args.candidates}")
    if not (args.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", args.device)):
        raise BenchError(f"--device must be cpu, cuda, cuda:N or auto, got {args.device!r}")
    if args.tiny and args.teacher is not None:
        raise BenchError("--tiny builds a random-weight teacher; it cannot be combined with --teacher DIR")
    return Settings(
        config_path=args.config, overrides=tuple(args.overrides), steps=args.steps, batch_size=args.batch_size,
        warmup=args.warmup, threads=args.threads, device=args.device, teacher=args.teacher, tiny=args.tiny,
        candidates=args.candidates, profile_steps=args.profile_steps, top=args.top, json_path=args.json_path,
    )


def load_bench_teacher(
    config: Config, settings: Settings, num_labels: int, device: torch.device
) -> tuple[nn.Module, Any, str]:
    """The teacher (eval mode), its tokenizer and a one-line description of where it came from."""
    if settings.tiny:
        return _random_teacher(config.teacher.model, num_labels, device, seed=config.run.seed)
    if settings.teacher is not None:
        path = settings.teacher
    elif config.teacher.finetuned:
        path = Path(resolve_model_path(config.teacher.model))
    else:
        path = teacher_output_dir(config)
    if not (path / "config.json").is_file():
        raise BenchError(
            f"no fine-tuned teacher at {path} (fix: build it with `rosearch teacher --config {settings.config_path}` "
            "(a few minutes on CPU), pass --teacher DIR, or run with --tiny for a random-weight teacher of the same shape)"
        )
    model, tokenizer = load_teacher(str(path), num_labels, device)
    return model, tokenizer, str(path)


def _random_teacher(spec: str, num_labels: int, device: torch.device, *, seed: int) -> tuple[nn.Module, Any, str]:
    """A random-weight classifier shaped like ``spec`` (layers, width, vocabulary), with its tokenizer.

    Throughput does not depend on the weights' values, so this measures the same ratio as the
    fine-tuned teacher without the minutes of fine-tuning.
    """
    path = resolve_model_path(spec)
    try:
        model_config = AutoConfig.from_pretrained(path, num_labels=num_labels)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise BenchError(
            f"--tiny needs the configuration and tokenizer of teacher.model={spec!r} locally ({err}); "
            "fix: point teacher.model at a local checkpoint directory or install the offline backbone "
            "(bash scripts/setup.sh)"
        ) from err
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(model_config)
    model.to(device).eval()
    description = (
        f"random weights shaped like {spec} ({model_config.num_hidden_layers} layers, "
        f"hidden {model_config.hidden_size}, vocab {model_config.vocab_size})"
    )
    return model, tokenizer, description


def build_student(teacher_config: Any, pad_token_id: int, num_labels: int, dropout: float, seed: int) -> nn.Module:
    """The fixed student of :data:`STUDENT_GENOME_JSON`, reading the teacher's vocabulary."""
    genome = Genome.from_json(STUDENT_GENOME_JSON)
    student_config = StudentConfig(
        genome=genome.to_dict(),
        vocab_size=int(teacher_config.vocab_size),
        max_position_embeddings=min(int(getattr(teacher_config, "max_position_embeddings", 512)), 512),
        type_vocab_size=int(getattr(teacher_config, "type_vocab_size", 2) or 2),
        num_labels=num_labels,
        pad_token_id=pad_token_id,
        hidden_dropout_prob=dropout,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return StudentForSequenceClassification(student_config)


def encode_padded(examples: Sequence[Example], tokenizer: Any, max_length: int) -> dict[str, torch.Tensor]:
    """The user's pre-processing: every example tokenised and padded to ``max_length`` (int64 [n, L])."""
    is_pair = bool(examples) and examples[0].text_b is not None
    encoded = tokenizer(
        [e.text_a for e in examples],
        [e.text_b for e in examples] if is_pair else None,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}


# --------------------------------------------------------------------------------------------
# The two training loops
# --------------------------------------------------------------------------------------------


def run_baseline(
    student: nn.Module,
    teacher: nn.Module,
    padded: dict[str, torch.Tensor],
    labels: np.ndarray,
    cfg: DistillConfig,
    *,
    warmup: int,
    seed: int,
    device: torch.device,
) -> LoopTiming:
    """The hand-written KD loop: shuffled ``DataLoader``, teacher forward per batch, same update."""
    tensors = [padded["input_ids"], padded["attention_mask"]]
    has_types = "token_type_ids" in padded
    if has_types:
        tensors.append(padded["token_type_ids"])
    dataset = TensorDataset(*tensors, torch.as_tensor(labels, dtype=torch.int64))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))

    student.to(device).train()
    teacher.eval()
    optimizer = adamw(student.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)  # the trainer's setup
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(round(cfg.warmup_ratio * cfg.max_steps)), num_training_steps=cfg.max_steps
    )
    timer = SegmentTimer(device)
    batches = iter(loader)
    samples = positions = real_tokens = 0
    running_loss = 0.0
    start = 0.0
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), PeakMemory(device) as memory:
        torch.manual_seed(seed)
        for step in range(1, cfg.max_steps + 1):
            timed = step > warmup
            if step == warmup + 1:
                synchronize(device)
                start = time.perf_counter()
            timer.start()
            try:
                batch = next(batches)
            except StopIteration:  # a new epoch: the loader reshuffles
                batches = iter(loader)
                batch = next(batches)
            ids, mask = batch[0].to(device), batch[1].to(device)  # [B, L]
            types = batch[2].to(device) if has_types else None  # [B, L]
            y = batch[-1].to(device)  # [B]
            if timed:
                samples += len(y)
                positions += batch[1].numel()
                real_tokens += int(batch[1].sum())
            timer.mark("data")
            with torch.no_grad():
                teacher_logits = teacher(input_ids=ids, attention_mask=mask, token_type_ids=types).logits  # [B, C]
            timer.mark("teacher forward")
            logits = student(input_ids=ids, attention_mask=mask, token_type_ids=types).logits  # [B, C]
            loss = kd_loss(logits, teacher_logits, y, alpha=cfg.alpha, temperature=cfg.temperature)
            timer.mark("student forward + loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            timer.mark("backward")
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            running_loss += loss.item()
            timer.mark("optimizer + schedule")
            if step == warmup:
                timer = SegmentTimer(device)  # segments count timed steps only
        synchronize(device)
        seconds = time.perf_counter() - start
    logger.info("baseline: mean loss %.4f over %d steps", running_loss / cfg.max_steps, cfg.max_steps)
    student.eval()
    return LoopTiming(
        steps=cfg.max_steps - warmup, samples=samples, seconds=seconds, positions=positions,
        real_tokens=real_tokens, segments=timer.totals(), peak_rss_growth_mib=memory.growth_mib,
    )


def trainer_batches(train: EncodedSplit, cfg: DistillConfig, seed: int) -> list[list[int]]:
    """The batches ``distill(seed=seed)`` draws, step by step: the same seeded ``batch_indices``
    stream, so the timed window's samples and padding can be counted outside the trainer."""
    rng = random.Random(seed)
    stream: list[list[int]] = []
    while len(stream) < cfg.max_steps:
        stream.extend(batch_indices(train.lengths, cfg.batch_size, shuffle=True, rng=rng, bucketing=cfg.length_bucketing))
    return stream[: cfg.max_steps]


def run_ours(
    student: nn.Module,
    train: EncodedSplit,
    outputs: TeacherOutputs,
    cfg: DistillConfig,
    *,
    warmup: int,
    seed: int,
    device: torch.device,
) -> LoopTiming:
    """Our trainer as a search calls it; the clock starts at its progress report after ``warmup`` steps."""
    marks: dict[int, float] = {}

    def progress(step: int, max_steps: int, loss: float) -> None:
        marks.setdefault(step, time.perf_counter())  # the trainer has synced (loss.item()) before calling

    with PeakMemory(device) as memory:
        result = distill(
            student, train, outputs, cfg, seed=seed, device=device,
            progress=progress if warmup else None, log_every=warmup or None,
        )
        end = time.perf_counter()
    seconds = end - marks[warmup] if warmup else result.train_seconds
    stream = trainer_batches(train, cfg, seed)
    seen = round(result.examples_per_second * result.train_seconds)
    if seen != sum(len(b) for b in stream):
        logger.warning(
            "the trainer saw %d examples but the replicated batch stream has %d: its batching changed, so the "
            "samples and padding counted for our side are approximate", seen, sum(len(b) for b in stream),
        )
    timed = stream[warmup:]
    lengths = train.lengths
    return LoopTiming(
        steps=cfg.max_steps - warmup,
        samples=sum(len(b) for b in timed),
        seconds=seconds,
        positions=sum(len(b) * int(lengths[b].max()) for b in timed),
        real_tokens=sum(int(lengths[b].sum()) for b in timed),
        segments={},
        peak_rss_growth_mib=memory.growth_mib,
    )


def build_cache(teacher: nn.Module, train: EncodedSplit, batch_size: int, device: torch.device) -> tuple[TeacherOutputs, CacheBuild]:
    """Time the teacher's one pass over the transfer set (what the on-disk cache stores: logits).

    Computed in memory rather than through the on-disk cache, so the benchmark measures the
    forward pass even when a search already cached these outputs.
    """
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        outputs = compute_teacher_outputs(teacher, train, layers=(), batch_size=batch_size, device=device)
        synchronize(device)
        seconds = time.perf_counter() - start
    build = CacheBuild(
        examples=len(train), tokens=int(train.offsets[-1]), seconds=seconds, peak_rss_growth_mib=memory.growth_mib
    )
    return outputs, build


# --------------------------------------------------------------------------------------------
# Profile of our trainer
# --------------------------------------------------------------------------------------------

# (label, file suffix, function): the parts of a step, by cumulative time of the named function.
_STEP_PARTS: tuple[tuple[str, str, str], ...] = (
    ("batching (batch_indices)", "rosearch/data/batching.py", "batch_indices"),
    ("collate", "rosearch/data/batching.py", "collate"),
    ("student forward", "rosearch/distill/trainer.py", "_forward"),
    ("kd_loss", "rosearch/distill/losses.py", "kd_loss"),
    ("backward", "torch/_tensor.py", "backward"),
    ("grad clipping", "torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
    ("optimizer step", "torch/optim/adam.py", "step"),
    ("optimizer step", "torch/optim/adamw.py", "step"),
    ("zero_grad", "torch/optim/optimizer.py", "zero_grad"),
    ("lr schedule", "torch/optim/lr_scheduler.py", "step"),
)


def _entry_name(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func  # a built-in, e.g. <built-in method torch._C._nn.linear>
    path = filename.replace("\\", "/")
    for anchor in ("site-packages/", "/rosearch/"):
        if anchor in path:
            path = ("rosearch/" if anchor == "/rosearch/" else "") + path.split(anchor, 1)[1]
            break
    return f"{path}:{line}({func})"


def profile_ours(
    student: nn.Module, train: EncodedSplit, outputs: TeacherOutputs, cfg: DistillConfig, *, seed: int,
    device: torch.device, top: int,
) -> TrainerProfile:
    """cProfile one short ``distill`` run; split its time into the parts of a step.

    cProfile instruments every Python call, which inflates Python-heavy parts (module calls in
    the forward, the collate loop) a little; shares are of the profiled run's own total.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    distill(student, train, outputs, cfg, seed=seed, device=device)
    synchronize(device)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, func): (prim calls, calls, tottime, cumtime, callers)}
    total = max(
        (row[3] for key, row in stats.items() if key[0].replace("\\", "/").endswith("rosearch/distill/trainer.py")
         and key[2] == "distill"),
        default=sum(row[2] for row in stats.values()),
    )
    parts: dict[str, ProfileEntry] = {}
    for label, suffix, func in _STEP_PARTS:
        for key, (_, calls, _, cumtime, _) in stats.items():
            if key[2] == func and key[0].replace("\\", "/").endswith(suffix):
                best = parts.get(label)
                if best is None or cumtime > best.seconds:  # wrappers share a name: keep the outermost
                    parts[label] = ProfileEntry(label, cumtime, calls)
    accounted = sum(p.seconds for p in parts.values())
    listed = sorted(parts.values(), key=lambda p: -p.seconds)
    listed.append(ProfileEntry("other (loop body, logits gather, finite check, setup)", max(0.0, total - accounted), 0))
    by_self = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    top_entries = tuple(ProfileEntry(_entry_name(key), row[2], row[1]) for key, row in by_self)
    return TrainerProfile(steps=cfg.max_steps, total_seconds=total, parts=tuple(listed), top=top_entries)


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    machine: MachineInfo
    command: str
    setup: dict[str, Any]
    baseline: LoopTiming
    ours: LoopTiming
    cache: CacheBuild
    candidates: int
    profile: TrainerProfile | None

    @property
    def ratio(self) -> float:
        return self.ours.samples_per_s / self.baseline.samples_per_s

    def amortised_samples_per_s(self, candidates: int) -> float:
        """Ours with the cache build shared by ``candidates`` runs of ``steps`` steps each."""
        steps = self.setup["steps"]
        samples_per_step = self.ours.samples / self.ours.steps
        seconds_per_candidate = steps * self.ours.seconds / self.ours.steps + self.cache.seconds / candidates
        return steps * samples_per_step / seconds_per_candidate

    def break_even_candidates(self) -> float:
        """Candidates from which ours, cache build included, beats the baseline (inf: never)."""
        steps = self.setup["steps"]
        saved_per_candidate = steps * (self.baseline.seconds / self.baseline.steps - self.ours.seconds / self.ours.steps)
        return self.cache.seconds / saved_per_candidate if saved_per_candidate > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": dataclasses.asdict(self.machine),
            "command": self.command,
            "setup": self.setup,
            "baseline": dataclasses.asdict(self.baseline) | {"samples_per_s": self.baseline.samples_per_s},
            "ours": dataclasses.asdict(self.ours) | {"samples_per_s": self.ours.samples_per_s},
            "ratio": self.ratio,
            "cache_build": dataclasses.asdict(self.cache),
            "candidates": self.candidates,
            "ours_amortised_samples_per_s": {
                "1": self.amortised_samples_per_s(1), str(self.candidates): self.amortised_samples_per_s(self.candidates),
            },
            "break_even_candidates": self.break_even_candidates(),
            "profile": None if self.profile is None else dataclasses.asdict(self.profile),
        }


def run_benchmark(config: Config, settings: Settings, device: torch.device, command: str) -> BenchResult:
    """Load data and teacher, then time: cache build, our trainer, the baseline, our profile."""
    task = task_spec(config.data)
    teacher, tokenizer, teacher_desc = load_bench_teacher(config, settings, task.num_labels, device)
    examples, train = load_split(config.data, "train", tokenizer, config.run.cache_dir, config.run.seed)
    cfg = dataclasses.replace(config.distill, max_steps=settings.steps, batch_size=settings.batch_size)
    seed = config.run.seed
    initial = build_student(teacher.config, train.pad_token_id, task.num_labels, cfg.dropout, seed)
    student_params = sum(p.numel() for p in initial.parameters())
    candidates = settings.candidates or config.evolution.population_size * config.evolution.generations
    setup = {
        "config": str(settings.config_path),
        "overrides": list(settings.overrides),
        "teacher": teacher_desc,
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "student_genome": Genome.from_json(STUDENT_GENOME_JSON).to_dict(),
        "student_params": student_params,
        "train_examples": len(train),
        "train_mean_length": float(np.mean(train.lengths)),
        "max_length": config.data.max_length,
        "steps": settings.steps,
        "warmup_steps": settings.warmup,
        "batch_size": settings.batch_size,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    logger.info("teacher: %s; student: %.2fM parameters; %d training examples (mean length %.1f tokens)",
                teacher_desc, student_params / 1e6, len(train), setup["train_mean_length"])

    logger.info("cache build: teacher forward over %d examples", len(train))
    outputs, cache = build_cache(teacher, train, config.teacher.eval_batch_size, device)
    logger.info("cache build: %.1fs", cache.seconds)

    logger.info("ours: %d steps (%d warm-up)", cfg.max_steps, settings.warmup)
    ours = run_ours(copy.deepcopy(initial), train, outputs, cfg, warmup=settings.warmup, seed=seed, device=device)
    logger.info("ours: %.1f samples/s", ours.samples_per_s)

    padded = encode_padded(examples, tokenizer, config.data.max_length)
    logger.info("baseline: %d steps (%d warm-up), teacher forward every step", cfg.max_steps, settings.warmup)
    baseline = run_baseline(
        copy.deepcopy(initial), teacher, padded, train.labels, cfg, warmup=settings.warmup, seed=seed, device=device
    )
    logger.info("baseline: %.1f samples/s", baseline.samples_per_s)

    profile = None
    if settings.profile_steps:
        logger.info("profile: cProfile of a separate %d-step run of our trainer", settings.profile_steps)
        profile_cfg = dataclasses.replace(cfg, max_steps=settings.profile_steps)
        profile = profile_ours(copy.deepcopy(initial), train, outputs, profile_cfg, seed=seed, device=device,
                               top=settings.top)
    return BenchResult(machine=describe_machine(device), command=command, setup=setup, baseline=baseline, ours=ours,
                       cache=cache, candidates=candidates, profile=profile)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(result: BenchResult) -> None:
    out = console()
    print_machine(out, result.machine)
    s = result.setup
    print_table(out, "setup", ("", ""), [
        ("command", result.command),
        ("teacher", f"{s['teacher']} — {s['teacher_params'] / 1e6:.1f}M parameters"),
        ("student", f"4 layers, H=256, E=128, cell attn_h4 + ffn_r4_gelu — {s['student_params'] / 1e6:.2f}M parameters"),
        ("data", f"{s['train_examples']} training examples, mean {s['train_mean_length']:.1f} tokens, "
                 f"max_length {s['max_length']}"),
        ("steps", f"{s['steps']} of batch {s['batch_size']} per side, first {s['warmup_steps']} untimed"),
    ], align="left")

    b, o = result.baseline, result.ours
    n = result.candidates
    rows = [
        ("baseline: teacher forward every step, padded to max_length", f"{b.samples_per_s:.1f}", "1.00",
         f"{b.ms_per_step:.1f}", f"{b.positions_per_real_token:.2f}", f"{b.peak_rss_growth_mib:.0f}"),
        ("ours: cached logits, length-bucketed dynamic padding", f"{o.samples_per_s:.1f}", f"{result.ratio:.2f}",
         f"{o.ms_per_step:.1f}", f"{o.positions_per_real_token:.2f}", f"{o.peak_rss_growth_mib:.0f}"),
    ]
    for k in sorted({1, n}):
        amortised = result.amortised_samples_per_s(k)
        rows.append((f"ours + cache build shared by {k} candidate{'s' if k > 1 else ''}", f"{amortised:.1f}",
                     f"{amortised / b.samples_per_s:.2f}", "", "", ""))
    print_table(out, "KD training throughput (timed steps only)",
                ("", "samples/s", "× baseline", "ms/step", "positions / real token", "peak RSS growth MiB"), rows)

    c = result.cache
    print_table(out, "one-off teacher-output cache build (teacher forward over the transfer set)", ("", ""), [
        ("examples / tokens", f"{c.examples} / {c.tokens}"),
        ("seconds", f"{c.seconds:.1f} ({c.examples / c.seconds:.0f} examples/s)"),
        ("pays for itself from", f"{result.break_even_candidates():.2f} candidates of {s['steps']} steps"),
    ], align="left")

    seg_total = sum(b.segments.values())
    print_table(
        out, "where the baseline's time goes (timed steps)", ("segment", "ms/step", "share"),
        [(name, f"{1000 * sec / b.steps:.1f}", f"{100 * sec / seg_total:.1f}%") for name, sec in b.segments.items()],
        caption=f"padding: {b.positions} token positions for {b.real_tokens} real tokens "
                f"({b.positions_per_real_token:.2f}× ; ours with bucketing: {o.positions_per_real_token:.2f}×)",
    )
    if result.profile is not None:
        p = result.profile
        print_table(
            out, f"where our trainer's time goes (cProfile, separate {p.steps}-step run, setup included)",
            ("part", "ms/step", "share"),
            [(e.name, f"{1000 * e.seconds / p.steps:.2f}", f"{100 * e.seconds / p.total_seconds:.1f}%") for e in p.parts],
        )
        print_table(
            out, "our trainer: functions with the most self time (cProfile)", ("function", "ms/step", "calls/step"),
            [(e.name, f"{1000 * e.seconds / p.steps:.2f}", f"{e.calls / p.steps:.1f}") for e in p.top],
        )


def main(argv: Sequence[str] | None = None) -> int:
    command = " ".join([".venv/bin/python", "bench/kd_throughput.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = parse_args(argv)
        config = load_config(settings.config_path, settings.overrides)
        run = dataclasses.replace(config.run, device=settings.device, num_threads=settings.threads)
        device = apply_run_settings(run)
        result = run_benchmark(config, settings, device, command)
    except (BenchError, ConfigError, DataError, TeacherError) as err:
        logging.basicConfig(level=logging.INFO)  # no-op once apply_run_settings configured logging
        logger.error("%s", err)
        return 2
    report(result)
    write_figures(settings.json_path, result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
