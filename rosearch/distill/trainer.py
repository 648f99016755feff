"""Knowledge distillation of one student from cached teacher outputs, under a fixed step budget.

The search controls fidelity through ``DistillConfig.max_steps``: every candidate gets exactly
that many optimizer steps (epochs cycle with a reshuffle), so candidates are compared at equal
cost. The teacher's logits (and, for the TinyBERT-style layer losses, its hidden states and
attention; for RIFT, its features) come from the on-disk cache and are gathered by each
batch's example indices.

Robust variants are options of this same loop (``cfg.methods``): each is a
:class:`~rosearch.distill.protocol.DistillMethod` of the registry in :mod:`rosearch.distill.methods`,
and the loop calls its hooks at fixed points — a share of every batch (``augment``,
``adv_train``), an extra loss term on the clean batch (``layer_kd``'s attention, ``rift``,
``mate_kd``), a step before each step (``adv_train``'s attack rounds), work after the loop
(``adv_finetune``). With ``methods=()`` the loop is exactly the plain KD loop: same batches, same
random draws, same weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import get_linear_schedule_with_warmup

from rosearch.data.batching import EncodedSplit, collate
from rosearch.config import DistillConfig
from rosearch.distill.inputs import MethodInputsError
from rosearch.distill.losses import NonFiniteLossError, hidden_mse_loss, kd_loss, uniform_layer_map
from rosearch.distill.methods import methods_in_order
from rosearch.distill.optim import adamw
from rosearch.distill.protocol import MethodRun, StudentContext, batch_stream, forward

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
    for method in methods_in_order(cfg.methods):
        if method.needs_inputs():
            if method_inputs is None:
                raise MethodInputsError(
                    f"distill.methods has {method.name!r}, which needs method inputs, but none were given "
                    "(fix: pass method_inputs=prepare_method_inputs(config, ...))"
                )
            method_inputs.require(method.name)
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
    return batch_stream(train, batch_size, rng, cfg.length_bucketing)


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
        states = forward(student, batch, hidden=True).hidden_states  # L+1 x [B, T, Hs]
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
    units = methods_in_order(cfg.methods)
    student.to(device)
    student.train()
    # a copy: the cache hands read-only (shared or memory-mapped) arrays, which torch warns about and must not write to
    teacher_logits = torch.tensor(np.asarray(teacher.logits, dtype=np.float32), device=device)  # [n, C]
    shares = sum(unit.batch_share(cfg) for unit in units)
    if cfg.batch_size - shares < 1:
        named = " and ".join(f"distill.{unit.name}.fraction" for unit in units if unit.batch_share(cfg))
        raise ValueError(
            f"{named} take {shares} of a batch of {cfg.batch_size}, "
            "leaving no clean example (fix: smaller fractions, or a larger distill.batch_size)"
        )
    batches = _batches(train, cfg.batch_size - shares, cfg, rng)

    hidden_weight = cfg.hidden_loss_weight
    for unit in units:
        taken = unit.hidden_weight(cfg, teacher)
        hidden_weight = hidden_weight if taken is None else taken
    use_hidden = hidden_weight > 0
    first = next(batches)
    pairs: list[tuple[int, int]] = []
    projections = nn.ModuleList()
    if use_hidden:
        pairs, projections = _layer_projections(student, collate(train, first, device), teacher, device)
        logger.info("hidden-state loss on (student, teacher) layer pairs %s", pairs)
    projections.train()
    ctx = StudentContext(student=student, train=train, teacher=teacher, teacher_logits=teacher_logits, cfg=cfg,
                         inputs=method_inputs, first_batch=collate(train, first, device), seed=seed, device=device,
                         defense=defense)
    runs = _Runs(unit.start(ctx) for unit in units)

    optimizer = _optimizer([student, projections, *runs.modules()], cfg)
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
        runs.before_step(student, step - 1)
        indices = first if step == 1 else next(batches)
        batch = collate(train, indices, device)
        with runs.recording():
            out = forward(student, batch, hidden=use_hidden or runs.needs_hidden())
        loss = kd_loss(
            out.logits, teacher_logits[batch["indices"]], batch["labels"],
            alpha=cfg.alpha, temperature=cfg.temperature,
        )
        loss = runs.mix(student, loss, len(indices))
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
        extra = runs.loss(student, batch, out, indices, step)
        if extra is not None:
            loss = loss + extra

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
    kd_seconds = seconds - runs.extra_seconds()
    tail = max(1, math.ceil(0.1 * max_steps))
    student.zero_grad(set_to_none=True)
    student.eval()
    stats = runs.close()  # MATE-KD's live teacher and generator go before any fine-tuning
    total_seconds = seconds
    for unit in units:
        more = unit.after_training(ctx)
        if more is not None:
            stats.setdefault("kd_seconds", seconds)
            stats.update(more)
            total_seconds = time.perf_counter() - start
    return DistillResult(
        steps=max_steps,
        train_seconds=total_seconds,
        examples_per_second=seen / kd_seconds if kd_seconds > 0 else float("inf"),
        final_loss=float(per_step[-tail:].mean()),
        loss_history=tuple(history),
        method_stats=stats,
    )


class _Runs:
    """The methods started for one distillation; each hook runs on all of them, in registry order.

    The order matters for bit-identical results: batch shares are drawn, and extra loss terms
    summed, in the order of :data:`rosearch.distill.methods.REGISTRY`.
    """

    def __init__(self, runs: Iterable[MethodRun | None]) -> None:
        self.runs = [run for run in runs if run is not None]

    def modules(self) -> list[nn.Module]:
        return [module for run in self.runs for module in run.modules]

    def needs_hidden(self) -> bool:
        return any(run.needs_hidden for run in self.runs)

    def extra_seconds(self) -> float:
        return sum(run.extra_seconds for run in self.runs)

    def before_step(self, student: nn.Module, completed_steps: int) -> None:
        for run in self.runs:
            run.before_step(student, completed_steps)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for run in self.runs:
                stack.enter_context(run.recording())
            yield

    def mix(self, student: nn.Module, loss: Tensor, count: int) -> Tensor:
        """The KD loss of the whole batch, each method's share mixed in."""
        for run in self.runs:
            loss, count = run.mix(student, loss, count)
        return loss

    def loss(self, student: nn.Module, batch: dict[str, Tensor], out: Any, indices: list[int],
             step: int) -> Tensor | None:
        """The sum of the methods' extra terms on the clean batch (None: there are none)."""
        terms = [term for term in (run.loss(student, batch, out, indices, step) for run in self.runs)
                 if term is not None]
        if not terms:
            return None
        total = torch.zeros((), device=terms[0].device)
        for term in terms:
            total = total + term
        return total

    def close(self) -> dict[str, float]:
        """Every method's stats; then each is closed and dropped (its live models with it)."""
        stats: dict[str, float] = {}
        for run in self.runs:
            stats.update(run.stats())
            run.close()
        self.runs = []
        return stats
