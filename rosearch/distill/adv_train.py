"""``adv_train``: iterative adversarial training inside the KD loop.

Adversarial fine-tuning after KD (``adv_finetune``) attacks a student once, when its decision
boundary is already set. Here the attack runs *during* distillation: after every
``adv_train.every`` KD steps (``adv_train.rounds`` times) the current student is attacked with
cheap recipes (``adv_train.recipes``, taken in turn over the round's examples, each capped at
``adv_train.query_budget`` model queries per example) on a fresh seeded sample of
``adv_train.examples`` training texts. The successful adversarial texts join a pool, labelled
once by the live teacher (soft targets on the *raw* adversarial text; the hard part of the KD
loss keeps the original label, as adversarial training does). From the first round on,
``adv_train.fraction`` of every batch is drawn from the pool; before it, that share is filled
with more clean examples, so each step sees ``batch_size`` examples and the step budget keeps
its meaning. Later rounds attack a student that has already trained on earlier rounds' texts,
which is what makes the training iterative (Madry et al., 2018; Morris et al., TextAttack, 2020).

A student that carries an input defense is attacked *through* it (the attack queries the
deployed pipeline) and its adversarial texts pass through the defense before they are encoded
for it — the same text the student would see at inference. The teacher sees the raw text.

Deterministic under a seed: each round's sample, the attacks (seeded and RNG-restoring) and the
pool's batch order derive from the run seed; torch's RNG is untouched by the teacher's loading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from rosearch.attack.runner import run_attack, sample_attack_examples
from rosearch.data.batching import EncodedSplit, batch_indices, collate
from rosearch.config import DistillConfig
from rosearch.data.tasks import Example, encode_examples
from rosearch.distill.losses import kd_loss
from rosearch.distill.protocol import DistillMethod, MethodRun, PrepareContext, StudentContext
from rosearch.distill.teacher import load_teacher
from rosearch.data.predictions import predict_logits
from rosearch.files.tokenizer_files import materialize_tokenizer

if TYPE_CHECKING:
    from rosearch.defense.pipeline import Defense
    from rosearch.distill.inputs import MethodInputs

logger = logging.getLogger(__name__)


def round_steps(cfg: DistillConfig) -> tuple[int, ...]:
    """The KD steps after which a round runs: ``every``, ``2 * every``, ... (``rounds`` of them)."""
    return tuple(k * cfg.adv_train.every for k in range(1, cfg.adv_train.rounds + 1))


def _stream(split: EncodedSplit, size: int, rng: random.Random, bucketing: bool) -> Iterator[list[int]]:
    while True:
        yield from batch_indices(split.lengths, size, shuffle=True, rng=rng, bucketing=bucketing)


def _round_seed(seed: int, round_index: int) -> int:
    return int(hashlib.sha256(f"{seed}:adv_train:{round_index}".encode()).hexdigest()[:8], 16)


def _defended(example: Example, defense: "Defense | None") -> Example:
    if defense is None:
        return example
    return Example(defense.apply(example.text_a), None if example.text_b is None else defense.apply(example.text_b),
                   example.label)


def attack_round(
    student: nn.Module, tokenizer: Any, cfg: DistillConfig, inputs: "MethodInputs", *, round_index: int, seed: int,
    device: torch.device | str, defense: "Defense | None" = None,
) -> tuple[list[Example], dict[str, float]]:
    """Attack ``student`` (through ``defense``) on round ``round_index``'s seeded training sample.

    Returns the successful adversarial examples as raw text (original labels), in sample order,
    and the round's attack counts. Failed attacks are dropped: their text still has the student right.
    """
    inputs.require("adv_train")
    round_seed = _round_seed(seed, round_index)
    sample = sample_attack_examples(inputs.train_examples, cfg.adv_train.examples, round_seed)
    attack_cfg = dataclasses.replace(inputs.attack, query_budget=cfg.adv_train.query_budget, seed=round_seed % 2**31)
    recipes = cfg.adv_train.recipes
    found: list[tuple[int, Example]] = []
    stats = {"attacked": 0.0, "successful": 0.0, "skipped": 0.0, "queries": 0.0, "seconds": 0.0}
    for r, recipe in enumerate(recipes):
        positions = list(range(r, len(sample), len(recipes)))  # recipes in turn over the sample
        if not positions:
            continue
        outcome = run_attack(
            student, tokenizer, [sample[p] for p in positions], attack_cfg, recipe=recipe, cache_dir=inputs.cache_dir,
            model_name=f"student (adv_train round {round_index})", max_length=inputs.max_length, device=device,
            text_columns=inputs.text_columns, defense=defense,
        )
        report = outcome.report
        for p, columns, row in zip(positions, outcome.perturbed_columns, report.examples):
            if row.status == "successful" and columns is not None:
                found.append((p, Example(columns[0], columns[1] if len(columns) > 1 else None, sample[p].label)))
        attacked = report.n - report.skipped
        stats["attacked"] += report.n
        stats["successful"] += report.successful
        stats["skipped"] += report.skipped
        stats["queries"] += report.mean_queries * attacked
        stats["seconds"] += report.wall_seconds
    found.sort(key=lambda item: item[0])
    return [example for _, example in found], stats


class AdversarialPool(MethodRun):
    """The ``adv_train`` share of every batch: clean filler until the first round, then the pool.

    Built once per :func:`~rosearch.distill.trainer.distill` call; the trainer calls
    :meth:`before_step` (:meth:`maybe_round`) before each step and :meth:`mix` after the clean forward.
    """

    def __init__(
        self, inputs: "MethodInputs", cfg: DistillConfig, train: EncodedSplit, teacher_logits: Tensor, seed: int,
        device: torch.device, defense: "Defense | None",
    ) -> None:
        inputs.require("adv_train")
        self.inputs = inputs
        self.cfg = cfg
        self.train = train
        self.teacher_logits = teacher_logits  # [n, C] cached teacher logits of the clean split
        self.seed = seed
        self.device = device
        self.defense = defense
        self.batch_size = ADV_TRAIN.batch_share(cfg)
        if self.batch_size < 1:
            raise ValueError(
                f"distill.adv_train.fraction={cfg.adv_train.fraction} of a batch of {cfg.batch_size} is no example "
                "(fix: a larger fraction or distill.batch_size)"
            )
        self.rounds = set(round_steps(cfg))
        self.filler = _stream(train, self.batch_size, random.Random(f"{seed}:adv_train:filler"), cfg.length_bucketing)
        self.examples: list[Example] = []  # raw adversarial texts in the pool, de-duplicated
        self.split: EncodedSplit | None = None  # the pool as the student sees it (defended), encoded
        self.logits: Tensor | None = None  # [m, C] the teacher's logits on the raw texts
        self.batches: Iterator[list[int]] | None = None
        self._tokenizer: Any = None
        self._teacher: nn.Module | None = None
        self.round_index = 0
        self.seen = 0
        self.extra_seconds = 0.0  # attack + labelling time, outside the KD loop's throughput
        self.totals = {"attacked": 0.0, "successful": 0.0, "skipped": 0.0, "queries": 0.0, "seconds": 0.0,
                       "label_seconds": 0.0}
        self.agree: list[bool] = []
        logger.info("adv_train: %d rounds after KD steps %s, %d training texts each (%s, <= %s queries each); "
                    "%d of every %d batch examples from the pool", cfg.adv_train.rounds, sorted(self.rounds),
                    cfg.adv_train.examples, "+".join(cfg.adv_train.recipes), cfg.adv_train.query_budget,
                    self.batch_size, cfg.batch_size)

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = materialize_tokenizer(self.inputs.tokenizer_files)
        return self._tokenizer

    def maybe_round(self, student: nn.Module, completed_steps: int) -> None:
        """Run a round when ``completed_steps`` KD steps are done and one is due."""
        if completed_steps not in self.rounds:
            return
        start = time.perf_counter()
        self.round_index += 1
        student.eval()
        found, stats = attack_round(student, self.tokenizer(), self.cfg, self.inputs, round_index=self.round_index,
                                    seed=self.seed, device=self.device, defense=self.defense)
        student.train()
        for key in ("attacked", "successful", "skipped", "queries", "seconds"):
            self.totals[key] += stats[key]
        known = {(e.text_a, e.text_b) for e in self.examples}
        new = [e for e in found if (e.text_a, e.text_b) not in known]
        if new:
            self._add(new)
        self.extra_seconds += time.perf_counter() - start
        logger.info("adv_train round %d after step %d: %d/%d successful attacks, %d new texts, pool %d (%.1fs)",
                    self.round_index, completed_steps, int(stats["successful"]), int(stats["attacked"]), len(new),
                    len(self.examples), time.perf_counter() - start)

    def _add(self, new: Sequence[Example]) -> None:
        """Label ``new`` with the live teacher (raw text) and rebuild the pool's encoded split."""
        start = time.perf_counter()
        tokenizer = self.tokenizer()
        num_labels = self.train.num_labels
        digest = hashlib.sha256(json.dumps([(e.text_a, e.text_b, e.label) for e in new]).encode()).hexdigest()[:16]
        raw = encode_examples(list(new), tokenizer, self.inputs.max_length, f"{self.train.fingerprint}-advtrain-raw-"
                              f"{digest}", num_labels)
        logits = torch.as_tensor(predict_logits(self._live_teacher(), raw, batch_size=self.cfg.eval_batch_size,
                                                device=self.device), device=self.device)  # [k, C]
        self.agree.extend((logits.argmax(-1).cpu().numpy() == raw.labels).tolist())
        self.examples.extend(new)
        self.logits = logits if self.logits is None else torch.cat([self.logits, logits])
        pool = [_defended(e, self.defense) for e in self.examples]  # what the student sees at inference
        pool_digest = hashlib.sha256(
            json.dumps([(e.text_a, e.text_b, e.label) for e in pool]).encode()).hexdigest()[:16]
        self.split = encode_examples(pool, tokenizer, self.inputs.max_length,
                                     f"{self.train.fingerprint}-advtrain-{pool_digest}", num_labels)
        self.batches = _stream(self.split, self.batch_size, random.Random(f"{self.seed}:adv_train:{self.round_index}"),
                               self.cfg.length_bucketing)
        self.totals["label_seconds"] += time.perf_counter() - start

    def _live_teacher(self) -> nn.Module:
        """The teacher, loaded at the first round with hits and kept until :meth:`close`."""
        if self._teacher is None:
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # loading must not shift the student's dropout draws
                self._teacher, _ = load_teacher(self.inputs.teacher_path(), self.train.num_labels, self.device)
        return self._teacher

    def before_step(self, student: nn.Module, completed_steps: int) -> None:
        self.maybe_round(student, completed_steps)

    def mix(self, student: nn.Module, loss: Tensor, count: int) -> tuple[Tensor, int]:
        """The KD loss of the whole batch: ``loss`` over ``count`` examples plus this share."""
        if self.batches is None:  # before the first hit: more clean examples, cached teacher logits
            split, indices, targets = self.train, next(self.filler), self.teacher_logits
        else:
            split, indices, targets = self.split, next(self.batches), self.logits
            self.seen += len(indices)
        batch = collate(split, indices, self.device)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        logits = student(**inputs).logits  # [Bv, C]
        part = kd_loss(logits, targets[batch["indices"]], batch["labels"], alpha=self.cfg.alpha,
                       temperature=self.cfg.temperature)
        return (count * loss + len(indices) * part) / (count + len(indices)), count + len(indices)

    def mixed_kd(self, student: nn.Module, loss: Tensor, count: int) -> Tensor:
        """:meth:`mix`'s loss alone."""
        return self.mix(student, loss, count)[0]

    def close(self) -> None:
        """Release the live teacher."""
        self._teacher = None

    def stats(self) -> dict[str, float]:
        attacked_not_skipped = self.totals["attacked"] - self.totals["skipped"]
        return {
            "adv_train_rounds": float(self.round_index),
            "adv_train_attacked": self.totals["attacked"],
            "adv_train_successful": self.totals["successful"],
            "adv_train_attack_success_rate": (self.totals["successful"] / attacked_not_skipped
                                              if attacked_not_skipped else 0.0),
            "adv_train_mean_queries": (self.totals["queries"] / attacked_not_skipped if attacked_not_skipped else 0.0),
            "adv_train_pool": float(len(self.examples)),
            "adv_train_examples_seen": float(self.seen),
            "adv_train_teacher_agrees_with_label": float(np.mean(self.agree)) if self.agree else float("nan"),
            "adv_train_attack_seconds": self.totals["seconds"],
            "adv_train_label_seconds": self.totals["label_seconds"],
            "adv_train_seconds": self.extra_seconds,
        }


class AdvTrain(DistillMethod):
    """The adv_train method (:class:`~rosearch.distill.protocol.DistillMethod`)."""

    name = "adv_train"
    runs_teacher = True
    description = ("iterative adversarial training inside KD: every adv_train.every steps, attack the current student "
                   "with cheap recipes on a seeded sample of training texts, label the successful adversarial texts "
                   "with the live teacher, and draw a share of every later batch from that growing pool "
                   "(Madry et al., ICLR 2018; Morris et al., TextAttack, 2020)")

    def needs_inputs(self) -> bool:
        return True

    def prepare(self, ctx: PrepareContext) -> dict[str, Any]:
        """The clean split's raw text, which each round samples and attacks."""
        return {"train_examples": tuple(ctx.train_examples)}

    def batch_share(self, cfg: DistillConfig) -> int:
        return int(round(cfg.adv_train.fraction * cfg.batch_size))

    def start(self, ctx: StudentContext) -> AdversarialPool:
        return AdversarialPool(ctx.inputs, ctx.cfg, ctx.train, ctx.teacher_logits, ctx.seed, ctx.device, ctx.defense)


ADV_TRAIN = AdvTrain()
