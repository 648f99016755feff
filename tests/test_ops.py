"""Operations: shapes, padding invariance and errors, for every label of the grammar."""

from __future__ import annotations

import pytest
import torch

from rosearch.search_space.labels import OP_FAMILIES, UnknownOpError, op_labels
from rosearch.student.ops import OpBuildError, build_op

H = 32
ALL_LABELS = op_labels(OP_FAMILIES)  # every family, heads 2/4/8, kernels 3/5/7, ratios 1/2/4, all activations


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences of lengths 9 and 6 padded to T=9."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 9, H, generator=g)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    return x, mask


def test_grammar_covers_every_family() -> None:
    families = {label.split("_")[0] for label in ALL_LABELS}
    assert families == set(OP_FAMILIES)


@pytest.mark.parametrize("label", ALL_LABELS)
def test_shape_and_padding_invariance(label: str) -> None:
    torch.manual_seed(0)
    op = build_op(label, H).eval()
    x, mask = _batch(1)
    with torch.no_grad():
        y = op(x, mask)
        # 5 more pad positions, and garbage (huge values, NaN) in every pad position
        g = torch.Generator().manual_seed(2)
        x_pad = torch.cat([x, 100 * torch.randn(2, 5, H, generator=g)], dim=1)
        x_pad[1, 6:] = float("nan")
        mask_pad = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
        y_pad = op(x_pad, mask_pad)
    assert y.shape == (2, 9, H) and y_pad.shape == (2, 14, H)
    torch.testing.assert_close(y_pad[:, :9][mask], y[mask], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(y_pad).all()
    assert (y_pad[~mask_pad] == 0).all(), "outputs at pad positions must be zero"


@pytest.mark.parametrize("label", ["conv_k5_relu", "sepconv_k3_gelu", "dilconv_k3_tanh", "glu_k3", "maxpool_k3", "avgpool_k5"])
def test_window_ops_mix_neighbouring_tokens(label: str) -> None:
    """A window op really looks at neighbours: changing token 0 changes token 1's output."""
    torch.manual_seed(0)
    op = build_op(label, H).eval()
    x, mask = _batch(3)
    x2 = x.clone()
    x2[:, 0] += 5.0
    if label.startswith("dilconv"):  # dilation 2: token 0 reaches token 2, not token 1
        index = 2
    else:
        index = 1
    assert not torch.allclose(op(x, mask)[:, index], op(x2, mask)[:, index])


def test_attention_mixes_all_real_tokens_and_handles_empty_sequence() -> None:
    torch.manual_seed(0)
    op = build_op("attn_h4", H).eval()
    x, mask = _batch(4)
    x2 = x.clone()
    x2[0, 8] += 5.0
    assert not torch.allclose(op(x, mask)[0, 0], op(x2, mask)[0, 0])
    empty = torch.zeros(2, 9, dtype=torch.bool)
    y = op(x, empty)
    assert torch.isfinite(y).all() and (y == 0).all()


def test_avgpool_is_mean_of_real_window() -> None:
    x = torch.arange(4, dtype=torch.float32).view(1, 4, 1).expand(1, 4, 2).contiguous()
    mask = torch.tensor([[True, True, True, False]])
    y = build_op("avgpool_k3", 2)(x, mask)
    torch.testing.assert_close(y[0, :, 0], torch.tensor([0.5, 1.0, 1.5, 0.0]))


def test_maxpool_ignores_pads() -> None:
    x = torch.tensor([[[1.0], [2.0], [9.0]]])
    mask = torch.tensor([[True, True, False]])
    y = build_op("maxpool_k3", 1)(x, mask)
    torch.testing.assert_close(y[0, :, 0], torch.tensor([2.0, 2.0, 0.0]))


def test_ffn_dropout_active_only_in_training() -> None:
    torch.manual_seed(0)
    op = build_op("ffn_r2_relu", H, dropout=0.5)
    x, mask = _batch(5)
    op.train()
    assert not torch.allclose(op(x, mask), op(x, mask))
    op.eval()
    torch.testing.assert_close(op(x, mask), op(x, mask))


def test_bad_labels_and_sizes_raise() -> None:
    with pytest.raises(UnknownOpError, match="lstm"):
        build_op("lstm", H)
    with pytest.raises(OpBuildError, match="not divisible by 8 heads"):
        build_op("attn_h8", 36)
    with pytest.raises(OpBuildError, match="dropout"):
        build_op("identity", H, dropout=1.5)
