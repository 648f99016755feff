"""Per-example logits of a split a smoothed student is measured on (one function for dev, the
validation slice and the proxy set alike)."""

from __future__ import annotations

import numpy as np
import torch

from rosearch.data.batching import EncodedSplit
from rosearch.defense.smoothing import mean_probability_logits
from rosearch.data.predictions import predict_logits


def example_logits(model: torch.nn.Module, split: EncodedSplit, *, batch_size: int, device: torch.device | str,
                   copies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[n, C]`` and labels ``[n]`` of the split's examples. With ``copies`` > 1 the split holds
    each example's smoothing copies, consecutive (``prepare_defense.copied_examples``): an example
    scores the mean of its copies' probabilities, as the deployed smoothed student answers."""
    logits = predict_logits(model, split, batch_size=batch_size, device=device)  # [n * copies, C]
    return mean_probability_logits(logits, copies), split.labels[::copies]
