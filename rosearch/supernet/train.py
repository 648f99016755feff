"""Training the supernet once: single-path uniform sampling (SPOS), distilled from the cached teacher.

Every step draws one architecture uniformly from the search space (the search's own sampler, so
the parameter budget holds), runs that path of the supernet on the batch and takes the plain KD
loss of :func:`rosearch.distill.losses.kd_loss` against the cached teacher logits; only the
path's slices get gradients, and AdamW leaves every other weight alone.

The training checkpoints its whole state every ``checkpoint_every`` steps (weights, optimizer,
schedule, torch's RNG, the losses), written atomically, so a training killed at any moment
(``kill -9`` included) resumes from the last checkpoint and ends with the same weights as an
uninterrupted one: the architecture of step ``s`` is drawn from a generator seeded by (seed, s),
and the batch stream is replayed to step ``s`` (index arithmetic only).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from rosearch.data.batching import EncodedSplit, collate
from rosearch.files.cache import atomic_file
from rosearch.config import DistillConfig, SupernetConfig
from rosearch.distill.losses import NonFiniteLossError, kd_loss
from rosearch.distill.optim import adamw
from rosearch.distill.protocol import batch_stream
from rosearch.search_space.genome import Genome
from rosearch.supernet.network import Supernet

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
Sampler = Callable[[int], Genome]  # step (1-based) -> the architecture that step trains


@dataclass(frozen=True)
class SupernetTraining:
    """What one call of :func:`train_supernet` did."""

    steps_done: int  # steps completed so far (== max_steps when finished)
    finished: bool
    resumed_from: int  # the checkpoint's step this call started from (0: a fresh start)
    seconds: float  # this call's training seconds
    loss_history: tuple[tuple[int, float], ...]  # (step, mean loss since the previous entry), whole training


def seeded_sampler(sample: Callable[[random.Random], Genome], seed: int) -> Sampler:
    """A sampler whose step ``s`` draws from ``random.Random(f"{seed}:{s}")``: any step is reproducible alone."""
    return lambda step: sample(random.Random(f"{seed}:{step}"))


def train_supernet(
    net: Supernet, train: EncodedSplit, teacher_logits: np.ndarray, sampler: Sampler, cfg: SupernetConfig,
    distill: DistillConfig, *, seed: int, device: torch.device | str, checkpoint_dir: Path | None = None,
    stop_after: int | None = None, log_every: int | None = None,
) -> SupernetTraining:
    """Train ``net`` in place for ``cfg.max_steps`` single-path KD steps (resuming from ``checkpoint_dir``).

    ``distill`` gives the KD loss (``alpha``, ``temperature``), weight decay, gradient clipping and
    length bucketing that stand-alone students use. ``stop_after`` ends the call after that many
    steps in all (a checkpoint is written there): how tests interrupt a training.
    """
    if len(train) == 0:
        raise ValueError("train_supernet got an empty training split (fix: check data.train_limit)")
    if tuple(np.shape(teacher_logits)) != (len(train), train.num_labels):
        raise ValueError(f"teacher logits have shape {tuple(np.shape(teacher_logits))}, the training split needs "
                         f"({len(train)}, {train.num_labels}) (fix: re-cache the teacher outputs for this split)")
    device = torch.device(device)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        return _train(net, train, teacher_logits, sampler, cfg, distill, seed, device, checkpoint_dir, stop_after,
                      log_every or max(1, cfg.max_steps // 20))


def _train(net: Supernet, train: EncodedSplit, teacher_logits: np.ndarray, sampler: Sampler, cfg: SupernetConfig,
           distill: DistillConfig, seed: int, device: torch.device, checkpoint_dir: Path | None,
           stop_after: int | None, log_every: int) -> SupernetTraining:
    net.to(device).train()
    logits = torch.tensor(np.asarray(teacher_logits, dtype=np.float32), device=device)
    optimizer = adamw(net.parameters(), lr=cfg.learning_rate, weight_decay=distill.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(round(cfg.warmup_ratio * cfg.max_steps)), num_training_steps=cfg.max_steps)
    history: list[tuple[int, float]] = []
    done = 0
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_FILE
    if path is not None and path.is_file():
        state = torch.load(path, map_location=device, weights_only=False)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        done, history = int(state["step"]), [tuple(h) for h in state["history"]]
        logger.info("supernet: resuming from the checkpoint at step %d/%d (%s)", done, cfg.max_steps, path)
    batches = batch_stream(train, cfg.batch_size, random.Random(seed), distill.length_bucketing)
    for _ in range(done):  # replay the stream to where the checkpoint stopped
        next(batches)
    resumed_from = done
    params = list(net.parameters())
    running: list[float] = []
    start = time.perf_counter()
    last = cfg.max_steps if stop_after is None else min(stop_after, cfg.max_steps)
    for step in range(done + 1, last + 1):
        genome = sampler(step)
        batch = collate(train, next(batches), device)
        out = net(genome, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        loss = kd_loss(out.logits, logits[batch["indices"]], batch["labels"], alpha=distill.alpha,
                       temperature=distill.temperature)
        optimizer.zero_grad(set_to_none=True)  # weights off this step's path keep grad None: AdamW skips them
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], distill.max_grad_norm)
        if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            raise NonFiniteLossError(
                f"supernet: non-finite loss {loss.item()!r} (gradient norm {grad_norm.item()!r}) at step {step} on "
                f"architecture {genome.hash()[:12]}; no update applied (fix: lower supernet.learning_rate)")
        optimizer.step()
        scheduler.step()
        running.append(float(loss.detach()))
        if step % log_every == 0 or step == cfg.max_steps:
            history.append((step, sum(running) / len(running)))
            running = []
            logger.info("supernet: step %d/%d loss %.4f (%.2f s/step)", step, cfg.max_steps, history[-1][1],
                        (time.perf_counter() - start) / (step - resumed_from))
        if path is not None and (step % cfg.checkpoint_every == 0 or step == last):
            _save(path, net, optimizer, scheduler, step, history)
        done = step
    optimizer.zero_grad(set_to_none=True)
    net.eval()
    return SupernetTraining(steps_done=done, finished=done >= cfg.max_steps, resumed_from=resumed_from,
                            seconds=time.perf_counter() - start, loss_history=tuple(history))


def _save(path: Path, net: Supernet, optimizer: Any, scheduler: Any, step: int,
          history: list[tuple[int, float]]) -> None:
    """The whole training state, published atomically (a kill mid-write leaves the previous checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "step": step, "history": [list(h) for h in history]}
    with atomic_file(path) as tmp:
        torch.save(state, tmp)
    logger.debug("supernet: checkpoint at step %d written to %s", step, path)


def final_loss(history: tuple[tuple[int, float], ...]) -> float:
    """The mean of the last ~10% of the logged losses (NaN before any step)."""
    if not history:
        return float("nan")
    tail = max(1, math.ceil(0.1 * len(history)))
    return float(np.mean([loss for _, loss in history[-tail:]]))
