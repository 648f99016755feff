"""Randomized smoothing against word substitution, SAFER-style (Ye et al., ACL 2020, "SAFER:
A Structure-free Approach for Certified Robustness to Adversarial Word Substitutions").

A text is answered by ``k`` copies of it in which every word, with probability ``rate``, is
swapped for a random counter-fitted neighbour (the table TextFooler-style attacks draw their
swaps from); the student classifies the copies in one batch and the answer is the mean of the k
probability vectors. An attacker's swap lands inside the neighbourhood the copies already
sample, so it moves the mean less than it moves one forward pass.

SAFER, not RanMASK: the copies stay natural text a student distilled on unmasked sentences has
seen, and nothing depends on a tokenizer's mask token (the defense works on raw text). The mean
of probabilities, not a vote: it keeps graded scores (a score-based attack still sees a
calibrated model rather than a staircase that hides its gradient), it cannot tie, and ``k = 1``
is the plain model exactly.

The randomness is seeded by the text itself (a BLAKE2b digest, not Python's salted ``hash``),
so one text always gets the same copies, in every process: the attack queries a fixed,
deterministic model.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

import numpy as np

from rosearch.defense.words import map_words

DEFAULT_COPIES = 8  # defense.smoothing_copies
DEFAULT_RATE = 0.3  # defense.smoothing_rate
MAX_COPIES = 256  # a text's copies are one batch: beyond this the cost is no longer "a few forward passes"


def text_seed(text: str) -> int:
    """A 64-bit seed from ``text`` alone (stable across processes, platforms and PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def check_smoothing(copies: object, rate: object, where: str = "defense") -> None:
    """ValueError naming the field when ``copies`` or ``rate`` cannot smooth."""
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= MAX_COPIES:
        raise ValueError(f"{where}.smoothing_copies must be an integer from 1 to {MAX_COPIES} (the copies of each "
                         f"text the student classifies), got {copies!r}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"{where}.smoothing_rate must be a number from 0 to 1 (the chance each word is swapped "
                         f"for a neighbour), got {rate!r}")


class Smoother:
    """``smoother(text) -> list of copies``: ``copies`` texts, seeded by ``text``, each word swapped
    for a random neighbour with probability ``rate``. ``copies`` is 1 when nothing can change
    (``copies == 1`` or ``rate == 0``): the plain model, one forward pass."""

    def __init__(self, neighbours: Mapping[str, Sequence[str]], *, copies: int, rate: float) -> None:
        check_smoothing(copies, rate)
        self.neighbours = {w: tuple(n) for w, n in neighbours.items() if n}
        self.rate = float(rate)
        self.copies = copies if self.rate > 0 else 1

    def __call__(self, text: str) -> list[str]:
        if self.copies == 1:
            return [text]
        rng = random.Random(text_seed(text))

        def swap(word: str) -> str:
            options = self.neighbours.get(word)
            if options and rng.random() < self.rate:
                return options[rng.randrange(len(options))]
            return word

        return [map_words(text, swap) for _ in range(self.copies)]


def mean_probability_logits(logits: np.ndarray, copies: int) -> np.ndarray:
    """Rows ``[n * copies, C]`` (each text's copies consecutive) -> ``[n, C]`` logits whose softmax is
    the mean of the copies' probabilities (the log of that mean). ``copies == 1`` returns ``logits``
    unchanged, so the unsmoothed model is reproduced bit for bit."""
    if copies == 1:
        return logits
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2 or len(logits) % copies:
        raise ValueError(f"smoothing: {logits.shape} logits are not whole groups of {copies} copies")
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = (shifted / shifted.sum(axis=-1, keepdims=True)).reshape(-1, copies, logits.shape[-1]).mean(axis=1)
    return np.log(np.maximum(probabilities, np.finfo(np.float32).tiny)).astype(np.float32)
