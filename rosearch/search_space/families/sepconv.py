"""A depthwise-separable 1-D convolution, then an activation: ``sepconv_k{k}_{act}``."""

from rosearch.search_space.families.spec import ACT, OpFamily

FAMILY = OpFamily(
    name="sepconv",
    pattern=rf"sepconv_k(?P<kernel>\d+)_(?P<act>{ACT})",
    example="sepconv_k5_relu",
    labels=lambda g: [f"sepconv_k{k}_{a}" for k in g.kernel_sizes for a in g.activations],
    params=lambda s, H: H * s.kernel + (H * H + H),  # depthwise (no bias) + pointwise
    flops=lambda s, H, T: 2 * T * H * s.kernel + 2 * T * H * H,  # depthwise + pointwise
    build=lambda s, H, p, blocks: blocks.sepconv(H, s.kernel, blocks.activation(s)),
)
