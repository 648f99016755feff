"""Dev-set predictions come back in the split's order and match unpadded per-example forwards."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import POSITIVE, encode_texts, make_sentence
from torch import nn
from transformers import BertConfig, BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from rosearch.data.batching import EncodedSplit
from rosearch.data.predictions import accuracy, logits_accuracy, predict_logits


pytestmark = pytest.mark.usefixtures("single_thread")


def encode(tokenizer, n: int, seed: int, pairs: bool = False) -> EncodedSplit:
    rng = random.Random(seed)
    labels = [rng.randint(0, 1) for _ in range(n)]
    first = [make_sentence(rng, y) for y in labels]
    second = [make_sentence(rng, y) for y in labels] if pairs else None
    return encode_texts(tokenizer, first, labels, f"toy-{seed}-{pairs}", second)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3, type_vocab_size=2,
    )
    return BertForSequenceClassification(config)


def _per_example(model: nn.Module, split: EncodedSplit) -> np.ndarray:
    model.eval()
    rows = []
    with torch.no_grad():
        for i in range(len(split)):
            start, end = split.offsets[i], split.offsets[i + 1]
            kwargs = {"input_ids": torch.as_tensor(split.input_ids[start:end], dtype=torch.long)[None]}
            if split.token_type_ids is not None:
                kwargs["token_type_ids"] = torch.as_tensor(split.token_type_ids[start:end], dtype=torch.long)[None]
            rows.append(model(**kwargs).logits[0].numpy())
    return np.stack(rows)


@pytest.mark.parametrize("pairs", [False, True])
def test_predict_logits_matches_per_example_forward_in_split_order(model, tiny_tokenizer, pairs):
    split = encode(tiny_tokenizer, 37, seed=3, pairs=pairs)
    assert len(set(split.lengths.tolist())) > 3  # bucketing really reorders the examples
    model.train()
    logits = predict_logits(model, split, batch_size=8, device="cpu")
    assert model.training  # the caller's mode is restored
    assert logits.shape == (37, 3) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, _per_example(model, split), atol=1e-5)


def test_predict_logits_of_empty_split(model, tiny_tokenizer):
    split = encode(tiny_tokenizer, 4, seed=0).subset([], tag="empty")
    assert predict_logits(model, split, batch_size=8, device="cpu").shape == (0, 2)


class _SentimentRule(nn.Module):
    """A rule-based classifier: class 1 iff the sequence holds a positive cue word."""

    def __init__(self, positive_ids: list[int]) -> None:
        super().__init__()
        self.register_buffer("positive", torch.tensor(positive_ids))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor) -> SequenceClassifierOutput:
        hit = (torch.isin(input_ids, self.positive) & attention_mask.bool()).any(dim=1).float()  # [B]
        return SequenceClassifierOutput(logits=torch.stack([1 - hit, hit], dim=1))


def test_accuracy_of_a_perfect_and_an_inverted_classifier(tiny_tokenizer):
    split = encode(tiny_tokenizer, 50, seed=4)
    rule = _SentimentRule(tiny_tokenizer.convert_tokens_to_ids(POSITIVE))
    assert accuracy(rule, split, batch_size=16, device="cpu") == 1.0
    inverted = predict_logits(rule, split, batch_size=16, device="cpu")[:, ::-1]
    assert logits_accuracy(inverted, split.labels) == 0.0


def test_logits_accuracy():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [5.0, 4.0]])
    assert logits_accuracy(logits, np.array([1, 0, 0, 1])) == 0.5
    with pytest.raises(ValueError, match="labels"):
        logits_accuracy(logits, np.array([1, 0]))
    with pytest.raises(ValueError, match="zero examples"):
        logits_accuracy(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
