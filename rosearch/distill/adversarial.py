"""``adv_finetune``: attack the distilled student, then fine-tune it on its own adversarial examples.

After the KD loop, the student is attacked with ``adv_finetune.recipe`` (a real TextAttack
recipe, :func:`rosearch.attack.runner.run_attack`) on a seeded sample of
``adv_finetune.examples`` *training* examples (the dev sample stays untouched for measuring
robustness). The successful adversarial texts are labelled by the live teacher once (soft
targets; the KD loss's hard part uses the original label, as adversarial training does), and
the student takes ``adv_finetune.steps`` AdamW steps at the constant ``adv_finetune.lr`` on
batches of which ``adv_finetune.fraction`` are adversarial and the rest clean training examples
with their cached teacher logits, so the student does not drift from the clean task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from rosearch.attack.runner import run_attack, sample_attack_examples
from rosearch.data.batching import EncodedSplit, batch_indices, collate
from rosearch.config import DistillConfig
from rosearch.data.tasks import Example, encode_examples
from rosearch.distill.losses import NonFiniteLossError, kd_loss
from rosearch.distill.optim import adamw
from rosearch.distill.protocol import DistillMethod, PrepareContext, StudentContext
from rosearch.distill.teacher import load_teacher
from rosearch.data.predictions import predict_logits
from rosearch.files.tokenizer_files import materialize_tokenizer

if TYPE_CHECKING:
    from rosearch.defense.pipeline import Defense
    from rosearch.distill.inputs import MethodInputs

logger = logging.getLogger(__name__)


def _stream(split: EncodedSplit, batch_size: int, rng: random.Random, bucketing: bool) -> Iterator[list[int]]:
    while True:
        yield from batch_indices(split.lengths, batch_size, shuffle=True, rng=rng, bucketing=bucketing)


def _inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


def adversarial_examples(
    student: nn.Module, tokenizer: Any, cfg: DistillConfig, inputs: "MethodInputs", *, seed: int,
    device: torch.device | str, defense: "Defense | None" = None,
) -> tuple[list[Example], dict[str, float]]:
    """The student's successful adversarial examples on the seeded training sample, with attack stats.

    With ``defense``, the attack queries the student through it (the texts returned are raw).
    """
    inputs.require("adv_finetune")
    recipe = cfg.adv_finetune.recipe or inputs.attack.recipe
    examples = sample_attack_examples(inputs.train_examples, cfg.adv_finetune.examples, seed)
    outcome = run_attack(
        student, tokenizer, examples, inputs.attack, recipe=recipe, cache_dir=inputs.cache_dir,
        model_name="student (adv_finetune)", max_length=inputs.max_length, device=device,
        text_columns=inputs.text_columns, defense=defense,
    )
    found = [  # successful attacks only: a failed attack's text still has the student right
        Example(columns[0], columns[1] if len(columns) > 1 else None, example.label)
        for example, columns, row in zip(examples, outcome.perturbed_columns, outcome.report.examples)
        if row.status == "successful" and columns is not None
    ]
    report = outcome.report
    stats = {
        "adv_attacked": float(report.n),
        "adv_successful": float(report.successful),
        "adv_attack_success_rate": report.attack_success_rate,
        "adv_accuracy_under_attack_train": report.accuracy_under_attack,
        "adv_attack_seconds": report.wall_seconds,
    }
    return found, stats


def adversarial_finetune(
    student: nn.Module,
    train: EncodedSplit,
    teacher_logits: Tensor,
    cfg: DistillConfig,
    inputs: "MethodInputs",
    *,
    seed: int,
    device: torch.device | str,
    defense: "Defense | None" = None,
) -> dict[str, float]:
    """Attack ``student``, then fine-tune it in place on clean + adversarial batches (module docstring).

    ``teacher_logits`` are the cached teacher logits of ``train`` ([n, C], on ``device``).
    Leaves the student in eval mode with its gradients released; returns ``adv_*`` stats.
    Without a single successful attack there is nothing to train on: the student is returned
    unchanged and its ``adv_finetune_steps`` stat is 0. With ``defense`` (``train`` then already defended),
    the attack goes through it and the adversarial texts are defended before the student sees
    them; the teacher labels the raw texts.
    """
    device = torch.device(device)
    student.eval()
    tokenizer = materialize_tokenizer(inputs.tokenizer_files)
    found, stats = adversarial_examples(student, tokenizer, cfg, inputs, seed=seed, device=device, defense=defense)
    stats["adv_finetune_steps"] = 0.0
    if not found:
        logger.info("adv_finetune: no successful attack on %d training examples; nothing to fine-tune on",
                    int(stats["adv_attacked"]))
        return stats
    start = time.perf_counter()
    digest = hashlib.sha256(json.dumps([(e.text_a, e.text_b, e.label) for e in found]).encode()).hexdigest()[:16]
    adversarial = encode_examples(found, tokenizer, inputs.max_length, f"{train.fingerprint}-adv-{digest}", train.num_labels)
    teacher, _ = load_teacher(inputs.teacher_path(), train.num_labels, device)
    adv_logits = torch.as_tensor(  # [m, C]: soft labels of the live teacher on the raw texts, computed once
        predict_logits(teacher, adversarial, batch_size=cfg.eval_batch_size, device=device), device=device
    )
    del teacher
    if defense is not None:  # the student trains on what it sees at inference: the defended text
        seen = [Example(defense.apply(e.text_a), None if e.text_b is None else defense.apply(e.text_b), e.label)
                for e in found]
        adversarial = encode_examples(seen, tokenizer, inputs.max_length, f"{train.fingerprint}-adv-{digest}-defended",
                                      train.num_labels)
    stats["adv_teacher_agrees_with_label"] = float(np.mean(adv_logits.argmax(-1).cpu().numpy() == adversarial.labels))

    n_adv = int(round(cfg.adv_finetune.fraction * cfg.batch_size))
    n_clean = cfg.batch_size - n_adv
    if n_adv < 1 or n_clean < 1:
        raise ValueError(
            f"distill.adv_finetune.fraction={cfg.adv_finetune.fraction} of a batch of {cfg.batch_size} leaves no room "
            "for one of the two kinds (fix: a fraction nearer 0.5, or a larger distill.batch_size)"
        )
    clean_stream = _stream(train, n_clean, random.Random(f"{seed}:adv-clean"), cfg.length_bucketing)
    adv_stream = _stream(adversarial, n_adv, random.Random(f"{seed}:adv"), cfg.length_bucketing)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=cfg.adv_finetune.lr, weight_decay=cfg.weight_decay)
    student.train()
    losses: list[Tensor] = []
    for step in range(1, cfg.adv_finetune.steps + 1):
        parts = []
        for split, stream, logits in ((train, clean_stream, teacher_logits), (adversarial, adv_stream, adv_logits)):
            batch = collate(split, next(stream), device)
            out = student(**_inputs(batch)).logits  # [b, C]
            loss = kd_loss(out, logits[batch["indices"]], batch["labels"], alpha=cfg.alpha, temperature=cfg.temperature)
            parts.append((loss, len(batch["labels"])))
        loss = sum(part * count for part, count in parts) / sum(count for _, count in parts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            student.zero_grad(set_to_none=True)
            student.eval()
            raise NonFiniteLossError(
                f"non-finite adversarial fine-tuning loss {loss.item()!r} at step {step}/{cfg.adv_finetune.steps} "
                f"with learning rate {cfg.adv_finetune.lr:.3g}; no update was applied "
                "(fix: lower distill.adv_finetune.lr)"
            )
        optimizer.step()
        losses.append(loss.detach())
    student.zero_grad(set_to_none=True)
    student.eval()
    tail = torch.stack(losses[-max(1, len(losses) // 10):]).mean().item()
    stats.update({
        "adv_examples": float(len(found)),
        "adv_finetune_steps": float(cfg.adv_finetune.steps),
        "adv_finetune_final_loss": tail,
        "adv_finetune_seconds": time.perf_counter() - start,
    })
    logger.info("adv_finetune: %d adversarial + clean examples, %d steps at lr %g, final loss %.4f, %.1fs",
                len(found), cfg.adv_finetune.steps, cfg.adv_finetune.lr, tail, stats["adv_finetune_seconds"])
    return stats


class AdvFinetune(DistillMethod):
    """The adv_finetune method (:class:`~rosearch.distill.protocol.DistillMethod`)."""

    name = "adv_finetune"
    runs_teacher = True
    description = ("after KD, attack the student on training examples and fine-tune briefly on clean + "
                   "successful adversarial examples with teacher soft labels (adversarial training as in "
                   "Morris et al., TextAttack, 2020)")

    def needs_inputs(self) -> bool:
        return True

    def prepare(self, ctx: PrepareContext) -> dict[str, Any]:
        """The clean split's raw text, which the attack samples."""
        return {"train_examples": tuple(ctx.train_examples)}

    def after_training(self, ctx: StudentContext) -> dict[str, float]:
        return adversarial_finetune(ctx.student, ctx.train, ctx.teacher_logits, ctx.cfg, ctx.inputs, seed=ctx.seed,
                                    device=ctx.device, defense=ctx.defense)


ADV_FINETUNE = AdvFinetune()
