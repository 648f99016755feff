"""The fitness evaluation of one genome: build the student, distil it, measure it.

This is the single function that every worker backend runs; it reads only the shared,
read-only :class:`~rosearch.prepare.search_inputs.SearchInputs` and returns plain metrics, so it behaves
the same in-process, in a Ray task, or on another machine of a cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass

import torch

from rosearch.config import DistillConfig
from rosearch.distill.trainer import distill
from rosearch.data.batching import EncodedSplit
from rosearch.evaluate.smoothed import example_logits
from rosearch.data.predictions import logits_accuracy
from rosearch.prepare.search_inputs import SearchInputs
from rosearch.search_space.cost import count_flops, count_parameters
from rosearch.search_space.genome import Genome
from rosearch.student.configuration import StudentConfig
from rosearch.student.modeling import StudentForSequenceClassification, init_embedding_from_teacher
from rosearch.data.validation import F1_TASKS, binary_f1

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidateMetrics:
    """What one evaluation measured; the worker adds latency (and, with attacks, robustness) keys."""

    genome_hash: str
    dev_accuracy: float  # the official dev split: reported, never selected on when the run has a validation slice
    params: int
    flops: int  # per example, at the dev split's mean token length (SearchInputs.dev_mean_length)
    steps: int
    final_loss: float
    train_seconds: float
    eval_seconds: float
    val_accuracy: float | None = None  # the validation slice selection compares (None: data.validation_size=0, dev selects)
    dev_f1: float | None = None  # F1 of the positive class, for the tasks GLUE scores by it (MRPC, QQP)
    val_f1: float | None = None
    methods: tuple[str, ...] = ()  # the robust distillation methods it trained with (distill.methods + training gene)
    method_stats: dict[str, float] | None = None  # what they did (adversarial examples, seconds, ...)

    def to_dict(self) -> dict:
        """Flat JSON-able metrics; the methods and their numbers only when it used any."""
        out = {key: value for key, value in asdict(self).items()
               if value is not None and key not in ("methods", "method_stats")}
        if self.methods:
            out["distill_methods"] = list(self.methods)
        out |= {f"distill_{key}": value for key, value in (self.method_stats or {}).items()}
        return out


def build_student(genome: Genome, inputs: SearchInputs, distill_config: DistillConfig, *,
                  seed: int) -> StudentForSequenceClassification:
    """A freshly initialised student for ``genome`` (embedding from the teacher's PCs if configured)."""
    torch.manual_seed(seed)
    student_config = StudentConfig(
        genome=genome.to_dict(),
        vocab_size=inputs.vocab_size,
        max_position_embeddings=inputs.max_position_embeddings,
        type_vocab_size=inputs.type_vocab_size,
        num_labels=inputs.num_labels,
        pad_token_id=inputs.pad_token_id,
        hidden_dropout_prob=distill_config.dropout,
    )
    model = StudentForSequenceClassification(student_config)
    if inputs.teacher_embedding_pcs is not None:
        pcs = inputs.teacher_embedding_pcs[:, : genome.embedding_size]
        init_embedding_from_teacher(model, torch.tensor(pcs, dtype=torch.float32))  # copy: shared arrays are read-only
    return model


def split_scores(
    model: torch.nn.Module, split: EncodedSplit, task: str, *, batch_size: int, device: torch.device | str,
    copies: int = 1,
) -> tuple[float, float | None]:
    """Accuracy on ``split`` (in batches of ``batch_size``: ``distill.eval_batch_size``), and F1 of the
    positive class where GLUE scores the task by it. With ``copies`` > 1 the split holds each example's
    smoothing copies, consecutive: scored as the mean of their probabilities, as the deployed smoothed
    student answers."""
    logits, labels = example_logits(model, split, batch_size=batch_size, device=device, copies=copies)
    f1 = binary_f1(logits.argmax(axis=1), labels) if task in F1_TASKS else None
    return logits_accuracy(logits, labels), f1


def evaluate_candidate(
    genome: Genome, inputs: SearchInputs, distill_config: DistillConfig, *, seed: int, device: torch.device | str
) -> tuple[StudentForSequenceClassification, CandidateMetrics]:
    """Distil a student of ``genome`` from the cached teacher outputs and measure it on dev.

    A genome with input defenses trains and is measured on text passed through them (the same
    defense the attack queries and the export carries); the teacher's targets are its outputs
    on the original text. A genome with a training gene distils with those methods on top of
    ``distill.methods`` (their once-per-run inputs were prepared for the whole run).
    """
    key = genome.hash()
    defense = inputs.defense(genome.defenses)  # adv_train / adv_finetune attack through it
    inputs = inputs.for_defenses(genome.defenses)
    model = build_student(genome, inputs, distill_config, seed=seed).to(device)
    if genome.training:  # plus the methods of the genome's training gene
        distill_config = dataclasses.replace(distill_config, methods=distill_config.methods + tuple(
            m for m in genome.training if m not in distill_config.methods))
    result = distill(
        model, inputs.train, inputs.teacher_outputs, distill_config, seed=seed, device=device,
        method_inputs=inputs.method_inputs, defense=defense,
    )
    start = time.perf_counter()
    copies = defense.copies_per_text if defense else 1
    batch_size = distill_config.eval_batch_size
    scores = {"dev": split_scores(model, inputs.dev, inputs.task_name, batch_size=batch_size, device=device,
                                  copies=copies)}
    if inputs.val is not None:
        scores["val"] = split_scores(model, inputs.val, inputs.task_name, batch_size=batch_size, device=device,
                                     copies=copies)
    dev_accuracy = scores["dev"][0]
    eval_seconds = time.perf_counter() - start
    metrics = CandidateMetrics(
        genome_hash=key,
        dev_accuracy=dev_accuracy,
        params=count_parameters(
            genome, vocab_size=inputs.vocab_size, num_labels=inputs.num_labels,
            max_position_embeddings=inputs.max_position_embeddings, type_vocab_size=inputs.type_vocab_size,
        ),
        flops=count_flops(genome, seq_len=inputs.dev_mean_length, num_labels=inputs.num_labels),
        steps=result.steps,
        final_loss=result.final_loss,
        train_seconds=result.train_seconds,
        eval_seconds=eval_seconds,
        val_accuracy=scores["val"][0] if "val" in scores else None,
        dev_f1=scores["dev"][1],
        val_f1=scores["val"][1] if "val" in scores else None,
        methods=tuple(distill_config.methods),
        method_stats={k: float(v) for k, v in result.method_stats.items()} or None,
    )
    logger.info(
        "candidate %s: %s accuracy %.4f, %.2fM params, %.1f MFLOPs, %d steps in %.1fs",
        key[:12], "dev" if inputs.val is None else "val", dev_accuracy if inputs.val is None else metrics.val_accuracy, metrics.params / 1e6, metrics.flops / 1e6, result.steps, result.train_seconds,
    )
    return model, metrics
