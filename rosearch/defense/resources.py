"""What every defense of a run is built from (a leaf of the defense package: the registry and the
pipeline both read it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rosearch.defense.smoothing import DEFAULT_COPIES, DEFAULT_RATE
from rosearch.defense.word_recognition import Backoff


@dataclass(frozen=True)
class DefenseResources:
    """What every defense of a run is built from: the lexicon (training-text word counts),
    the synonym mapping (word -> cluster representative), the typo code table (word -> its
    cluster's head), the neighbour table smoothing swaps from (lexicon word -> counter-fitted
    neighbours), word recognition's knobs and smoothing's."""

    counts: Mapping[str, int]
    synonyms: Mapping[str, str] = field(default_factory=dict)
    typo_codes: Mapping[str, str] = field(default_factory=dict)
    max_distance: int = 2
    backoff: Backoff = "neutral"
    neutral_word: str = "unk"
    neighbours: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    smoothing_copies: int = DEFAULT_COPIES
    smoothing_rate: float = DEFAULT_RATE

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())), "synonyms": dict(sorted(self.synonyms.items())),
            "typo_codes": dict(sorted(self.typo_codes.items())), "max_distance": self.max_distance, "backoff": self.backoff, "neutral_word": self.neutral_word,
            "neighbours": {w: list(n) for w, n in sorted(self.neighbours.items())},
            "smoothing_copies": self.smoothing_copies, "smoothing_rate": self.smoothing_rate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DefenseResources:
        return cls(counts=dict(data["counts"]), synonyms=dict(data["synonyms"]),
                   typo_codes=dict(data.get("typo_codes", {})), max_distance=int(data["max_distance"]),
                   backoff=data["backoff"], neutral_word=str(data["neutral_word"]),
                   neighbours={w: tuple(n) for w, n in data.get("neighbours", {}).items()},
                   smoothing_copies=data.get("smoothing_copies", DEFAULT_COPIES),
                   smoothing_rate=data.get("smoothing_rate", DEFAULT_RATE))
