"""KD, hidden-state, attention and InfoNCE losses against hand-computed values, and the layer map."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rosearch.distill.losses import (
    attention_kl_loss,
    class_conditional_info_nce,
    hidden_mse_loss,
    kd_loss,
    kd_loss_terms,
    masked_mean,
    uniform_layer_map,
)


def _softmax(xs: list[float]) -> list[float]:
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def test_kd_loss_matches_hand_computation():
    s, t, y, temp, alpha = [1.0, -0.5], [2.0, 0.0], 0, 2.0, 0.3
    p_s = _softmax([x / temp for x in s])
    p_t = _softmax([x / temp for x in t])
    kl = sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    ce = -math.log(_softmax(s)[y])
    expected = alpha * temp**2 * kl + (1 - alpha) * ce

    terms = kd_loss_terms(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), alpha=alpha, temperature=temp)
    assert terms["soft"].item() == pytest.approx(temp**2 * kl, abs=1e-6)
    assert terms["hard"].item() == pytest.approx(ce, abs=1e-6)
    assert terms["total"].item() == pytest.approx(expected, abs=1e-6)
    loss = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), alpha=alpha, temperature=temp)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_kd_loss_is_batch_mean():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    y = torch.tensor([0, 1, 2, 1])
    rows = [kd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], alpha=0.6, temperature=3.0) for i in range(4)]
    batch = kd_loss(s, t, y, alpha=0.6, temperature=3.0)
    assert batch.item() == pytest.approx(torch.stack(rows).mean().item(), abs=1e-6)


def test_alpha_zero_is_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 2, generator=gen), torch.randn(5, 2, generator=gen) * 10
    y = torch.tensor([0, 1, 1, 0, 1])
    loss = kd_loss(s, t, y, alpha=0.0, temperature=4.0)
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(s, y).item(), abs=1e-6)


def test_alpha_one_with_identical_logits_is_zero():
    s = torch.tensor([[3.0, -1.0, 0.5], [0.0, 2.0, -2.0]], requires_grad=True)
    loss = kd_loss(s, s.detach().clone(), torch.tensor([2, 0]), alpha=1.0, temperature=2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    loss.backward()
    assert s.grad.abs().max().item() < 1e-6


def test_soft_term_scales_with_temperature_squared():
    """KL of logits scaled by T at temperature T equals KL at T=1, so the soft term is T² times it."""
    gen = torch.Generator().manual_seed(2)
    s, t = torch.randn(3, 2, generator=gen), torch.randn(3, 2, generator=gen)
    y = torch.tensor([0, 1, 0])
    base = kd_loss_terms(s, t, y, alpha=1.0, temperature=1.0)["soft"]
    scaled = kd_loss_terms(s * 4, t * 4, y, alpha=1.0, temperature=4.0)["soft"]
    assert base.item() > 0
    assert scaled.item() == pytest.approx(16 * base.item(), rel=1e-5)


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5, "temperature": 2.0}, {"alpha": 0.5, "temperature": 0.0}])
def test_kd_loss_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match="alpha|temperature"):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), **kwargs)


def test_kd_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(torch.zeros(2, 2), torch.zeros(2, 3), torch.tensor([0, 1]), alpha=0.5, temperature=1.0)


def _identity(width: int) -> nn.Linear:
    proj = nn.Linear(width, width, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.eye(width))
    return proj


def test_hidden_mse_zero_for_matching_features_and_ignores_padding():
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(2, 5, 4, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    teacher = student.clone()
    teacher[0, 3:] = 100.0  # garbage in padding positions only
    proj = _identity(4)
    assert hidden_mse_loss(student, teacher, mask, proj).item() == pytest.approx(0.0, abs=1e-7)

    teacher = student + 1.0  # every real element off by exactly 1 -> MSE 1
    before = hidden_mse_loss(student, teacher, mask, proj).item()
    assert before == pytest.approx(1.0, abs=1e-6)
    student_padded = student.clone()
    student_padded[0, 3:] = -50.0
    teacher[0, 3:] = 7.0
    assert hidden_mse_loss(student_padded, teacher, mask, proj).item() == pytest.approx(before, abs=1e-6)


def test_hidden_mse_projects_student_to_teacher_width():
    gen = torch.Generator().manual_seed(4)
    student = torch.randn(2, 3, 4, generator=gen)
    teacher = torch.randn(2, 3, 6, generator=gen)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    proj = nn.Linear(4, 6)
    expected = ((proj(student) - teacher) ** 2)[mask.bool()].mean()
    assert hidden_mse_loss(student, teacher, mask, proj).item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="teacher width"):
        hidden_mse_loss(student, teacher, mask, nn.Linear(4, 5))
    with pytest.raises(ValueError, match="batch, tokens"):
        hidden_mse_loss(student, teacher[:, :2], mask, proj)


@pytest.mark.parametrize(
    ("num_layers", "teacher_layers", "expected"),
    [
        (3, (1, 2, 3), [(1, 1), (2, 2), (3, 3)]),
        (2, (3, 6, 9, 12), [(1, 6), (2, 12)]),
        (4, (6, 12), [(2, 6), (4, 12)]),
        (2, (2, 4, 6), [(1, 4), (2, 6)]),
        (1, (2, 4, 6), [(1, 6)]),
        (2, (0, 6, 12), [(0, 0), (1, 6), (2, 12)]),
        (3, (12,), [(3, 12)]),
    ],
)
def test_uniform_layer_map(num_layers, teacher_layers, expected):
    pairs = uniform_layer_map(num_layers, teacher_layers)
    assert pairs == expected
    assert pairs[-1] == (num_layers, teacher_layers[-1])


@pytest.mark.parametrize(("num_layers", "teacher_layers"), [(0, (1, 2)), (2, ()), (2, (4, 2)), (2, (2, 2)), (2, (-1, 2))])
def test_uniform_layer_map_rejects_bad_input(num_layers, teacher_layers):
    with pytest.raises(ValueError):
        uniform_layer_map(num_layers, teacher_layers)


# --------------------------------------------------------------------------------------------
# Robust-KD terms: attention KL, class-conditional InfoNCE, masked mean
# --------------------------------------------------------------------------------------------

def _rows(*rows: list[float]) -> torch.Tensor:
    return torch.tensor([list(rows)])  # [1, T, T]


def test_attention_kl_of_equal_distributions_is_zero():
    probs = torch.softmax(torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    mask = torch.ones(2, 4)
    assert attention_kl_loss(probs, probs.clone(), mask).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_kl_matches_hand_computation_and_ignores_padding():
    # one sequence of 2 real tokens padded to 3; padded query rows/keys hold garbage
    teacher = _rows([0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4])
    student = _rows([0.25, 0.7, 0.05], [0.5, 0.4, 0.1], [0.9, 0.05, 0.05])
    mask = torch.tensor([[1, 1, 0]])
    # the student's real-key mass is not renormalised (it is its distribution); the teacher's is
    row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.7)
    row1 = 1.0 * math.log(1.0 / 0.5)
    assert attention_kl_loss(student, teacher, mask).item() == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_attention_kl_renormalises_float16_teacher_rows():
    teacher = _rows([0.499, 0.499], [0.2, 0.79])  # rows sum to 0.998 / 0.99 (float16 storage)
    exact = teacher / teacher.sum(-1, keepdim=True)
    mask = torch.ones(1, 2)
    assert attention_kl_loss(exact, teacher, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_kl_rejects_shapes():
    with pytest.raises(ValueError, match="batch, T, T"):
        attention_kl_loss(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3), torch.ones(1, 2))


def test_info_nce_with_identical_orthonormal_features():
    eye = torch.eye(3)  # three examples of one class, features e_0, e_1, e_2 on both sides
    tau = 0.5
    loss = class_conditional_info_nce(eye, eye.clone(), torch.tensor([1, 1, 1]), temperature=tau)
    # positive cos 1, two negatives cos 0: -log(e^{1/τ} / (e^{1/τ} + 2))
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / tau)), abs=1e-6)


def test_info_nce_contrasts_only_within_a_class():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 1])
    tau = 1.0
    # anchor 0 (class 0): positive t0 (cos 1), negative t2 (cos 0); anchor 2: positive t2 (cos 0), negative t0 (cos 1)
    good = -math.log(math.e / (math.e + 1))
    bad = -math.log(1 / (1 + math.e))
    expected = (good + good + bad + bad) / 4  # class 1 mirrors class 0
    loss = class_conditional_info_nce(z, t, labels, temperature=tau)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # examples of the other class never act as negatives: making them identical changes nothing
    t_other = t.clone()
    t_other[1] = t_other[0]
    labels_split = torch.tensor([0, 1, 2, 3])  # every anchor alone in its class
    assert class_conditional_info_nce(z, t_other, labels_split, temperature=tau).item() == 0.0


def test_info_nce_gradient_pulls_the_positive_closer():
    z = torch.tensor([[0.6, 0.8], [0.8, 0.6]], requires_grad=True)  # each nearer the other's positive
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = class_conditional_info_nce(z, t, torch.tensor([0, 0]), temperature=1.0)
    assert loss.item() > math.log(2)  # worse than chance
    loss.backward()
    with torch.no_grad():
        after = class_conditional_info_nce(z - 0.5 * z.grad, t, torch.tensor([0, 0]), temperature=1.0)
    assert after.item() < loss.item() - 0.01


def test_info_nce_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        class_conditional_info_nce(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), temperature=0.0)
    with pytest.raises(ValueError, match="project the student features"):
        class_conditional_info_nce(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]), temperature=1.0)


def test_masked_mean_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert masked_mean(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]
