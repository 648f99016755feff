"""Multi-head self-attention: ``attn_h{heads}``."""

from rosearch.search_space.families.spec import OpFamily

FAMILY = OpFamily(
    name="attn",
    pattern=r"attn_h(?P<heads>\d+)",
    example="attn_h4",
    labels=lambda g: [f"attn_h{h}" for h in g.heads],
    params=lambda s, H: (H * 3 * H + 3 * H) + (H * H + H),  # qkv + output projection
    # qkv and output projections, + scores (QK^T) and weighted values (AV) over all heads
    flops=lambda s, H, T: (2 * T * H * 3 * H + 2 * T * H * H) + 2 * (2 * T * T * H),
    build=lambda s, H, p, blocks: blocks.attention(H, s.heads, p),
    stacked=(("qkv.", 3),),  # query | key | value
)
