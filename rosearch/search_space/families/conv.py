"""A 1-D convolution over time, then an activation: ``conv_k{k}_{act}``."""

from rosearch.search_space.families.spec import ACT, OpFamily

FAMILY = OpFamily(
    name="conv",
    pattern=rf"conv_k(?P<kernel>\d+)_(?P<act>{ACT})",
    example="conv_k3_gelu",
    labels=lambda g: [f"conv_k{k}_{a}" for k in g.kernel_sizes for a in g.activations],
    params=lambda s, H: H * H * s.kernel + H,
    flops=lambda s, H, T: 2 * T * H * H * s.kernel,
    build=lambda s, H, p, blocks: blocks.conv(H, s.kernel, blocks.activation(s)),
)
