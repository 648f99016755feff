"""Masked 1-D mean pooling over real tokens ('same' padding): ``avgpool_k{k}``. No multiply-accumulates, no parameters."""

from rosearch.search_space.families.spec import OpFamily

FAMILY = OpFamily(
    name="avgpool",
    pattern=r"avgpool_k(?P<kernel>\d+)",
    example="avgpool_k3",
    labels=lambda g: [f"avgpool_k{k}" for k in g.kernel_sizes],
    params=lambda s, H: 0,
    flops=lambda s, H, T: 0,
    build=lambda s, H, p, blocks: blocks.avgpool(s.kernel),
)
