"""The operations a cell node can apply, built from their labels (see :mod:`rosearch.search_space.labels`).

Every operation maps ``x: [B, T, H]`` and ``mask: [B, T]`` (True/1 = real token) to
``[B, T, H]`` and respects the padding mask, so that a prediction never depends on how much
padding a batch happened to get (dynamic padding makes that amount vary from batch to batch):

* convolutions and pooling zero (or ``-inf``) the padded positions of their input before
  sliding their window, with 'same' padding, so a real position sees exactly what it would
  see at the end of an unpadded sequence;
* attention masks padded keys;
* every operation zeroes its output at padded positions.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from rosearch.search_space.families import FAMILIES
from rosearch.search_space.labels import OpBuildError, OpSpec, check_op_fits, parse_op


ACTIVATION_MODULES: Mapping[str, type[nn.Module]] = MappingProxyType(
    {"gelu": nn.GELU, "relu": nn.ReLU, "swish": nn.SiLU, "tanh": nn.Tanh}
)


def _real(mask: Tensor) -> Tensor:
    """``mask`` as booleans of shape [B, T, 1], ready to broadcast over the hidden axis."""
    return mask.bool().unsqueeze(-1)


def _zero_pads(x: Tensor, real: Tensor) -> Tensor:
    """Zero the padded positions (``masked_fill`` rather than a product, so NaN/inf garbage goes too)."""
    return x.masked_fill(~real, 0.0)


def _activation(spec: OpSpec) -> nn.Module:
    if spec.activation not in ACTIVATION_MODULES:
        raise OpBuildError(f"operation {spec.family!r} needs an activation, one of {sorted(ACTIVATION_MODULES)}")
    return ACTIVATION_MODULES[spec.activation]()


class SelfAttention(nn.Module):
    """Multi-head self-attention over the real tokens (padded keys are masked out)."""

    def __init__(self, hidden_size: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, T, H = x.shape
        real = _real(mask)  # [B, T, 1]
        x = _zero_pads(x, real)  # garbage in pads must not reach the values, even as NaN
        q, k, v = self.qkv(x).split(H, dim=2)  # 3 x [B, T, H]
        q, k, v = (t.view(B, T, self.heads, H // self.heads).transpose(1, 2) for t in (q, k, v))  # [B, nh, T, hd]
        keys = real.squeeze(-1)  # [B, T]
        # a sequence without any real token would give all-masked rows (NaN); let it attend
        # everywhere instead: its output is zeroed below anyway
        keys = keys | ~keys.any(dim=1, keepdim=True)
        attn_mask = keys[:, None, None, :]  # [B, 1, 1, T]: every query sees the real keys
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # [B, nh, T, hd]
        y = y.transpose(1, 2).reshape(B, T, H)  # [B, T, H]
        return _zero_pads(self.proj(y), real)


class Conv(nn.Module):
    """A standard 1-D convolution over time ('same' padding), then an activation."""

    def __init__(self, hidden_size: int, kernel: int, activation: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv1d(hidden_size, hidden_size, kernel, padding=kernel // 2)
        self.act = activation

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        real = _real(mask)  # [B, T, 1]
        y = self.conv(_zero_pads(x, real).transpose(1, 2))  # [B, H, T]
        return _zero_pads(self.act(y.transpose(1, 2)), real)  # [B, T, H]


class SepConv(nn.Module):
    """A depthwise-separable 1-D convolution (depthwise k, optionally dilated, then pointwise 1x1),
    then an activation: the receptive field of a conv at a fraction of its parameters."""

    def __init__(self, hidden_size: int, kernel: int, activation: nn.Module, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(
            hidden_size, hidden_size, kernel, padding=dilation * (kernel // 2), dilation=dilation,
            groups=hidden_size, bias=False,
        )
        self.pointwise = nn.Conv1d(hidden_size, hidden_size, 1)
        self.act = activation

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        real = _real(mask)  # [B, T, 1]
        y = self.pointwise(self.depthwise(_zero_pads(x, real).transpose(1, 2)))  # [B, H, T]
        return _zero_pads(self.act(y.transpose(1, 2)), real)  # [B, T, H]


class GLUConv(nn.Module):
    """A gated linear unit: a 1-D convolution to 2H channels, one half gating the other."""

    def __init__(self, hidden_size: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(hidden_size, 2 * hidden_size, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        real = _real(mask)  # [B, T, 1]
        y = self.conv(_zero_pads(x, real).transpose(1, 2))  # [B, 2H, T]
        y = F.glu(y, dim=1)  # [B, H, T]
        return _zero_pads(y.transpose(1, 2), real)  # [B, T, H]


class FeedForward(nn.Module):
    """The position-wise feed-forward block H -> ratio*H -> H of a transformer layer."""

    def __init__(self, hidden_size: int, ratio: int, activation: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden_size, ratio * hidden_size)
        self.act = activation
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(ratio * hidden_size, hidden_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        real = _real(mask)  # [B, T, 1]
        y = self.dropout(self.act(self.fc(_zero_pads(x, real))))  # [B, T, rH]
        return _zero_pads(self.proj(y), real)  # [B, T, H]


class MaxPool(nn.Module):
    """Max over a window of real tokens ('same' padding; padded tokens never win)."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        real = _real(mask)  # [B, T, 1]
        y = x.masked_fill(~real, -math.inf).transpose(1, 2)  # [B, H, T]
        # the window of a real position always holds that position, so its max is finite; the 2-D
        # pool over a [B, H, 1, T] view computes exactly max_pool1d, and unlike max_pool1d it keeps
        # the sequence length symbolic when torch.export traces it (ONNX export, dynamic axes)
        y = F.max_pool2d(y.unsqueeze(2), (1, self.kernel), stride=1, padding=(0, self.kernel // 2)).squeeze(2)  # [B, H, T]
        return _zero_pads(y.transpose(1, 2), real)  # [B, T, H]


class AvgPool(nn.Module):
    """Mean over the real tokens of a window ('same' padding)."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        real = _real(mask)  # [B, T, 1]
        total = self._window_mean(_zero_pads(x, real))  # [B, H, T]: window sum / kernel
        count = self._window_mean(real.to(x.dtype))  # [B, 1, T]: real tokens in window / kernel (> 0 at real ones)
        y = total / count.clamp_min(1.0 / (2 * self.kernel))  # [B, H, T]
        return _zero_pads(y.transpose(1, 2), real)  # [B, T, H]

    def _window_mean(self, t: Tensor) -> Tensor:
        """[B, T, C] -> [B, C, T]: mean over each 'same'-padded window, pads counted as zeros."""
        return F.avg_pool1d(t.transpose(1, 2), self.kernel, stride=1, padding=self.kernel // 2)


class Identity(nn.Module):
    """The skip operation (pads zeroed like every other operation)."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return _zero_pads(x, _real(mask))


class _Blocks:
    """The blocks an operation family builds from (:class:`~rosearch.search_space.families.OpBlocks`)."""

    activation = staticmethod(_activation)
    attention = SelfAttention
    conv = Conv
    sepconv = SepConv
    glu = GLUConv
    feed_forward = FeedForward
    maxpool = MaxPool
    avgpool = AvgPool
    identity = Identity


def build_op(label: str, hidden_size: int, dropout: float = 0.0) -> nn.Module:
    """The module of operation ``label`` at width ``hidden_size``.

    Raises :class:`~rosearch.search_space.labels.UnknownOpError` for a label outside the
    grammar and :class:`~rosearch.search_space.labels.OpBuildError` when the label does not fit ``hidden_size``.
    """
    spec = parse_op(label)
    check_op_fits(spec, hidden_size, label)
    if not 0.0 <= dropout < 1.0:
        raise OpBuildError(f"operation {label!r}: dropout must be in [0, 1), got {dropout}")
    return FAMILIES[spec.family].build(spec, hidden_size, dropout, _Blocks)
