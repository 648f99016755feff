"""The skip operation: ``identity``."""

from rosearch.search_space.families.spec import OpFamily

FAMILY = OpFamily(
    name="identity",
    pattern=r"identity",
    example="identity",
    labels=lambda g: ["identity"],
    params=lambda s, H: 0,
    flops=lambda s, H, T: 0,
    build=lambda s, H, p, blocks: blocks.identity(),
)
