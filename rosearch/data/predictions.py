"""Dev-set predictions and accuracy for any HF-style sequence classifier.

Inference batches are cut from a global length sort (least padding) and results are
scattered back by example index, so callers always get rows in the split's own order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rosearch.data.batching import EncodedSplit, batch_indices, collate


def predict_logits(model: nn.Module, split: EncodedSplit, *, batch_size: int, device: torch.device | str) -> np.ndarray:
    """Logits (float32 [n, C]) for every example of ``split``, row i = example i.

    Runs under ``torch.no_grad`` in eval mode (the model's previous train/eval mode is
    restored afterwards); logits stay on the device until one copy back at the end.
    """
    if batch_size < 1:
        raise ValueError(f"predict_logits batch_size must be >= 1, got {batch_size}")
    n = len(split)
    if n == 0:
        return np.zeros((0, split.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None  # [n, C], allocated once C is known
    try:
        with torch.no_grad():
            for indices in batch_indices(split.lengths, batch_size, shuffle=False, bucketing=True):
                batch = collate(split, indices, device)
                inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
                if "token_type_ids" in batch:
                    inputs["token_type_ids"] = batch["token_type_ids"]
                logits = model(**inputs).logits.float()  # [B, C]
                if out is None:
                    out = torch.empty((n, logits.shape[-1]), dtype=torch.float32, device=logits.device)
                out[batch["indices"]] = logits
    finally:
        model.train(was_training)
    return out.cpu().numpy()


def logits_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ValueError(
            f"logits_accuracy needs logits [n, C] and labels [n], got {logits.shape} and {labels.shape}"
        )
    if len(labels) == 0:
        raise ValueError("logits_accuracy of zero examples is undefined (fix: check data.dev_limit and the dev split)")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def accuracy(model: nn.Module, split: EncodedSplit, *, batch_size: int, device: torch.device | str) -> float:
    """Accuracy of ``model`` on ``split`` (see :func:`predict_logits`)."""
    return logits_accuracy(predict_logits(model, split, batch_size=batch_size, device=device), split.labels)
