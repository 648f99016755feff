"""Distillation objectives: soft-label KD (Hinton et al., 2015), hidden-state MSE (TinyBERT),
attention-distribution KL (TinyBERT / MiniLM) and class-conditional InfoNCE (RIFT).

Pure functions of tensors, so the trainer, the robust variants and the tests share one exact
definition of each loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the candidate's weights are not usable."""


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


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """[B, T, H] -> [B, H]: the mean over real tokens (``mask == 1``), as the teacher features are pooled."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # [B, T, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def attention_kl_loss(student_probs: Tensor, teacher_probs: Tensor, mask: Tensor) -> Tensor:
    """Mean over real query tokens of KL(teacher row ‖ student row), rows taken over real keys.

    Both inputs are attention probabilities [B, T, T] (query x key), averaged over heads so that
    a student with 2 heads can match a teacher with 12. Teacher rows are renormalised over the
    real keys (the cache stores them in float16), padded queries and keys count nothing, and
    ``0 · log 0 = 0``; so equal distributions give exactly 0 and the loss never depends on padding.
    """
    if student_probs.shape != teacher_probs.shape or student_probs.shape[:2] != mask.shape or (
        student_probs.dim() != 3 or student_probs.shape[1] != student_probs.shape[2]
    ):
        raise ValueError(
            f"attention probabilities must both be [batch, T, T] with mask [batch, T]: student "
            f"{tuple(student_probs.shape)}, teacher {tuple(teacher_probs.shape)}, mask {tuple(mask.shape)}"
        )
    real = mask.bool()  # [B, T]
    pair = (real.unsqueeze(2) & real.unsqueeze(1)).to(torch.float32)  # [B, T(query), T(key)]
    t = teacher_probs.float() * pair
    t = t / t.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # rows of padded queries stay all-zero
    log_s = student_probs.float().clamp_min(1e-12).log()  # [B, T, T]
    kl = (torch.xlogy(t, t) - t * log_s) * pair  # [B, T, T]
    return kl.sum() / real.sum().clamp_min(1).to(kl.dtype)


def class_conditional_info_nce(
    student_features: Tensor, teacher_features: Tensor, labels: Tensor, *, temperature: float
) -> Tensor:
    """RIFT-style InfoNCE that keeps student features informative of the teacher's *within* a class.

    For anchor i, the positive is the teacher feature of the same example and the negatives are
    the teacher features of the other batch examples with label ``labels[i]``; similarities are
    cosines divided by ``temperature``::

        loss_i = -log( exp(cos(z_i, t_i)/τ) / Σ_{j: y_j = y_i} exp(cos(z_i, t_j)/τ) )

    Contrasting only inside a class means the term cannot be lowered by encoding the label alone
    (the CE/KD terms already do that); it rewards keeping the teacher's finer distinctions. The
    mean is over anchors whose class has at least two members in the batch; with none, 0.
    """
    if temperature <= 0:
        raise ValueError(f"class_conditional_info_nce temperature must be > 0, got {temperature!r}")
    if student_features.dim() != 2 or student_features.shape != teacher_features.shape or (
        labels.shape != student_features.shape[:1]
    ):
        raise ValueError(
            f"features must both be [batch, D] with labels [batch]: student {tuple(student_features.shape)}, "
            f"teacher {tuple(teacher_features.shape)}, labels {tuple(labels.shape)} "
            "(fix: project the student features to the teacher width first)"
        )
    z = F.normalize(student_features.float(), dim=-1)  # [B, D]
    t = F.normalize(teacher_features.float(), dim=-1)  # [B, D]
    same = labels.unsqueeze(1) == labels.unsqueeze(0)  # [B, B]
    logits = (z @ t.T / temperature).masked_fill(~same, float("-inf"))  # [B, B]
    log_prob = logits.diagonal() - torch.logsumexp(logits, dim=1)  # [B]
    anchors = (same.sum(dim=1) > 1).to(log_prob.dtype)  # [B]; a lone anchor has log_prob 0 anyway
    return -(log_prob * anchors).sum() / anchors.sum().clamp_min(1.0)  # no host sync
