"""The position-wise feed-forward block H -> ratio*H -> H: ``ffn_r{ratio}_{act}``."""

from rosearch.search_space.families.spec import ACT, OpFamily

FAMILY = OpFamily(
    name="ffn",
    pattern=rf"ffn_r(?P<ratio>\d+)_(?P<act>{ACT})",
    example="ffn_r2_swish",
    labels=lambda g: [f"ffn_r{r}_{a}" for r in g.ffn_ratios for a in g.activations],
    params=lambda s, H: (H * s.ratio * H + s.ratio * H) + (s.ratio * H * H + H),
    flops=lambda s, H, T: 2 * (2 * T * H * s.ratio * H),
    build=lambda s, H, p, blocks: blocks.feed_forward(H, s.ratio, blocks.activation(s), p),
)
