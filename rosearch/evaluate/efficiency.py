"""Efficiency of a model as measured, not estimated: parameter count and inference latency.

Latency runs once per candidate inside the search, so the defaults are small (2 warm-up and 5
timed forwards per batch size) and the median is reported to shrug off a noisy neighbour.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

LATENCY_SEED = 0  # token ids are random but the same for every candidate


class LatencySettingsError(ValueError):
    """A latency measurement was asked for with impossible settings."""


def parameter_count(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights, e.g. shared embeddings, count once)."""
    return sum(p.numel() for p in model.parameters())


def measure_latency(
    model: nn.Module,
    *,
    seq_len: int,
    batch_sizes: Sequence[int] = (1, 32),
    device: torch.device | str,
    warmup: int = 2,
    repeats: int = 5,
    vocab_size: int,
) -> dict[str, float]:
    """Median milliseconds per forward pass of a ``[batch, seq_len]`` batch, per batch size.

    Returns ``{"latency_ms_b<batch>": ms}``. The model is put in eval mode for the measurement
    and its previous training mode is restored afterwards.
    """
    _check_positive(seq_len=seq_len, vocab_size=vocab_size, repeats=repeats)
    if warmup < 0:
        raise LatencySettingsError(f"warmup must be >= 0, got {warmup!r}")
    if not batch_sizes or any(b <= 0 for b in batch_sizes):
        raise LatencySettingsError(f"batch_sizes must be a non-empty list of positive sizes, got {tuple(batch_sizes)!r}")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(LATENCY_SEED)
    was_training = model.training
    model.eval()
    results: dict[str, float] = {}
    try:
        with torch.no_grad():
            for batch in batch_sizes:
                input_ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator).to(device)  # [B, T]
                attention_mask = torch.ones_like(input_ids)  # [B, T]
                timings = []
                for i in range(warmup + repeats):
                    _synchronize(device)
                    start = time.perf_counter()
                    model(input_ids=input_ids, attention_mask=attention_mask)
                    _synchronize(device)
                    if i >= warmup:
                        timings.append((time.perf_counter() - start) * 1000.0)
                results[f"latency_ms_b{batch}"] = statistics.median(timings)
    finally:
        model.train(was_training)
    return results


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that the wall clock measures the forward pass itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise LatencySettingsError(f"{name} must be > 0, got {value!r}")
