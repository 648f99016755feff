"""Word recognition against character-level attacks (Pruthi et al. 2019, "Combating Adversarial
Misspellings with Robust Word Recognition"), as a deterministic dictionary model.

A word the lexicon knows is kept. An unknown word is mapped to the known word at the smallest
optimal-string-alignment distance (an adjacent swap costs 1, as DeepWordBug's swap does), ties
broken by the larger training-text frequency, then alphabetically. A word with no known word
within ``max_distance`` goes to ``neutral_word`` (Pruthi's "neutral backoff": the attacker cannot
create new tokens the model reacts to) or is kept, as ``backoff`` says.

Why a dictionary model and not a spell-correction library: the lexicon must be the task's own
training text (so clean training text passes through unchanged and the student is trained on
exactly what it sees at inference), the mapping must be deterministic and serialisable with the
student, and symmetric-delete lookup (SymSpell's idea) is fast enough in plain Python:
candidates come from an index of every known word's deletions up to ``max_distance``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import combinations
from typing import Literal

from rapidfuzz.distance import OSA

from rosearch.defense.words import map_words

Backoff = Literal["neutral", "keep"]


def _deletions(word: str, max_distance: int) -> set[str]:
    """Every string obtained by deleting up to ``max_distance`` characters of ``word``."""
    out = {word}
    for k in range(1, min(max_distance, len(word) - 1) + 1):
        for idx in combinations(range(len(word)), k):
            out.add("".join(c for i, c in enumerate(word) if i not in idx))
    return out


def osa_distance(a: str, b: str, cutoff: int | None = None) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps
    (rapidfuzz's C++ implementation; past ``cutoff`` it returns ``cutoff + 1``)."""
    return OSA.distance(a, b, score_cutoff=cutoff)


class WordRecognizer:
    """Maps unknown words to likely known words; ``recognizer(text) -> text``.

    ``counts`` is the frequency prior over correction targets (the training text's words);
    ``extra_known`` are words kept as they are without being correction targets (e.g. the
    synonym encoder's vocabulary, so a real synonym reaches the encoder intact).
    """

    def __init__(self, counts: Mapping[str, int], *, max_distance: int = 2, backoff: Backoff = "neutral",
                 neutral_word: str = "unk", extra_known: Iterable[str] = ()) -> None:
        if max_distance < 1:
            raise ValueError(f"word recognition max_distance must be >= 1, got {max_distance} "
                             "(fix: defense.max_edit_distance)")
        if backoff not in ("neutral", "keep"):
            raise ValueError(f"word recognition backoff must be 'neutral' or 'keep', got {backoff!r} "
                             "(fix: defense.backoff)")
        if not counts:
            raise ValueError("word recognition needs a non-empty lexicon (the task's training text has no words)")
        self.counts = {w.lower(): int(c) for w, c in counts.items()}
        self.known = frozenset(self.counts) | frozenset(w.lower() for w in extra_known) | {neutral_word}
        self.max_distance = max_distance
        self.backoff = backoff
        self.neutral_word = neutral_word
        self._index: dict[str, list[str]] = {}
        for word in sorted(self.counts):
            for key in _deletions(word, max_distance):
                self._index.setdefault(key, []).append(word)
        self._memo: dict[str, str] = {}

    def recognize(self, word: str) -> str:
        """The known word ``word`` most likely stands for (``word`` itself when known)."""
        if word in self.known:
            return word
        hit = self._memo.get(word)
        if hit is not None:
            return hit
        best: tuple[int, int, str] | None = None
        seen: set[str] = set()
        # Widen the query's deletions one at a time: a known word within distance d shares a
        # deletion of at most d characters of the query, so the first width that finds one is final.
        for width in range(1, self.max_distance + 1):
            for key in _deletions(word, width):
                for candidate in self._index.get(key, ()):
                    if candidate in seen:
                        continue
                    seen.add(candidate)
                    distance = osa_distance(word, candidate, self.max_distance)
                    if distance <= self.max_distance:
                        rank = (distance, -self.counts[candidate], candidate)
                        if best is None or rank < best:
                            best = rank
            if best is not None and best[0] <= width:
                break
        if best is not None:
            out = best[2]
        else:
            out = self.neutral_word if self.backoff == "neutral" else word
        self._memo[word] = out
        return out

    def __call__(self, text: str) -> str:
        return map_words(text, self.recognize)
