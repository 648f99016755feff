"""Typo encoding: words one typo apart share one code, so a typo that lands on a real word
changes nothing the model sees (after RobEn, Jones et al., ACL 2020, "Robust Encodings").

Word recognition repairs a typo that makes a non-word ("bda" -> "bad"), but it must keep every
word its lexicon knows, so an attacker who knows it edits a word into another *real* word
("bad" -> "bed"): that is what ``deepwordbug-adaptive`` does. An encoding that gives "bad" and
"bed" the same code removes that move. RobEn's connected-component encoding (all words joined by
one-edit typos share a code) is certain but useless here: on SST-2's training vocabulary the
one-edit graph has a component of 3,636 words holding 66 % of the running text.

So the clusters are *stars* around frequent words, in the spirit of a spell checker that reads a
rare word next to a much more frequent one as that word: words are visited from the most to the
least frequent; a word joins the most frequent already-chosen head within ``max_distance`` edits
that is at least ``min_ratio`` times as frequent, otherwise it becomes a head. Words seen at least
``anchor_count`` times always stay heads (their identity is worth more than the typos they
absorb). Every code is a real word (a head), the map is idempotent, and a cluster's diameter is at
most ``2 * max_distance``, so nothing chains across the vocabulary.

What it guarantees, and what it does not: a word whose one-edit real-word neighbours all sit in its
own cluster (a "covered" word) cannot be moved by one typo, whatever the attacker knows. A typo
that turns a head into another head, or into a word of another head's cluster, still changes the
code; :func:`coverage` measures how much of the running text is covered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rosearch.defense.word_recognition import _deletions, osa_distance
from rosearch.defense.words import map_words


def confusable_pairs(words: Iterable[str], max_distance: int) -> dict[str, set[str]]:
    """For each word, the other ``words`` within ``max_distance`` OSA edits (symmetric-delete index)."""
    vocabulary = sorted(set(words))
    index: dict[str, list[str]] = {}
    for word in vocabulary:
        for key in _deletions(word, max_distance):
            index.setdefault(key, []).append(word)
    neighbours: dict[str, set[str]] = {w: set() for w in vocabulary}
    for bucket in index.values():
        for i, a in enumerate(bucket):
            for b in bucket[i + 1:]:
                if b not in neighbours[a] and osa_distance(a, b, max_distance) <= max_distance:
                    neighbours[a].add(b)
                    neighbours[b].add(a)
    return neighbours


def build_typo_codes(counts: Mapping[str, int], *, max_distance: int = 1, min_ratio: float = 2.0,
                     anchor_count: int = 50) -> dict[str, str]:
    """``word -> head`` for every lexicon word that joins another word's cluster (heads map to
    themselves and are left out of the table)."""
    if max_distance < 1:
        raise ValueError(f"typo encoding max_distance must be >= 1, got {max_distance} (fix: defense.typo_edit_distance)")
    if min_ratio < 1:
        raise ValueError(f"typo encoding min_ratio must be >= 1, got {min_ratio} (fix: defense.typo_min_ratio)")
    if anchor_count < 1:
        raise ValueError(f"typo encoding anchor_count must be >= 1, got {anchor_count} (fix: defense.typo_anchor_count)")
    neighbours = confusable_pairs(counts, max_distance)
    heads: set[str] = set()
    codes: dict[str, str] = {}
    for word in sorted(neighbours, key=lambda w: (-counts[w], w)):
        count = counts[word]
        candidates = [h for h in neighbours[word] if h in heads and counts[h] >= min_ratio * count]
        if count >= anchor_count or not candidates:
            heads.add(word)
            continue
        codes[word] = min(candidates, key=lambda h: (-counts[h], h))
    return codes


@dataclass(frozen=True)
class TypoCoverage:
    """How much of the running text one real-word typo cannot move (see :func:`coverage`)."""

    words: int  # lexicon words
    clustered_words: int  # words that map to another word's code
    heads: int  # distinct codes
    covered_token_share: float  # share of running text whose word has every one-edit real-word neighbour in its cluster
    exposed_token_share: float  # share of running text whose word has a one-edit real-word neighbour in another cluster


def coverage(counts: Mapping[str, int], codes: Mapping[str, str], max_distance: int = 1) -> TypoCoverage:
    """Token-weighted share of words that one real-word typo cannot move, and of those it can."""
    neighbours = confusable_pairs(counts, max_distance)
    total = sum(counts.values()) or 1
    covered = exposed = 0
    for word, close in neighbours.items():
        code = codes.get(word, word)
        if any(codes.get(v, v) != code for v in close):
            exposed += counts[word]
        else:
            covered += counts[word]
    return TypoCoverage(words=len(counts), clustered_words=len(codes), heads=len(set(counts) - set(codes)),
                        covered_token_share=covered / total, exposed_token_share=exposed / total)


class TypoEncoder:
    """Maps every word to its cluster's head; words outside the table are kept. ``encoder(text)``."""

    def __init__(self, codes: Mapping[str, str]) -> None:
        self.codes = dict(codes)
        broken = sorted(w for w, h in self.codes.items() if self.codes.get(h, h) != h)
        if broken:
            raise ValueError(f"typo codes must map to heads (a head maps to itself); {broken[:5]} map to words "
                             "that are themselves re-coded (fix: rebuild the table with build_typo_codes)")

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every word the table mentions (so word recognition keeps them for the encoder)."""
        return frozenset(self.codes) | frozenset(self.codes.values())

    def encode(self, word: str) -> str:
        return self.codes.get(word, word)

    def __call__(self, text: str) -> str:
        return map_words(text, self.encode)


__all__ = ["TypoCoverage", "TypoEncoder", "build_typo_codes", "confusable_pairs", "coverage"]
