"""RIFT-style objective (Dong et al., "How Should Pre-Trained Language Models Be Fine-Tuned
Towards Adversarial Robustness?", NeurIPS 2021), adapted to distillation.

RIFT keeps a fine-tuned model's features informative of the pre-trained model's features,
conditioned on the label, so fine-tuning cannot forget the robust, generic information the
pre-trained features hold. Here the reference is the teacher: the student's pooled feature
(mean of its last hidden state over real tokens) passes through a learned linear projection to
the teacher width and is contrasted, within each class of the batch, with the teacher's cached
mean-pooled last hidden state (:func:`~rosearch.distill.losses.class_conditional_info_nce`).
The projection lives only inside one distillation run; RIFT's adversarial-example half is the
``adv_finetune`` method.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from rosearch.distill.losses import class_conditional_info_nce, masked_mean
from rosearch.distill.protocol import DistillMethod, MethodRun, StudentContext, TeacherRequest, forward

if TYPE_CHECKING:
    from rosearch.config import Config
    from rosearch.distill.teacher_cache import TeacherOutputs

logger = logging.getLogger(__name__)


class RiftTerm:
    """The InfoNCE term and its Hs -> Ht projection (trained with the student, then dropped)."""

    def __init__(self, student_width: int, teacher: "TeacherOutputs", temperature: float, device) -> None:
        if teacher.features is None:
            raise ValueError(
                "rift needs cached teacher features, but the teacher outputs hold none (fix: compute them with "
                "rosearch.distill.methods.teacher_cache_request(config, ...).kwargs(), which asks for features=True)"
            )
        self.temperature = temperature
        self.projection = nn.Linear(student_width, teacher.hidden_size).to(device)
        logger.info("rift: InfoNCE between student features (%d -> %d) and cached teacher features, tau %g",
                    student_width, teacher.hidden_size, temperature)

    def loss(self, last_hidden: Tensor, mask: Tensor, teacher_features: Tensor, labels: Tensor) -> Tensor:
        """``last_hidden`` [B, T, Hs], ``mask`` [B, T], ``teacher_features`` [B, Ht], ``labels`` [B]."""
        student = self.projection(masked_mean(last_hidden, mask))  # [B, Ht]
        return class_conditional_info_nce(student, teacher_features, labels, temperature=self.temperature)


def _student_width(student: nn.Module, batch: dict[str, Tensor]) -> int:
    """Width of the student's last hidden state, from one no-grad eval-mode forward."""
    student.eval()
    with torch.no_grad():
        states = forward(student, batch, hidden=True).hidden_states
    student.train()
    if states is None:
        raise ValueError(f"student {type(student).__name__} returned no hidden_states; rift needs them")
    return int(states[-1].shape[-1])


class RiftRun(MethodRun):
    """``rift.weight`` x the InfoNCE term on each clean batch; its projection trains with the student."""

    needs_hidden = True

    def __init__(self, ctx: StudentContext) -> None:
        self.weight = ctx.cfg.rift.weight
        self.teacher = ctx.teacher
        self.device = ctx.device
        self.term = RiftTerm(_student_width(ctx.student, ctx.first_batch), ctx.teacher, ctx.cfg.rift.temperature,
                             ctx.device)
        self.modules = (self.term.projection,)

    def loss(self, student: nn.Module, batch: dict[str, Tensor], out: object, indices: list[int], step: int) -> Tensor:
        features = self.teacher.features_batch(indices, device=self.device)  # [B, Ht]
        return self.weight * self.term.loss(out.hidden_states[-1], batch["attention_mask"], features, batch["labels"])


class Rift(DistillMethod):
    """The rift method (:class:`~rosearch.distill.protocol.DistillMethod`)."""

    name = "rift"
    description = ("class-conditional InfoNCE keeping projected student features informative of cached teacher "
                   "features within each class (Dong et al., RIFT, NeurIPS 2021)")

    def teacher_request(self, config: "Config", num_teacher_layers: int) -> TeacherRequest:
        return TeacherRequest(features=True)

    def start(self, ctx: StudentContext) -> RiftRun:
        return RiftRun(ctx)


RIFT = Rift()
