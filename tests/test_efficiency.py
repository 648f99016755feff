"""Latency and parameter counting on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rosearch.evaluate.efficiency import LatencySettingsError, measure_latency, parameter_count


class TinyClassifier(nn.Module):
    """Embedding -> mean pool -> linear, with the HF call convention (input_ids, attention_mask)."""

    def __init__(self, vocab_size: int = 50, hidden: int = 32, tie: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.dense = nn.Linear(hidden, hidden)
        self.decoder = nn.Linear(hidden, vocab_size, bias=False)
        if tie:
            self.decoder.weight = self.embed.weight
        self.seen_shapes: list[tuple[int, ...]] = []
        self.seen_training: list[bool] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.seen_shapes.append(tuple(input_ids.shape))
        self.seen_training.append(self.training)
        x = self.embed(input_ids) * attention_mask[..., None]  # [B, T, H]
        return self.decoder(torch.tanh(self.dense(x.mean(dim=1))))  # [B, V]


def test_latency_keys_positive_and_eval_mode():
    model = TinyClassifier()
    model.train()
    result = measure_latency(model, seq_len=16, batch_sizes=(1, 4), device="cpu", warmup=1, repeats=3, vocab_size=50)
    assert set(result) == {"latency_ms_b1", "latency_ms_b4"}
    assert all(isinstance(v, float) and v > 0 for v in result.values())
    # 1 warm-up + 3 timed forwards per batch size, shaped [B, seq_len], all in eval mode
    assert model.seen_shapes == [(1, 16)] * 4 + [(4, 16)] * 4
    assert not any(model.seen_training)
    assert model.training  # training mode restored


def test_latency_default_batch_sizes():
    result = measure_latency(TinyClassifier(), seq_len=8, device=torch.device("cpu"), vocab_size=50)
    assert set(result) == {"latency_ms_b1", "latency_ms_b32"}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"seq_len": 0}, "seq_len"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": -1}, "warmup"),
        ({"batch_sizes": (1, 0)}, "batch_sizes"),
        ({"batch_sizes": ()}, "batch_sizes"),
        ({"vocab_size": 0}, "vocab_size"),
    ],
)
def test_latency_rejects_bad_settings(kwargs, name):
    settings = {"seq_len": 8, "device": "cpu", "vocab_size": 50, **kwargs}
    with pytest.raises(LatencySettingsError, match=name):
        measure_latency(TinyClassifier(), **settings)


def test_parameter_count_counts_tied_weights_once():
    untied, tied = TinyClassifier(tie=False), TinyClassifier(tie=True)
    dense = 32 * 32 + 32
    assert parameter_count(untied) == 50 * 32 + dense + 32 * 50
    assert parameter_count(tied) == 50 * 32 + dense
