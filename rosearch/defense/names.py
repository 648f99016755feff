"""The input defenses a student can carry, by name (a leaf module: genomes and config validate against it)."""

from __future__ import annotations

WORD_RECOGNITION = "word_recognition"  # maps a word the lexicon does not know back to a likely known word
SYNONYM_ENCODING = "synonym_encoding"  # maps every word to one representative of its synonym cluster

# Applied in this order: typos are repaired first, so the repaired word is then synonym-encoded.
DEFENSE_NAMES: tuple[str, ...] = (WORD_RECOGNITION, SYNONYM_ENCODING)


def canonical_defenses(names: object, where: str) -> tuple[str, ...]:
    """``names`` as a duplicate-free tuple in application order; ValueError naming ``where`` otherwise."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ValueError(f"{where} must be a list of defense names from {list(DEFENSE_NAMES)}, got {names!r}")
    unknown = [n for n in names if n not in DEFENSE_NAMES]
    if unknown:
        raise ValueError(f"{where}: unknown defense(s) {unknown} (known: {list(DEFENSE_NAMES)})")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: defense names repeat: {list(names)}")
    return tuple(n for n in DEFENSE_NAMES if n in names)
