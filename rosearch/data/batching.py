"""Tokenised splits stored ragged (no padding) and batched with dynamic padding.

Every consumer — teacher fine-tuning, teacher-output caching, KD training, evaluation — reads
an :class:`EncodedSplit` and batches it here, so tokenisation happens once and padding is only
ever to the longest sequence of a batch. Length bucketing groups similar lengths so that even
that padding stays small.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


@dataclass(frozen=True)
class EncodedSplit:
    """One tokenised split: sequence ``i`` is ``input_ids[offsets[i]:offsets[i+1]]``.

    ``token_type_ids`` is present for sentence-pair tasks (aligned with ``input_ids``).
    ``fingerprint`` identifies tokenizer + task + split + max length + subset, and keys every
    cache derived from this split (teacher outputs in particular).
    """

    input_ids: np.ndarray  # int32 [total_tokens]
    offsets: np.ndarray  # int64 [n + 1]
    labels: np.ndarray  # int64 [n]
    token_type_ids: np.ndarray | None  # int8 [total_tokens] or None
    pad_token_id: int
    num_labels: int
    fingerprint: str

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.offsets.shape != (n + 1,) or self.offsets[0] != 0 or self.offsets[-1] != len(self.input_ids):
            raise ValueError(
                f"EncodedSplit offsets must have n+1={n + 1} entries from 0 to {len(self.input_ids)}, "
                f"got shape {self.offsets.shape}"
            )
        if self.token_type_ids is not None and len(self.token_type_ids) != len(self.input_ids):
            raise ValueError("EncodedSplit token_type_ids must align with input_ids")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, indices: np.ndarray | list[int], tag: str) -> "EncodedSplit":
        """A new split holding ``indices`` in that order; ``tag`` extends the fingerprint."""
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) else np.zeros(0, np.int64)
        return EncodedSplit(
            input_ids=self.input_ids[gather],
            offsets=offsets,
            labels=self.labels[idx],
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids[gather],
            pad_token_id=self.pad_token_id,
            num_labels=self.num_labels,
            fingerprint=f"{self.fingerprint}-{tag}",
        )

    def save(self, path: str | Path) -> None:
        """Write as ``.npz`` (no pickle); see :meth:`load`."""
        arrays = {
            "input_ids": self.input_ids,
            "offsets": self.offsets,
            "labels": self.labels,
            "meta": np.array([self.pad_token_id, self.num_labels], dtype=np.int64),
            "fingerprint": np.frombuffer(self.fingerprint.encode(), dtype=np.uint8),
        }
        if self.token_type_ids is not None:
            arrays["token_type_ids"] = self.token_type_ids
        path = Path(path)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "EncodedSplit":
        with np.load(path, allow_pickle=False) as z:
            return cls(
                input_ids=z["input_ids"],
                offsets=z["offsets"],
                labels=z["labels"],
                token_type_ids=z["token_type_ids"] if "token_type_ids" in z else None,
                pad_token_id=int(z["meta"][0]),
                num_labels=int(z["meta"][1]),
                fingerprint=z["fingerprint"].tobytes().decode(),
            )


def batch_indices(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    rng: random.Random | None = None,
    bucketing: bool = True,
    bucket_multiplier: int = 50,
) -> list[list[int]]:
    """Split ``range(len(lengths))`` into batches.

    With ``shuffle``, examples are shuffled with ``rng``; with ``bucketing`` too, each window of
    ``batch_size * bucket_multiplier`` shuffled examples is sorted by length before being cut
    into batches, and the batch order is shuffled again (randomness kept, padding small).
    Without shuffle and with bucketing, batches are cut from a global length sort (for
    inference, where order does not matter and callers scatter results back by index).
    """
    n = len(lengths)
    order = list(range(n))
    if shuffle:
        if rng is None:
            raise ValueError("batch_indices(shuffle=True) needs an explicit seeded rng")
        rng.shuffle(order)
        if bucketing:
            window = batch_size * bucket_multiplier
            order = [i for s in range(0, n, window) for i in sorted(order[s:s + window], key=lambda j: lengths[j])]
    elif bucketing:
        order.sort(key=lambda j: lengths[j])
    batches = [order[s:s + batch_size] for s in range(0, n, batch_size)]
    if shuffle and bucketing:
        rng.shuffle(batches)
    return batches


def collate(split: EncodedSplit, indices: list[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Pad the sequences at ``indices`` to the longest among them.

    Returns ``input_ids`` and ``attention_mask`` (int64 [B, T]), ``token_type_ids`` when the
    split has them, ``labels`` (int64 [B]) and ``indices`` (int64 [B], positions in ``split``).
    """
    lengths = split.lengths[indices]
    width = int(lengths.max()) if len(indices) else 0
    ids = np.full((len(indices), width), split.pad_token_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64) if split.token_type_ids is not None else None
    for row, i in enumerate(indices):
        start, end = split.offsets[i], split.offsets[i + 1]
        ids[row, : end - start] = split.input_ids[start:end]
        mask[row, : end - start] = 1
        if types is not None:
            types[row, : end - start] = split.token_type_ids[start:end]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(split.labels[indices].astype(np.int64)),
        "indices": torch.as_tensor(indices, dtype=torch.int64),
    }
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def iterate_batches(
    split: EncodedSplit,
    batch_size: int,
    *,
    shuffle: bool = False,
    rng: random.Random | None = None,
    bucketing: bool = True,
    device: torch.device | str = "cpu",
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield collated batches over the whole split once."""
    for indices in batch_indices(split.lengths, batch_size, shuffle=shuffle, rng=rng, bucketing=bucketing):
        yield collate(split, indices, device)
