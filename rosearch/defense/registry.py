"""One protocol for input defenses, and the registry of them (the order is the application order).

An input defense is a deterministic text -> text step built from the run's
:class:`~rosearch.defense.resources.DefenseResources`. Each one is a :class:`DefenseSpec`: how to
build its step (knowing which other defenses run beside it), what the model card says about it,
and which resource tables it needs saved with an exported student. A defense that answers by
several copies of a text (smoothing) also builds a :class:`CopyStep`; its text step is the
identity (what training sees). Adding a defense means its own
module, one entry here, and its name in :data:`rosearch.choices.DEFENSE_NAMES` (the leaf that
config validates against; ``tests/test_choices.py`` checks the two agree), plus the table it needs
in ``prepare_defense``'s resource builder.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rosearch.choices import SMOOTHING, SYNONYM_ENCODING, TYPO_ENCODING, WORD_RECOGNITION
from rosearch.defense.resources import DefenseResources
from rosearch.defense.smoothing import Smoother
from rosearch.defense.synonym_encoding import SynonymEncoder
from rosearch.defense.typo_encoding import TypoEncoder
from rosearch.defense.word_recognition import WordRecognizer


class TextStep(Protocol):
    """One defense, built: maps a whole text to the text the model sees."""

    def __call__(self, text: str) -> str: ...


class CopyStep(Protocol):
    """One defense that answers by ``copies`` texts per text (the model's answer is their mean)."""

    copies: int

    def __call__(self, text: str) -> list[str]: ...


@dataclass(frozen=True)
class DefenseSpec:
    """What the pipeline needs to know about one defense."""

    name: str
    build: Callable[[DefenseResources, Sequence[str]], TextStep]  # (resources, every defense in the set)
    describe: Callable[[DefenseResources], dict[str, Any]]  # the model card's entry
    tables: tuple[str, ...] = ()  # DefenseResources mapping fields it reads (saved with the student only when used)
    spread: Callable[[DefenseResources], CopyStep] | None = None  # for a defense that answers by several copies


def _kept_for_later_steps(resources: DefenseResources, names: Sequence[str]) -> frozenset[str]:
    """Words word recognition must leave intact because a later encoder maps them."""
    out: frozenset[str] = frozenset()
    if TYPO_ENCODING in names:
        out |= TypoEncoder(resources.typo_codes).vocabulary
    if SYNONYM_ENCODING in names:
        out |= SynonymEncoder(resources.synonyms).vocabulary
    return out


def _build_word_recognition(resources: DefenseResources, names: Sequence[str]) -> TextStep:
    return WordRecognizer(resources.counts, max_distance=resources.max_distance, backoff=resources.backoff,
                          neutral_word=resources.neutral_word, extra_known=_kept_for_later_steps(resources, names))


def _describe_word_recognition(resources: DefenseResources) -> dict[str, Any]:
    return {"lexicon_words": len(resources.counts), "max_edit_distance": resources.max_distance,
            "backoff": resources.backoff, "neutral_word": resources.neutral_word}


def _describe_typo_encoding(resources: DefenseResources) -> dict[str, Any]:
    codes = resources.typo_codes
    return {"recoded_words": len(codes), "heads": len(set(codes.values()))}


def _describe_synonym_encoding(resources: DefenseResources) -> dict[str, Any]:
    return {"mapped_words": len(resources.synonyms), "clusters": len(set(resources.synonyms.values()))}


def _unchanged(text: str) -> str:
    return text


def _build_smoother(resources: DefenseResources) -> Smoother:
    return Smoother(resources.neighbours, copies=resources.smoothing_copies, rate=resources.smoothing_rate)


def _describe_smoothing(resources: DefenseResources) -> dict[str, Any]:
    return {"copies": _build_smoother(resources).copies, "rate": resources.smoothing_rate,
            "words_with_neighbours": sum(1 for n in resources.neighbours.values() if n),
            "aggregate": "mean of the copies' probabilities", "seed": "BLAKE2b of the text"}


DEFENSES: Mapping[str, DefenseSpec] = types.MappingProxyType({
    WORD_RECOGNITION: DefenseSpec(WORD_RECOGNITION, _build_word_recognition, _describe_word_recognition),
    SMOOTHING: DefenseSpec(SMOOTHING, lambda _r, _names: _unchanged, _describe_smoothing, tables=("neighbours",),
                           spread=_build_smoother),
    SYNONYM_ENCODING: DefenseSpec(SYNONYM_ENCODING, lambda r, _names: SynonymEncoder(r.synonyms),
                                  _describe_synonym_encoding, tables=("synonyms",)),
    TYPO_ENCODING: DefenseSpec(TYPO_ENCODING, lambda r, _names: TypoEncoder(r.typo_codes), _describe_typo_encoding,
                               tables=("typo_codes",)),
})

__all__ = ["DEFENSES", "CopyStep", "DefenseSpec", "TextStep"]
