"""Input defenses that travel with a student (part of the model an attacker queries).

- :mod:`~rosearch.defense.words`: what a word is to a defense
- :mod:`~rosearch.defense.word_recognition`: unknown word -> likely known word (character attacks)
- :mod:`~rosearch.defense.typo_encoding`: rare word one typo from a frequent word -> that word (real-word typos)
- :mod:`~rosearch.defense.synonym_encoding`: word -> synonym-cluster representative (word swaps)
- :mod:`~rosearch.defense.smoothing`: text -> k copies with random neighbour swaps, seeded by the text (word swaps)
- :mod:`~rosearch.defense.registry`: the protocol every defense follows, and the registry (application order)
- :mod:`~rosearch.defense.pipeline`: the composition, saved and loaded with a student

A leaf package: it imports nothing else of rosearch but the leaf :mod:`rosearch.choices`, so every
layer can apply a defense.
"""

from rosearch.defense.names import DEFENSE_NAMES, SYNONYM_ENCODING, WORD_RECOGNITION, canonical_defenses
from rosearch.defense.pipeline import (
    DEFENSE_FILE,
    Defense,
    DefenseError,
    DefenseResources,
    defend_copies,
    defend_pair,
    load_defense,
    smoothed_logits,
)

__all__ = [
    "DEFENSE_FILE", "DEFENSE_NAMES", "SYNONYM_ENCODING", "WORD_RECOGNITION", "Defense", "DefenseError",
    "DefenseResources", "canonical_defenses", "defend_copies", "defend_pair", "load_defense", "smoothed_logits",
]
