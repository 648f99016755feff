"""Distillation objectives: soft-label KD (Hinton et al., 2015) and hidden-state MSE (TinyBERT).

Pure functions of tensors, so the trainer, the robust variants and the tests share one exact
definition of each loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def kd_loss_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    temperature: float,
) -> dict[str, Tensor]:
    """The KD loss and its two parts, as scalar tensors ``soft``, ``hard`` and ``total``.

    With ``p_t = softmax(teacher_logits / T)`` and ``p_s = softmax(student_logits / T)``::

        soft  = T² · KL(p_t ‖ p_s) = T² · (1/B) Σ_b Σ_c p_t[b,c] · (log p_t[b,c] − log p_s[b,c])
        hard  = CE(student_logits, labels)            (mean over the batch, temperature 1)
        total = α · soft + (1 − α) · hard

    The T² factor keeps the soft term's gradient scale independent of T (Hinton et al.), so
    ``alpha`` means the same thing at every temperature.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"kd_loss alpha must be in [0, 1], got {alpha!r}")
    if temperature <= 0:
        raise ValueError(f"kd_loss temperature must be > 0, got {temperature!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must have the same shape [batch, num_labels] (fix: check the teacher cache matches the task)"
        )
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # [B, C]
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # [B, C]
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2
    hard = F.cross_entropy(student_logits.float(), labels)
    return {"soft": soft, "hard": hard, "total": alpha * soft + (1.0 - alpha) * hard}


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    temperature: float,
) -> Tensor:
    """``α·T²·KL(p_t ‖ p_s) + (1−α)·CE(student_logits, labels)``; see :func:`kd_loss_terms`."""
    return kd_loss_terms(student_logits, teacher_logits, labels, alpha=alpha, temperature=temperature)["total"]


def hidden_mse_loss(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor, projection: nn.Module) -> Tensor:
    """Mean squared error between projected student and teacher hidden states on real tokens.

    ``projection`` maps the student width Hs to the teacher width Ht (TinyBERT's learned W_h).
    Padding positions (``mask == 0``) contribute nothing, so the loss does not depend on batch
    composition or on what the padding holds; the mean is over real tokens × Ht.
    """
    if student_hidden.shape[:2] != teacher_hidden.shape[:2] or mask.shape != student_hidden.shape[:2]:
        raise ValueError(
            f"hidden states must share [batch, tokens]: student {tuple(student_hidden.shape)}, "
            f"teacher {tuple(teacher_hidden.shape)}, mask {tuple(mask.shape)} "
            "(fix: pad teacher hidden states to the batch's longest sequence, as collate does)"
        )
    projected = projection(student_hidden)  # [B, T, Ht]
    if projected.shape != teacher_hidden.shape:
        raise ValueError(
            f"projection maps student hidden states to {tuple(projected.shape)}, teacher has "
            f"{tuple(teacher_hidden.shape)} (fix: the projection's output size must be the teacher width)"
        )
    weights = mask.to(projected.dtype).unsqueeze(-1)  # [B, T, 1]
    sq = (projected - teacher_hidden.to(projected.dtype)).pow(2) * weights  # [B, T, Ht]
    count = weights.sum() * projected.shape[-1]
    return sq.sum() / count.clamp_min(1.0)


def uniform_layer_map(num_student_layers: int, teacher_layers: tuple[int, ...]) -> list[tuple[int, int]]:
    """Pair student hidden-state indices with cached teacher layers, spread evenly by depth.

    Indices follow HF ``hidden_states``: 0 is the embedding output, ``i`` the output of layer i.
    If the teacher layers include 0, embeddings pair with embeddings ``(0, 0)``. The remaining
    L student layers (1..L) and K teacher layers pair ``m = min(L, K)`` times: pair ``j`` (1..m)
    takes the student layer and the teacher layer at relative depth ``j / m``, rounded to the
    nearest (halves up). So the last student layer always meets the last teacher layer, and with
    L = K the map is one-to-one; e.g. L=2 with teacher (3, 6, 9, 12) gives [(1, 6), (2, 12)], and
    L=4 with teacher (6, 12) gives [(2, 6), (4, 12)].
    """
    if num_student_layers < 1:
        raise ValueError(f"num_student_layers must be >= 1, got {num_student_layers}")
    layers = tuple(teacher_layers)
    if not layers:
        raise ValueError("teacher_layers is empty (fix: cache teacher hidden layers, teacher.cache_hidden_layers)")
    if any(layer < 0 for layer in layers) or list(layers) != sorted(set(layers)):
        raise ValueError(f"teacher_layers must be distinct, increasing and >= 0, got {layers}")
    pairs: list[tuple[int, int]] = []
    if layers[0] == 0:
        pairs.append((0, 0))
        layers = layers[1:]
    big_l, big_k = num_student_layers, len(layers)
    m = min(big_l, big_k)
    for j in range(1, m + 1):
        student = (2 * j * big_l + m) // (2 * m)  # round(j * L / m), halves up
        teacher = (2 * j * big_k + m) // (2 * m)  # round(j * K / m), halves up; 1-based position
        pairs.append((student, layers[teacher - 1]))
    return pairs
