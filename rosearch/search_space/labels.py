"""The grammar of operation labels: the strings that name a node's operation in a cell.

A label fully determines an operation (family, its size parameters, its activation), so the
canonical hash of a cell can work on labels alone. Each family's grammar lives with the rest of
the family in :mod:`rosearch.search_space.families`. Labels::

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

from rosearch.choices import ACTIVATIONS, OP_FAMILIES  # config validates against them too
from rosearch.search_space.families import FAMILIES, LabelGrid, OpSpec

INPUT = "input"
OUTPUT = "output"

__all__ = ["ACTIVATIONS", "INPUT", "OP_FAMILIES", "OUTPUT", "OpBuildError", "OpSpec", "UnknownOpError",
           "check_op_fits", "op_labels", "parse_op"]


class UnknownOpError(ValueError):
    """An operation label does not follow the grammar of this module."""


class OpBuildError(ValueError):
    """An operation cannot be built with the requested hidden size or dropout."""


def parse_op(label: str) -> OpSpec:
    """Parse ``label``; raise :class:`UnknownOpError` naming it when it is not an operation."""
    family = FAMILIES.get(label.split("_", 1)[0])
    match = family.compiled.fullmatch(label) if family else None
    if match is None:
        raise UnknownOpError(
            f"unknown operation label {label!r}; expected one of the forms "
            f"{', '.join(f.example for f in FAMILIES.values())}"
        )
    groups = match.groupdict()
    spec = OpSpec(
        family=family.name,
        heads=int(groups["heads"]) if groups.get("heads") else None,
        kernel=int(groups["kernel"]) if groups.get("kernel") else None,
        ratio=int(groups["ratio"]) if groups.get("ratio") else None,
        activation=groups.get("act"),
        dilation=family.dilation,
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
    if spec.heads is not None and hidden_size % spec.heads:
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
    grid = LabelGrid(heads=heads, kernel_sizes=kernel_sizes, ffn_ratios=ffn_ratios, activations=activations)
    labels: list[str] = []
    for family in families:
        if family not in FAMILIES:
            raise UnknownOpError(f"unknown operation family {family!r} (known: {', '.join(OP_FAMILIES)})")
        labels += FAMILIES[family].labels(grid)
    return tuple(labels)
