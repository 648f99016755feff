"""A gated linear unit convolution: ``glu_k{k}``."""

from rosearch.search_space.families.spec import OpFamily

FAMILY = OpFamily(
    name="glu",
    pattern=r"glu_k(?P<kernel>\d+)",
    example="glu_k3",
    labels=lambda g: [f"glu_k{k}" for k in g.kernel_sizes],
    params=lambda s, H: 2 * H * H * s.kernel + 2 * H,  # one convolution to 2H channels
    flops=lambda s, H, T: 2 * T * 2 * H * H * s.kernel,
    build=lambda s, H, p, blocks: blocks.glu(H, s.kernel),
    stacked=(("", 2),),  # value | gate channels
)
