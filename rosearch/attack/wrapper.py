"""A fast TextAttack model wrapper for any HF-style sequence classifier (students included).

TextAttack's ``HuggingFaceModelWrapper`` pads every query to the tokenizer's maximum length
(512 for BERT) and only accepts ``transformers.PreTrainedModel``. Attacks send thousands of
short perturbed texts, so here each call is tokenised once, sorted by length and cut into
dynamically padded batches with :mod:`rosearch.data.batching` (the same primitives as every other
inference in rosearch), and logits come back in the caller's order.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from rosearch.data.batching import EncodedSplit, batch_indices, collate
from rosearch.defense.pipeline import Defense, defend_pair

if TYPE_CHECKING:
    from textattack.models.wrappers import ModelWrapper


def _encode(tokenizer: Any, texts: Sequence[str | tuple[str, ...]], max_length: int) -> EncodedSplit:
    """Tokenise a query (single texts or pairs) into a ragged split (no padding)."""
    is_pair = bool(texts) and isinstance(texts[0], (tuple, list))
    if is_pair:
        if any(not isinstance(t, (tuple, list)) or len(t) != 2 for t in texts):
            raise ValueError("attack wrapper: a query mixes single texts and pairs, or has tuples that are not pairs")
        enc = tokenizer([t[0] for t in texts], [t[1] for t in texts], truncation="longest_first",
                        max_length=max_length, padding=False, return_token_type_ids=True, return_attention_mask=False)
    else:
        if any(not isinstance(t, str) for t in texts):
            raise ValueError("attack wrapper: a query mixes single texts and pairs")
        enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                        return_token_type_ids=False, return_attention_mask=False)
    ids = enc["input_ids"]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)  # [n + 1]
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))  # [total_tokens]
    types = (np.fromiter((t for x in enc["token_type_ids"] for t in x), dtype=np.int8, count=int(offsets[-1]))
             if is_pair else None)
    return EncodedSplit(
        input_ids=flat, offsets=offsets, labels=np.zeros(len(ids), dtype=np.int64), token_type_ids=types,
        pad_token_id=int(tokenizer.pad_token_id), num_labels=0, fingerprint="attack-query",
    )


@functools.cache
def _wrapper_class() -> type:
    """The ModelWrapper subclass, created on first use so that importing this module does not
    import textattack (its import takes ~10 s and needs NLTK data provisioned first)."""
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack.models.wrappers import ModelWrapper

    class BatchedClassifierWrapper(ModelWrapper):
        """Queries ``model`` with length-sorted, dynamically padded batches; returns logits
        (float32 numpy [N, num_labels]) in input order."""

        def __init__(self, model: nn.Module, tokenizer: Any, *, max_length: int, batch_size: int,
                     device: torch.device | str, defense: Defense | None = None) -> None:
            if batch_size < 1:
                raise ValueError(f"attack wrapper batch_size must be >= 1, got {batch_size} (fix: attack.model_batch_size)")
            if max_length < 2:
                raise ValueError(f"attack wrapper max_length must be >= 2, got {max_length} (fix: data.max_length)")
            if tokenizer.pad_token_id is None:
                raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token (fix: set tokenizer.pad_token)")
            self.model = model  # TextAttack's goal functions read `.model`
            self.tokenizer = tokenizer
            self.max_length = max_length
            self.batch_size = batch_size
            self.device = torch.device(device)
            self.num_labels = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)
            self.defense = defense  # part of the queried model: every text passes it before tokenisation

        def __call__(self, text_input_list: Sequence[str | tuple[str, ...]]) -> np.ndarray:
            texts = defend_pair(self.defense, list(text_input_list))
            if not texts:
                return np.zeros((0, self.num_labels), dtype=np.float32)
            split = _encode(self.tokenizer, texts, self.max_length)
            out: torch.Tensor | None = None  # [N, C], allocated once C is known
            was_training = self.model.training
            if was_training:  # eval() walks every submodule: ~5% of a small student's attack when done per query
                self.model.eval()
            try:
                with torch.inference_mode():
                    for indices in batch_indices(split.lengths, self.batch_size, shuffle=False, bucketing=True):
                        batch = collate(split, indices, self.device)
                        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
                        if "token_type_ids" in batch:
                            inputs["token_type_ids"] = batch["token_type_ids"]
                        logits = self.model(**inputs).logits.float()  # [B, C]
                        if out is None:
                            out = torch.empty((len(texts), logits.shape[-1]), dtype=torch.float32, device=logits.device)
                        out[batch["indices"]] = logits
            finally:
                if was_training:
                    self.model.train()
            return out.cpu().numpy()

        def _tokenize(self, inputs: Sequence[str]) -> list[list[str]]:
            return [
                self.tokenizer.convert_ids_to_tokens(self.tokenizer(x, truncation=True, max_length=self.max_length)["input_ids"])
                for x in defend_pair(self.defense, list(inputs))
            ]

    return BatchedClassifierWrapper


def make_wrapper(model: nn.Module, tokenizer: Any, *, max_length: int, batch_size: int, device: torch.device | str,
                 defense: Defense | None = None) -> ModelWrapper:
    """A ``textattack.models.wrappers.ModelWrapper`` around ``model`` (any HF sequence
    classifier with ``.logits`` outputs). It takes a list of texts (or of ``(a, b)`` tuples for
    pair tasks), truncates to ``max_length`` tokens, and returns float32 logits [N, C]; the
    result equals running each text alone, up to float tolerance. ``model`` must already be on
    ``device``. A ``defense`` (the student's input defenses) is applied to every queried text
    first, so an attack through this wrapper attacks the whole deployed pipeline, black-box."""
    return _wrapper_class()(model, tokenizer, max_length=max_length, batch_size=batch_size, device=device,
                            defense=defense)
