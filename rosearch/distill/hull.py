"""Substitution hulls: each token's embedding replaced by a convex combination of the embeddings of
its word-substitution candidates, and the worst such point for a loss (ASCC, Dong et al. ICLR 2021).

Shared by the ``ascc`` distillation method (:mod:`rosearch.distill.ascc`) and the adversarial
teacher (``teacher.adversarial``); a leaf below both, so it builds its own model call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rosearch.attack.resources import load_neighbors
from rosearch.defense.typo_encoding import confusable_pairs

if TYPE_CHECKING:
    from rosearch.defense.pipeline import Defense


def word_substitutions(words: Sequence[str], sources: Sequence[str], *, neighbors_path: str | None,
                       max_per_word: int) -> dict[str, tuple[str, ...]]:
    """word -> its substitutes (WordNet synonyms first, then counter-fitted neighbours, then the
    words of ``words`` one typo away: PWWS's, TextFooler's and deepwordbug-adaptive's candidates).

    WordNet must already be visible to nltk (:func:`~rosearch.attack.resources.prepare_textattack`).
    """
    from rosearch.defense.wordnet_synonyms import wordnet_relations  # lazy: imports nltk

    tables: list[Mapping[str, Sequence[str]]] = []
    if "wordnet" in sources:
        tables.append(wordnet_relations(words))
    if "counterfitted" in sources:
        tables.append(load_neighbors(neighbors_path))
    if "typos" in sources:
        tables.append({w: sorted(close) for w, close in confusable_pairs(words, 1).items()})
    out: dict[str, tuple[str, ...]] = {}
    for word in words:
        merged = dict.fromkeys(s for table in tables for s in table.get(word, ()) if s != word)
        if merged:
            out[word] = tuple(merged)[:max_per_word]
    return out


def token_hulls(substitutions: Mapping[str, Sequence[str]], tokenizer: Any, defense: "Defense | None",
                max_size: int) -> tuple[Tensor, Tensor]:
    """``(table [V, K], size [V])``: row ``t`` lists token ``t`` itself, then the tokens its words'
    substitutes become (through ``defense``), ``size[t]`` of them valid (1 for tokens without any).

    Only words that are a single token on both sides count; the first ``max_size`` - 1 distinct
    substitutes are kept, in ``substitutions`` order (deterministic).
    """
    def apply(word: str) -> str:
        return defense.apply(word) if defense else word

    vocab = sorted({w for w in substitutions} | {s for subs in substitutions.values() for s in subs})
    seen = sorted({apply(w) for w in vocab})
    ids = tokenizer(seen, add_special_tokens=False)["input_ids"]
    single = {w: i[0] for w, i in zip(seen, ids) if len(i) == 1}
    sets: dict[int, dict[int, None]] = {}
    for word in sorted(substitutions):
        own = single.get(apply(word))
        if own is None:
            continue
        row = sets.setdefault(own, {})
        for sub in substitutions[word]:
            tok = single.get(apply(sub))
            if tok is not None and tok != own:
                row[tok] = None
    V = len(tokenizer)
    table = torch.arange(V).unsqueeze(1).repeat(1, max_size)  # [V, K]: padding repeats the token itself
    size = torch.ones(V, dtype=torch.long)  # [V]
    for own, row in sets.items():
        subs = list(row)[: max_size - 1]
        if subs:
            table[own, 1:1 + len(subs)] = torch.tensor(subs)
            size[own] = 1 + len(subs)
    return table, size


class HullEmbedding:
    """Replaces the student's word-embedding output with points of each token's hull while active."""

    def __init__(self, embedding: nn.Embedding, table: Tensor, size: Tensor) -> None:
        self.embedding = embedding
        self.table = table  # [V, K]
        self.size = size  # [V]

    def candidates(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(ids [B, T, K], valid [B, T, K])`` of every token's substitution set."""
        ids = self.table[input_ids]  # [B, T, K]
        valid = torch.arange(ids.shape[-1], device=ids.device) < self.size[input_ids].unsqueeze(-1)  # [B, T, K]
        return ids, valid

    @staticmethod
    def weights(eta: Tensor, valid: Tensor) -> Tensor:
        """Convex weights [B, T, K]: softmax of ``eta`` over each token's valid candidates (0 elsewhere)."""
        return torch.softmax(eta.masked_fill(~valid, float("-inf")), dim=-1)

    def forward(self, student: nn.Module, batch: dict[str, Tensor], ids: Tensor, weights: Tensor) -> Tensor:
        """The student's logits with each token embedded as ``sum_k weights[..., k] * E[ids[..., k]]``."""
        points = (weights.unsqueeze(-1) * self.embedding(ids)).sum(dim=-2)  # [B, T, E]
        handle = self.embedding.register_forward_hook(lambda module, args, output: points)
        try:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            return student(**inputs).logits  # [B, C]
        finally:
            handle.remove()


def worst_hull_weights(model: nn.Module, batch: dict[str, Tensor], hull: HullEmbedding, ids: Tensor, valid: Tensor,
                       *, steps: int, step_size: float, loss_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Hull weights [B, T, K] after ``steps`` signed-gradient ascent steps on ``loss_fn(logits)``,
    from the hull's centre (``eta = 0``); detached. Only ``eta`` gets gradients (parameters do not)."""
    eta = torch.zeros(valid.shape, device=valid.device, requires_grad=True)  # [B, T, K]
    for _ in range(steps):
        loss = loss_fn(hull.forward(model, batch, ids, hull.weights(eta, valid)))
        (grad,) = torch.autograd.grad(loss, eta)
        eta = (eta + step_size * grad.sign()).detach().requires_grad_(True)
    return hull.weights(eta.detach(), valid)
