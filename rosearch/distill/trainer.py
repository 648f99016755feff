"""Knowledge distillation of one student from cached teacher outputs, under a fixed step budget.

The search controls fidelity through ``DistillConfig.max_steps``: every candidate gets exactly
that many optimizer steps (epochs cycle with a reshuffle), so candidates are compared at equal
cost. The teacher's logits (and, for the TinyBERT-style layer losses, its hidden states and
attention; for RIFT, its features) come from the on-disk cache and are gathered by each
batch's example indices.

Robust variants are options of this same loop (``cfg.methods``; see
:mod:`rosearch.distill.methods`): ``augment`` draws a share of every batch from the augmented
transfer set, ``layer_kd`` and ``rift`` add loss terms on the clean batch, ``mate_kd`` adds a
KD term on generator-perturbed text (the only method that runs the teacher live), and
``adv_finetune`` attacks the trained student and fine-tunes it briefly at the end, and
``adv_train`` attacks it every few steps during KD and mixes its adversarial texts into the
batches (:mod:`rosearch.distill.adv_train`). With
``methods=()`` the loop is exactly the plain KD loop: same batches, same random draws, same
weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import get_linear_schedule_with_warmup

from rosearch.batching import EncodedSplit, batch_indices, collate
from rosearch.config import DistillConfig
from rosearch.distill.adv_train import AdversarialPool
from rosearch.distill.adversarial import adversarial_finetune
from rosearch.distill.inputs import NEEDS_METHOD_INPUTS, MethodInputsError
from rosearch.distill.layer_kd import AttentionTerm
from rosearch.distill.losses import NonFiniteLossError, hidden_mse_loss, kd_loss, uniform_layer_map
from rosearch.distill.mate_kd import MateKD
from rosearch.distill.optim import adamw
from rosearch.distill.rift import RiftTerm

if TYPE_CHECKING:
    from rosearch.defense.pipeline import Defense
    from rosearch.distill.inputs import MethodInputs
    from rosearch.distill.teacher_cache import TeacherOutputs

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class DistillResult:
    """What one distillation run did (the trained weights stay in the student itself)."""

    steps: int
    train_seconds: float
    examples_per_second: float
    final_loss: float  # mean training loss over the last ~10% of steps
    loss_history: tuple[tuple[int, float], ...]  # (step, mean loss since the previous entry)
    method_stats: dict[str, float] = field(default_factory=dict)  # per-method numbers (seconds, counts, ...)


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
    method_inputs: "MethodInputs | None" = None,
    defense: "Defense | None" = None,
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

    ``cfg.methods`` adds the robust variants (module docstring); ``augment``, ``mate_kd``,
    ``adv_finetune`` and ``adv_train`` need ``method_inputs`` from
    :func:`~rosearch.distill.methods.prepare_method_inputs`, ``layer_kd`` and ``rift`` need the
    teacher outputs that :func:`~rosearch.distill.methods.teacher_cache_request` asks for.
    ``train_seconds`` covers everything (adv_finetune's attack and fine-tuning included);
    ``examples_per_second`` the KD loop; ``method_stats`` breaks the extra work down.

    ``defense`` is the student's input defense, when it carries one: ``train`` must then already
    be the defended split (the caller's job, as for evaluation); the methods that attack the
    student during training (``adv_train``, ``adv_finetune``) query it through the defense and
    pass their adversarial texts through it before encoding them.
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
    for method in cfg.methods:
        if method in NEEDS_METHOD_INPUTS:
            if method_inputs is None:
                raise MethodInputsError(
                    f"distill.methods has {method!r}, which needs method inputs, but none were given "
                    "(fix: pass method_inputs=prepare_method_inputs(config, ...))"
                )
            method_inputs.require(method)
    max_steps = cfg.max_steps
    log_every = log_every or max(1, max_steps // 20)
    device = torch.device(device)
    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        return _train(student, train, teacher, cfg, random.Random(seed), device, progress, log_every,
                      method_inputs, seed, defense)


def _batches(train: EncodedSplit, batch_size: int, cfg: DistillConfig, rng: random.Random) -> Iterator[list[int]]:
    """Endless stream of batch index lists; each pass over the data is a fresh shuffle."""
    while True:
        yield from batch_indices(train.lengths, batch_size, shuffle=True, rng=rng, bucketing=cfg.length_bucketing)


class _AugmentStream:
    """``augment``: the share of every batch drawn from the teacher-labelled augmented copies.

    The batch keeps ``cfg.batch_size`` examples (``augment_fraction`` of them augmented) rather
    than alternating clean and augmented batches: every step then estimates the same mixed
    objective, the step budget keeps its meaning, and a step costs what a plain step costs.
    Its shuffles come from their own seeded RNG.
    """

    def __init__(self, inputs: "MethodInputs", cfg: DistillConfig, seed: int, device: torch.device) -> None:
        self.split = inputs.augmented
        self.cfg = cfg
        self.device = device
        self.batch_size = int(round(cfg.augment.fraction * cfg.batch_size))
        if not 1 <= self.batch_size <= cfg.batch_size - 1:
            raise ValueError(
                f"distill.augment.fraction={cfg.augment.fraction} of a batch of {cfg.batch_size} leaves no room for "
                "one of the two kinds (fix: a fraction nearer 0.5, or a larger distill.batch_size)"
            )
        self.logits = torch.as_tensor(np.asarray(inputs.augmented_outputs.logits, dtype=np.float32), device=device)
        if tuple(self.logits.shape) != (len(self.split), self.split.num_labels):
            raise MethodInputsError(
                f"augmented teacher logits have shape {tuple(self.logits.shape)}, the augmented split needs "
                f"({len(self.split)}, {self.split.num_labels}) (fix: rebuild the method inputs)"
            )
        self.batches = _batches(self.split, self.batch_size, cfg, random.Random(f"{seed}:augment"))
        self.seen = 0
        self.last_size = 0  # examples of the latest augmented share (an epoch's last batch may be short)
        logger.info("augment: %d of every %d batch examples from %d augmented copies",
                    self.batch_size, cfg.batch_size, len(self.split))

    def mixed_kd(self, student: nn.Module, clean_loss: Tensor, clean_count: int) -> Tensor:
        """The KD loss of the whole mixed batch: the example-weighted mean of both parts."""
        indices = next(self.batches)
        batch = collate(self.split, indices, self.device)
        logits = _forward(student, batch, hidden=False).logits  # [Ba, C]
        loss = kd_loss(logits, self.logits[batch["indices"]], batch["labels"],
                       alpha=self.cfg.alpha, temperature=self.cfg.temperature)
        self.seen += len(indices)
        self.last_size = len(indices)
        return (clean_count * clean_loss + len(indices) * loss) / (clean_count + len(indices))


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
    """AdamW over every module's parameters (:func:`rosearch.distill.optim.adamw`: matrices decayed only)."""
    return adamw((p for m in modules for p in m.parameters()), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _student_width(student: nn.Module, batch: dict[str, Tensor]) -> int:
    """Width of the student's last hidden state, from one no-grad eval-mode forward."""
    student.eval()
    with torch.no_grad():
        states = _forward(student, batch, hidden=True).hidden_states
    student.train()
    if states is None:
        raise ValueError(f"student {type(student).__name__} returned no hidden_states; rift needs them")
    return int(states[-1].shape[-1])


def _train(
    student: nn.Module,
    train: EncodedSplit,
    teacher: "TeacherOutputs",
    cfg: DistillConfig,
    rng: random.Random,
    device: torch.device,
    progress: ProgressFn | None,
    log_every: int,
    method_inputs: "MethodInputs | None",
    seed: int,
    defense: "Defense | None" = None,
) -> DistillResult:
    max_steps = cfg.max_steps
    methods = set(cfg.methods)
    student.to(device)
    student.train()
    # a copy: the cache hands read-only (shared or memory-mapped) arrays, which torch warns about and must not write to
    teacher_logits = torch.tensor(np.asarray(teacher.logits, dtype=np.float32), device=device)  # [n, C]
    augment = _AugmentStream(method_inputs, cfg, seed, device) if "augment" in methods else None
    adversarial = None
    if "adv_train" in methods:
        adversarial = AdversarialPool(method_inputs, cfg, train, teacher_logits, seed, device, defense)
    shares = (augment.batch_size if augment else 0) + (adversarial.batch_size if adversarial else 0)
    if cfg.batch_size - shares < 1:
        raise ValueError(
            f"distill.augment.fraction and distill.adv_train.fraction take {shares} of a batch of {cfg.batch_size}, "
            "leaving no clean example (fix: smaller fractions, or a larger distill.batch_size)"
        )
    batches = _batches(train, cfg.batch_size - shares, cfg, rng)

    hidden_weight = cfg.layer_kd.weight if "layer_kd" in methods else cfg.hidden_loss_weight
    use_hidden = hidden_weight > 0
    first = next(batches)
    pairs: list[tuple[int, int]] = []
    projections = nn.ModuleList()
    if use_hidden and "layer_kd" in methods and not teacher.layers:
        raise ValueError(
            "layer_kd's hidden-state term needs cached teacher hidden states, but the teacher outputs hold none "
            "(fix: compute them with rosearch.distill.methods.teacher_cache_request(config, ...).kwargs(), or set "
            "distill.layer_kd.weight=0)"
        )
    if use_hidden:
        pairs, projections = _layer_projections(student, collate(train, first, device), teacher, device)
        logger.info("hidden-state loss on (student, teacher) layer pairs %s", pairs)
    projections.train()
    terms = _MethodTerms(student, train, teacher, cfg, method_inputs, collate(train, first, device), seed, device)

    optimizer = _optimizer([student, projections, *terms.modules], cfg)
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
        if adversarial is not None:
            adversarial.maybe_round(student, step - 1)
        indices = first if step == 1 else next(batches)
        batch = collate(train, indices, device)
        with terms.recording():
            out = _forward(student, batch, hidden=use_hidden or terms.needs_hidden)
        loss = kd_loss(
            out.logits, teacher_logits[batch["indices"]], batch["labels"],
            alpha=cfg.alpha, temperature=cfg.temperature,
        )
        count = len(indices)
        if augment is not None:
            loss = augment.mixed_kd(student, loss, count)
            count += augment.last_size
        if adversarial is not None:
            loss = adversarial.mixed_kd(student, loss, count)
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
            loss = loss + hidden_weight * torch.stack(layer_losses).mean()
        if terms.active:
            loss = loss + terms.loss(student, batch, out, indices, step)

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
    kd_seconds = seconds - (adversarial.extra_seconds if adversarial is not None else 0.0)
    tail = max(1, math.ceil(0.1 * max_steps))
    student.zero_grad(set_to_none=True)
    student.eval()
    stats = terms.stats()
    if augment is not None:
        stats["augment_examples_seen"] = augment.seen
    if adversarial is not None:
        adversarial.close()
        stats.update(adversarial.stats())
    del terms, augment, adversarial  # MATE-KD's live teacher and generator go before any fine-tuning
    total_seconds = seconds
    if "adv_finetune" in methods:
        stats["kd_seconds"] = seconds
        stats.update(adversarial_finetune(student, train, teacher_logits, cfg, method_inputs, seed=seed, device=device,
                                          defense=defense))
        total_seconds = time.perf_counter() - start
    return DistillResult(
        steps=max_steps,
        train_seconds=total_seconds,
        examples_per_second=seen / kd_seconds if kd_seconds > 0 else float("inf"),
        final_loss=float(per_step[-tail:].mean()),
        loss_history=tuple(history),
        method_stats=stats,
    )


class _MethodTerms:
    """The extra loss terms of ``layer_kd`` (attention), ``rift`` and ``mate_kd`` on the clean batch.

    Built once per run; ``modules`` are their trainable parts (RIFT's projection), optimised
    with the student and dropped afterwards. With none of these methods it is inert.
    """

    def __init__(
        self, student: nn.Module, train: EncodedSplit, teacher: "TeacherOutputs", cfg: DistillConfig,
        inputs: "MethodInputs | None", first_batch: dict[str, Tensor], seed: int, device: torch.device,
    ) -> None:
        methods = set(cfg.methods)
        self.cfg = cfg
        self.train = train
        self.teacher = teacher
        self.device = device
        self.attention = None
        self.rift = None
        self.mate = None
        if "layer_kd" in methods and cfg.layer_kd.attention_weight > 0:
            self.attention = AttentionTerm(student, teacher)
        if "rift" in methods:
            self.rift = RiftTerm(_student_width(student, first_batch), teacher, cfg.rift.temperature, device)
        if "mate_kd" in methods:
            self.mate = MateKD(inputs, cfg, train.num_labels, seed, device)
        self.modules: list[nn.Module] = [self.rift.projection] if self.rift is not None else []
        self.needs_hidden = self.rift is not None
        self.active = (self.attention is not None and self.attention.active) or self.rift is not None or (
            self.mate is not None
        )

    def recording(self) -> contextlib.AbstractContextManager:
        """Around the clean forward: captures the student's attention when layer_kd needs it."""
        return self.attention.recording() if self.attention is not None else contextlib.nullcontext()

    def loss(self, student: nn.Module, batch: dict[str, Tensor], out: Any, indices: list[int], step: int) -> Tensor:
        """The weighted sum of the active terms for this step's clean batch."""
        mask = batch["attention_mask"]  # [B, T]
        total = torch.zeros((), device=self.device)
        if self.attention is not None and self.attention.active:
            total = total + self.cfg.layer_kd.attention_weight * self.attention.loss(self.teacher, self.train, indices, mask)
        if self.rift is not None:
            features = self.teacher.features_batch(indices, device=self.device)  # [B, Ht]
            total = total + self.cfg.rift.weight * self.rift.loss(out.hidden_states[-1], mask, features, batch["labels"])
        if self.mate is not None:
            total = total + self.cfg.mate_kd.weight * self.mate.student_loss(student, batch, step)
        return total

    def stats(self) -> dict[str, float]:
        return self.mate.stats() if self.mate is not None else {}
