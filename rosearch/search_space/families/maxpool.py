"""Masked 1-D max pooling ('same' padding; padded tokens never win): ``maxpool_k{k}``."""

from rosearch.search_space.families.spec import pooling_family

FAMILY = pooling_family("maxpool", lambda s, H, p, blocks: blocks.maxpool(s.kernel))
