"""What an operation family is: its label grammar, its grid of labels, its analytic cost and how it is built.

A family is one :class:`OpFamily` in its own module of this package; :mod:`rosearch.search_space.labels`
parses with its grammar, :mod:`rosearch.search_space.cost` counts with its formulas, and
:func:`rosearch.student.ops.build_op` builds with its ``build``. The search space stays free of
torch: ``build`` gets the network's building blocks (:class:`OpBlocks`) from the student, which
owns them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from rosearch.choices import ACTIVATIONS

ACT = "|".join(ACTIVATIONS)  # the activation group of a label pattern


@dataclass(frozen=True)
class OpSpec:
    """A parsed operation label."""

    family: str
    heads: int | None = None
    kernel: int | None = None
    ratio: int | None = None
    activation: str | None = None
    dilation: int = 1


@dataclass(frozen=True)
class LabelGrid:
    """The size parameters a search space offers; a family spans its labels over the ones it uses."""

    heads: Sequence[int]
    kernel_sizes: Sequence[int]
    ffn_ratios: Sequence[int]
    activations: Sequence[str]


class OpBlocks(Protocol):
    """The network's building blocks (``torch.nn.Module`` classes of :mod:`rosearch.student.ops`)."""

    def activation(self, spec: OpSpec) -> Any: ...
    def attention(self, hidden_size: int, heads: int, dropout: float) -> Any: ...
    def conv(self, hidden_size: int, kernel: int, activation: Any) -> Any: ...
    def sepconv(self, hidden_size: int, kernel: int, activation: Any, dilation: int = 1) -> Any: ...
    def glu(self, hidden_size: int, kernel: int) -> Any: ...
    def feed_forward(self, hidden_size: int, ratio: int, activation: Any, dropout: float) -> Any: ...
    def maxpool(self, kernel: int) -> Any: ...
    def avgpool(self, kernel: int) -> Any: ...
    def identity(self) -> Any: ...


@dataclass(frozen=True)
class OpFamily:
    """One operation family, whole.

    ``pattern`` is the label grammar (named groups ``heads``, ``kernel``, ``ratio``, ``act``);
    ``labels`` spans a :class:`LabelGrid`; ``params(spec, H)`` and ``flops(spec, H, T)`` are
    exactly what the built module has and does (2 x multiply-accumulates, see
    :mod:`rosearch.search_space.cost`); ``build(spec, H, dropout, blocks)`` makes the module;
    ``example`` is a label shown in error messages; ``stacked`` says how the supernet slices a
    parameter made of equal blocks.
    """

    name: str
    pattern: str
    example: str
    labels: Callable[[LabelGrid], list[str]]
    params: Callable[[OpSpec, int], int]
    flops: Callable[[OpSpec, int, int], int]
    build: Callable[[OpSpec, int, float, OpBlocks], Any]
    dilation: int = 1
    # parameters whose first axis stacks equal blocks (attention's q|k|v), as (name prefix, block count):
    # a narrower student's weight is the leading rows of each block ("" matches every parameter)
    stacked: tuple[tuple[str, int], ...] = ()
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.pattern))

    def blocks_of(self, parameter: str) -> int:
        """How many equal blocks the first axis of the module's ``parameter`` (e.g. ``qkv.weight``) stacks."""
        return next((count for prefix, count in self.stacked if parameter.startswith(prefix)), 1)


def pooling_family(name: str, build: Callable[[OpSpec, int, float, OpBlocks], Any]) -> OpFamily:
    """A pooling family ``{name}_k{k}``: a window over time, no parameters and no multiply-accumulates."""
    return OpFamily(
        name=name,
        pattern=rf"{name}_k(?P<kernel>\d+)",
        example=f"{name}_k3",
        labels=lambda g: [f"{name}_k{k}" for k in g.kernel_sizes],
        params=lambda s, H: 0,
        flops=lambda s, H, T: 0,
        build=build,
    )
