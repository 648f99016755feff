"""Masked 1-D mean pooling over the real tokens of a window ('same' padding): ``avgpool_k{k}``."""

from rosearch.search_space.families.spec import pooling_family

FAMILY = pooling_family("avgpool", lambda s, H, p, blocks: blocks.avgpool(s.kernel))
