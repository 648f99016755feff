"""Old home of the cell operations, kept as an alias: they moved to :mod:`rosearch.student.ops`
(see :mod:`rosearch.search_space.model`). New code imports :mod:`rosearch.student.ops`."""

from rosearch.student.ops import (
    ACTIVATION_MODULES,
    OP_BUILDERS,
    AvgPool,
    Conv,
    FeedForward,
    GLUConv,
    Identity,
    MaxPool,
    OpBuildError,
    SelfAttention,
    SepConv,
    build_op,
    check_op_fits,
)

__all__ = [
    "ACTIVATION_MODULES", "OP_BUILDERS", "AvgPool", "Conv", "FeedForward", "GLUConv", "Identity", "MaxPool",
    "OpBuildError", "SelfAttention", "SepConv", "build_op", "check_op_fits",
]
