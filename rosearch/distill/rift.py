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

from torch import Tensor, nn

from rosearch.distill.losses import class_conditional_info_nce, masked_mean

if TYPE_CHECKING:
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
