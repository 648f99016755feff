"""The input defenses a student can carry, by name (imports only the leaf rosearch.choices; genomes validate against it)."""

from __future__ import annotations

# The names live in the leaf rosearch.choices (config validates against them); applied in DEFENSE_NAMES order.
from rosearch.choices import DEFENSE_NAMES, SMOOTHING, SYNONYM_ENCODING, TYPO_ENCODING, WORD_RECOGNITION

__all__ = ["DEFENSE_NAMES", "SMOOTHING", "SYNONYM_ENCODING", "TYPO_ENCODING", "WORD_RECOGNITION", "canonical_defenses"]


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
