"""How defenses see text: maximal runs of ASCII letters are words, everything else passes through.

TextAttack's character edits (DeepWordBug, Pruthi) insert, delete, swap and substitute ASCII
letters inside a word, and its word swaps replace whole words, so letter runs are exactly the
units an attack changes. Digits, punctuation and spacing are kept byte for byte.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable

WORD_RE = re.compile(r"[A-Za-z]+")


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``."""
    return [m.group(0).lower() for m in WORD_RE.finditer(text)]


def map_words(text: str, fn: Callable[[str], str]) -> str:
    """``text`` with every word ``w`` replaced by ``fn(w.lower())`` (lower-cased output)."""
    return WORD_RE.sub(lambda m: fn(m.group(0).lower()), text)


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """Lower-cased word frequencies over ``texts`` (the lexicon and its frequency prior)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return counts
