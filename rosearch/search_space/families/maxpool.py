"""Masked 1-D max pooling ('same' padding): ``maxpool_k{k}``. No multiply-accumulates, no parameters."""

from rosearch.search_space.families.spec import OpFamily

FAMILY = OpFamily(
    name="maxpool",
    pattern=r"maxpool_k(?P<kernel>\d+)",
    example="maxpool_k3",
    labels=lambda g: [f"maxpool_k{k}" for k in g.kernel_sizes],
    params=lambda s, H: 0,
    flops=lambda s, H, T: 0,
    build=lambda s, H, p, blocks: blocks.maxpool(s.kernel),
)
