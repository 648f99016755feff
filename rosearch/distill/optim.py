"""The one AdamW setup every training loop shares: weight decay on matrices only.

Biases and normalisation scales (every parameter with fewer than two dimensions, LayerNorm's
included) are not decayed, as in BERT. Used by teacher fine-tuning, the KD trainer, adversarial
fine-tuning and the KD-throughput benchmark, so all of them train with the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable ``params``: matrices decayed by ``weight_decay``,
    1-D parameters (biases, norm scales) not at all; a group with no parameter is left out."""
    trainable = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def adamw(params: Iterable[nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable ``params`` with :func:`decay_groups`."""
    return torch.optim.AdamW(decay_groups(params, weight_decay), lr=lr)
