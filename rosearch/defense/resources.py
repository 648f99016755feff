"""What every defense of a run is built from (a leaf of the defense package: the registry and the
pipeline both read it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rosearch.defense.word_recognition import Backoff


@dataclass(frozen=True)
class DefenseResources:
    """What every defense of a run is built from: the lexicon (training-text word counts),
    the synonym mapping (word -> cluster representative), the typo code table (word -> its
    cluster's head), and word recognition's knobs."""

    counts: Mapping[str, int]
    synonyms: Mapping[str, str] = field(default_factory=dict)
    typo_codes: Mapping[str, str] = field(default_factory=dict)
    max_distance: int = 2
    backoff: Backoff = "neutral"
    neutral_word: str = "unk"

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())), "synonyms": dict(sorted(self.synonyms.items())),
            "typo_codes": dict(sorted(self.typo_codes.items())), "max_distance": self.max_distance, "backoff": self.backoff, "neutral_word": self.neutral_word,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DefenseResources:
        return cls(counts=dict(data["counts"]), synonyms=dict(data["synonyms"]),
                   typo_codes=dict(data.get("typo_codes", {})), max_distance=int(data["max_distance"]),
                   backoff=data["backoff"], neutral_word=str(data["neutral_word"]))
