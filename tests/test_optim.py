"""The one AdamW setup (rosearch.distill.optim) that teacher fine-tuning, the KD trainer,
adversarial fine-tuning and the KD-throughput benchmark share."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from rosearch.distill.optim import adamw, decay_groups


def test_matrices_are_decayed_and_biases_and_norms_are_not() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    model[0].weight.requires_grad_(False)  # frozen parameters are left out
    decay, no_decay = decay_groups(model.parameters(), 0.01)
    assert decay == {"params": [model[1].weight], "weight_decay": 0.01}
    assert no_decay["params"] == [model[1].bias, model[2].weight, model[2].bias] and no_decay["weight_decay"] == 0.0
    optimizer = adamw(model.parameters(), lr=1e-3, weight_decay=0.01)
    assert isinstance(optimizer, torch.optim.AdamW) and [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3]
    matrix_only = nn.Linear(3, 3, bias=False)
    assert decay_groups(matrix_only.parameters(), 0.1) == [{"params": [matrix_only.weight], "weight_decay": 0.1}]  # no empty group


def test_a_bert_teachers_layer_norms_are_one_dimensional() -> None:
    """Teacher fine-tuning used to exempt parameters named LayerNorm as well as 1-D ones; in a BERT
    every such parameter is 1-D, so the shared rule groups the teacher exactly as before."""
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
    teacher = BertForSequenceClassification(config)
    named = [n for n, p in teacher.named_parameters() if "LayerNorm" in n or "layer_norm" in n]
    assert named and all(p.ndim == 1 for n, p in teacher.named_parameters() if n in named)
    decay, no_decay = decay_groups(teacher.parameters(), 0.01)
    old_no_decay = [p for n, p in teacher.named_parameters() if p.ndim < 2 or "LayerNorm" in n or "layer_norm" in n]
    assert [id(p) for p in no_decay["params"]] == [id(p) for p in old_no_decay]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(teacher.parameters()))
