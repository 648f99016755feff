"""A dilated (d=2) depthwise-separable 1-D convolution, then an activation: ``dilconv_k{k}_{act}``."""

from rosearch.search_space.families.spec import ACT, OpFamily

FAMILY = OpFamily(
    name="dilconv",
    pattern=rf"dilconv_k(?P<kernel>\d+)_(?P<act>{ACT})",
    example="dilconv_k3_tanh",
    labels=lambda g: [f"dilconv_k{k}_{a}" for k in g.kernel_sizes for a in g.activations],
    params=lambda s, H: H * s.kernel + (H * H + H),  # depthwise (no bias) + pointwise; dilation adds none
    flops=lambda s, H, T: 2 * T * H * s.kernel + 2 * T * H * H,
    build=lambda s, H, p, blocks: blocks.sepconv(H, s.kernel, blocks.activation(s), dilation=s.dilation),
    dilation=2,
)
