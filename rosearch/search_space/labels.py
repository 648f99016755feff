"""The grammar of operation labels: the strings that name a node's operation in a cell.

A label fully determines an operation (family, its size parameters, its activation), so the
canonical hash of a cell can work on labels alone. Labels::

    attn_h{heads}                 multi-head self-attention
    conv_k{k}_{act}               1-D convolution, then activation
    sepconv_k{k}_{act}            depthwise-separable 1-D convolution, then activation
    dilconv_k{k}_{act}            dilated (d=2) depthwise-separable 1-D convolution, then activation
    glu_k{k}                      gated linear unit convolution
    ffn_r{ratio}_{act}            position-wise feed-forward H -> ratio*H -> H
    maxpool_k{k} / avgpool_k{k}   masked 1-D pooling (optional families)
    identity                      skip

``input`` and ``output`` label a cell's first and last node and are not operations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rosearch.choices import ACTIVATIONS, OP_FAMILIES  # config validates against them too

INPUT = "input"
OUTPUT = "output"
DILATION = 2  # of dilconv

_ACT = "|".join(ACTIVATIONS)
_PATTERNS: dict[str, re.Pattern[str]] = {
    "attn": re.compile(r"attn_h(?P<heads>\d+)"),
    "conv": re.compile(rf"conv_k(?P<kernel>\d+)_(?P<act>{_ACT})"),
    "sepconv": re.compile(rf"sepconv_k(?P<kernel>\d+)_(?P<act>{_ACT})"),
    "dilconv": re.compile(rf"dilconv_k(?P<kernel>\d+)_(?P<act>{_ACT})"),
    "glu": re.compile(r"glu_k(?P<kernel>\d+)"),
    "ffn": re.compile(rf"ffn_r(?P<ratio>\d+)_(?P<act>{_ACT})"),
    "identity": re.compile(r"identity"),
    "maxpool": re.compile(r"maxpool_k(?P<kernel>\d+)"),
    "avgpool": re.compile(r"avgpool_k(?P<kernel>\d+)"),
}


class UnknownOpError(ValueError):
    """An operation label does not follow the grammar of this module."""


class OpBuildError(ValueError):
    """An operation cannot be built with the requested hidden size or dropout."""


@dataclass(frozen=True)
class OpSpec:
    """A parsed operation label."""

    family: str
    heads: int | None = None
    kernel: int | None = None
    ratio: int | None = None
    activation: str | None = None

    @property
    def dilation(self) -> int:
        return DILATION if self.family == "dilconv" else 1


def parse_op(label: str) -> OpSpec:
    """Parse ``label``; raise :class:`UnknownOpError` naming it when it is not an operation."""
    family = label.split("_", 1)[0]
    pattern = _PATTERNS.get(family)
    match = pattern.fullmatch(label) if pattern else None
    if match is None:
        raise UnknownOpError(
            f"unknown operation label {label!r}; expected one of the forms attn_h4, conv_k3_gelu, "
            f"sepconv_k5_relu, dilconv_k3_tanh, glu_k3, ffn_r2_swish, maxpool_k3, avgpool_k3, identity"
        )
    groups = match.groupdict()
    spec = OpSpec(
        family=family,
        heads=int(groups["heads"]) if groups.get("heads") else None,
        kernel=int(groups["kernel"]) if groups.get("kernel") else None,
        ratio=int(groups["ratio"]) if groups.get("ratio") else None,
        activation=groups.get("act"),
    )
    if spec.heads is not None and spec.heads < 1:
        raise UnknownOpError(f"operation {label!r}: heads must be >= 1")
    if spec.kernel is not None and (spec.kernel < 1 or spec.kernel % 2 == 0):
        raise UnknownOpError(f"operation {label!r}: kernel size must be odd and >= 1")
    if spec.ratio is not None and spec.ratio < 1:
        raise UnknownOpError(f"operation {label!r}: ffn ratio must be >= 1")
    return spec


def check_op_fits(spec: OpSpec, hidden_size: int, label: str) -> None:
    """Raise :class:`OpBuildError` when operation ``label`` cannot be built at ``hidden_size``
    (shared by :func:`rosearch.student.ops.build_op` and the analytic costs of :mod:`cost`)."""
    if hidden_size < 1:
        raise OpBuildError(f"hidden size must be >= 1, got {hidden_size}")
    if spec.family == "attn" and hidden_size % spec.heads:
        raise OpBuildError(
            f"operation {label!r}: hidden size {hidden_size} is not divisible by {spec.heads} heads "
            "(fix: pick a hidden size that is a multiple of the head count)"
        )


def op_labels(
    families: tuple[str, ...] | list[str],
    heads: tuple[int, ...] | list[int] = (2, 4, 8),
    kernel_sizes: tuple[int, ...] | list[int] = (3, 5, 7),
    ffn_ratios: tuple[int, ...] | list[int] = (1, 2, 4),
    activations: tuple[str, ...] | list[str] = ACTIVATIONS,
) -> tuple[str, ...]:
    """Every label of the grid spanned by the arguments, in a stable order."""
    labels: list[str] = []
    for family in families:
        if family not in _PATTERNS:
            raise UnknownOpError(f"unknown operation family {family!r} (known: {', '.join(OP_FAMILIES)})")
        if family == "attn":
            labels += [f"attn_h{h}" for h in heads]
        elif family in ("conv", "sepconv", "dilconv"):
            labels += [f"{family}_k{k}_{a}" for k in kernel_sizes for a in activations]
        elif family in ("glu", "maxpool", "avgpool"):
            labels += [f"{family}_k{k}" for k in kernel_sizes]
        elif family == "ffn":
            labels += [f"ffn_r{r}_{a}" for r in ffn_ratios for a in activations]
        else:
            labels.append("identity")
    return tuple(labels)
