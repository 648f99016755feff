"""Knowledge distillation of one student from cached teacher outputs, under a fixed step budget.

The search controls fidelity through ``DistillConfig.max_steps``: every candidate gets exactly
that many optimizer steps (epochs cycle with a reshuffle), so candidates are compared at equal
cost. The teacher never runs here; its logits (and, for the TinyBERT-style hidden loss, its
hidden states) come from the on-disk cache and are gathered by each batch's example indices.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import get_linear_schedule_with_warmup

from rosearch.batching import EncodedSplit, batch_indices, collate
from rosearch.config import DistillConfig
from rosearch.distill.losses import hidden_mse_loss, kd_loss, uniform_layer_map

if TYPE_CHECKING:
    from rosearch.distill.teacher_cache import TeacherOutputs

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the candidate's weights are not usable."""


@dataclass(frozen=True)
class DistillResult:
    """What one distillation run did (the trained weights stay in the student itself)."""

    steps: int
    train_seconds: float
    examples_per_second: float
    final_loss: float  # mean training loss over the last ~10% of steps
    loss_history: tuple[tuple[int, float], ...]  # (step, mean loss since the previous entry)


def distill(
    student: nn.Module,
    train: EncodedSplit,
    teacher: "TeacherOutputs",
    cfg: DistillConfig,
    *,
    seed: int,
    device: torch.device | str,
    progress: ProgressFn | None = None,
    log_every: int | None = None,
) -> DistillResult:
    """Distil ``student`` on ``train`` for exactly ``cfg.max_steps`` optimizer steps, in place.

    Per step: a length-bucketed batch (seeded ``random.Random(seed)``, reshuffled each epoch)
    → student forward → ``kd_loss`` against the cached teacher logits of the batch's examples
    (+ ``cfg.hidden_loss_weight`` × mean hidden-state MSE over :func:`uniform_layer_map` pairs,
    through learned linear projections that live only inside this call) → backward → clip to
    ``cfg.max_grad_norm`` → AdamW step (no decay on 1-D parameters: biases and norms) → linear
    warm-up/decay schedule. Torch's RNG (dropout, projection init) is seeded from ``seed`` inside
    a forked RNG state, so two runs with the same seed and initial weights end with identical
    weights on CPU, and the caller's global RNG is left untouched.

    Non-finite values stop training before the optimizer applies them: each step checks that
    the loss and the gradient norm are finite and raises :class:`NonFiniteLossError` otherwise.
    That check is one host sync per step (on GPU it stalls the launch queue until the step's
    backward is done); we accept that cost because a candidate whose weights silently turn to
    NaN would be scored as a real model, and because loss values are otherwise only read back
    at log intervals (``log_every`` steps, default ~20 entries per run).

    The student is left in eval mode with its gradients released. ``progress(step, max_steps,
    loss)`` is called at every log interval.
    """
    num_examples = len(train)
    if num_examples == 0:
        raise ValueError("distill got an empty training split (fix: check data.train_limit and the data files)")
    logits_shape = tuple(np.shape(teacher.logits))
    if logits_shape != (num_examples, train.num_labels):
        raise ValueError(
            f"teacher logits have shape {logits_shape}, the training split needs ({num_examples}, {train.num_labels}) "
            "(fix: re-cache the teacher outputs for this split; the cache key must match the data fingerprint)"
        )
    if log_every is not None and log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    max_steps = cfg.max_steps
    log_every = log_every or max(1, max_steps // 20)
    device = torch.device(device)
    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        return _train(student, train, teacher, cfg, random.Random(seed), device, progress, log_every)


def _batches(train: EncodedSplit, cfg: DistillConfig, rng: random.Random) -> Iterator[list[int]]:
    """Endless stream of batch index lists; each pass over the data is a fresh shuffle."""
    while True:
        yield from batch_indices(train.lengths, cfg.batch_size, shuffle=True, rng=rng, bucketing=cfg.length_bucketing)


def _forward(student: nn.Module, batch: dict[str, Tensor], hidden: bool) -> Any:
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "token_type_ids" in batch:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return student(**inputs, output_hidden_states=hidden)


def _layer_projections(
    student: nn.Module, batch: dict[str, Tensor], teacher: "TeacherOutputs", device: torch.device
) -> tuple[list[tuple[int, int]], nn.ModuleList]:
    """Map student to teacher layers and build one Hs→Ht projection per pair.

    Shapes come from one no-grad eval-mode forward, so any student (factorised embeddings,
    per-layer widths) works without knowing its config class.
    """
    layers = tuple(teacher.layers)
    missing = [layer for layer in layers if layer not in teacher.hidden]
    if not layers or missing:
        raise ValueError(
            f"distill.hidden_loss_weight > 0 needs cached teacher hidden states, but the cache lists layers "
            f"{layers} and lacks {missing or 'all'} (fix: set teacher.cache_hidden_layers, e.g. [2, 4, 6], and "
            "re-cache the teacher outputs, or set distill.hidden_loss_weight=0)"
        )
    student.eval()
    with torch.no_grad():
        states = _forward(student, batch, hidden=True).hidden_states  # L+1 x [B, T, Hs]
    student.train()
    if states is None:
        raise ValueError(
            f"student {type(student).__name__} returned no hidden_states with output_hidden_states=True; "
            "the hidden-state loss needs them (fix: set distill.hidden_loss_weight=0)"
        )
    pairs = uniform_layer_map(len(states) - 1, layers)
    projections = nn.ModuleList(
        nn.Linear(states[s].shape[-1], teacher.hidden_size) for s, _ in pairs
    ).to(device)
    return pairs, projections


def _optimizer(modules: list[nn.Module], cfg: DistillConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and norm scales (1-D) are not decayed."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate)


def _train(
    student: nn.Module,
    train: EncodedSplit,
    teacher: "TeacherOutputs",
    cfg: DistillConfig,
    rng: random.Random,
    device: torch.device,
    progress: ProgressFn | None,
    log_every: int,
) -> DistillResult:
    max_steps = cfg.max_steps
    student.to(device)
    student.train()
    teacher_logits = torch.as_tensor(np.asarray(teacher.logits, dtype=np.float32), device=device)  # [n, C]
    batches = _batches(train, cfg, rng)

    use_hidden = cfg.hidden_loss_weight > 0
    first = next(batches)
    pairs: list[tuple[int, int]] = []
    projections = nn.ModuleList()
    if use_hidden:
        pairs, projections = _layer_projections(student, collate(train, first, device), teacher, device)
        logger.info("hidden-state loss on (student, teacher) layer pairs %s", pairs)
    projections.train()

    optimizer = _optimizer([student, projections], cfg)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(round(cfg.warmup_ratio * max_steps)), num_training_steps=max_steps
    )
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    losses = torch.zeros(max_steps, device=device)  # per-step loss, read back only at log intervals
    history: list[tuple[int, float]] = []
    seen = 0
    logged_upto = 0
    start = time.perf_counter()

    for step in range(1, max_steps + 1):
        indices = first if step == 1 else next(batches)
        batch = collate(train, indices, device)
        out = _forward(student, batch, hidden=use_hidden)
        loss = kd_loss(
            out.logits, teacher_logits[batch["indices"]], batch["labels"],
            alpha=cfg.alpha, temperature=cfg.temperature,
        )
        if use_hidden:
            mask = batch["attention_mask"]  # [B, T]
            layer_losses = [
                hidden_mse_loss(
                    out.hidden_states[s],  # [B, T, Hs]
                    teacher.hidden_batch(t, train, indices).to(device, non_blocking=True),  # [B, T, Ht]
                    mask,
                    proj,
                )
                for (s, t), proj in zip(pairs, projections)
            ]
            loss = loss + cfg.hidden_loss_weight * torch.stack(layer_losses).mean()

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):  # one host sync per step
            student.zero_grad(set_to_none=True)
            student.eval()
            raise NonFiniteLossError(
                f"non-finite training loss {loss.item()!r} (gradient norm {grad_norm.item()!r}) at step "
                f"{step}/{max_steps} with learning rate {scheduler.get_last_lr()[0]:.3g}; no update was applied "
                "(fix: lower distill.learning_rate, raise distill.warmup_ratio, or check the teacher cache "
                "for NaN/inf logits)"
            )
        optimizer.step()
        scheduler.step()
        losses[step - 1] = loss.detach()
        seen += len(indices)

        if step % log_every == 0 or step == max_steps:
            mean_loss = losses[logged_upto:step].mean().item()
            logged_upto = step
            history.append((step, mean_loss))
            logger.debug("distill step %d/%d loss %.4f lr %.3g", step, max_steps, mean_loss, scheduler.get_last_lr()[0])
            if progress is not None:
                progress(step, max_steps, mean_loss)

    per_step = losses.cpu().numpy()  # syncs: the timing below covers all queued work
    seconds = time.perf_counter() - start
    tail = max(1, math.ceil(0.1 * max_steps))
    student.zero_grad(set_to_none=True)
    student.eval()
    return DistillResult(
        steps=max_steps,
        train_seconds=seconds,
        examples_per_second=seen / seconds if seconds > 0 else float("inf"),
        final_loss=float(per_step[-tail:].mean()),
        loss_history=tuple(history),
    )
