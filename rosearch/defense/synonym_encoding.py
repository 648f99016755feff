"""Synonym encoding against word-substitution attacks (Wang et al. 2021, "Natural Language
Adversarial Defense through Synonym Encoding").

Every word is mapped to one representative of its synonym cluster, in training and at
inference alike, so a swap inside a cluster does not change what the model sees. Clusters are
built greedily, most frequent word first (as SEM does): an unassigned word becomes a centre and
takes every still-unassigned synonym. Synonyms are the union of the relations given (WordNet's
lemma names of all of a word's synsets, which is exactly PWWS's candidate set, and the
counter-fitted neighbour table, which TextFooler-style attacks draw from). Centres are ordered
by the training text's frequency, so representatives are words the student trains on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rosearch.defense.words import map_words


def build_clusters(counts: Mapping[str, int], relations: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """word -> representative, for every word of ``counts`` and every word related to one.

    Deterministic: centres are visited by (frequency desc, word), synonyms alphabetically.
    Only words whose representative differs from themselves are returned (identity elsewhere).
    """
    vocab = set(counts)
    for word in counts:
        vocab.update(relations.get(word, ()))
    order = sorted(vocab, key=lambda w: (-counts.get(w, 0), w))
    rep: dict[str, str] = {}
    for word in order:
        if word in rep:
            continue
        rep[word] = word
        for synonym in sorted(relations.get(word, ())):
            if synonym not in rep and synonym in vocab:
                rep[synonym] = word
    return {w: r for w, r in rep.items() if w != r}


class SynonymEncoder:
    """``encoder(text) -> text`` with every word replaced by its cluster's representative."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self.mapping = dict(mapping)
        self.vocabulary = frozenset(self.mapping) | frozenset(self.mapping.values())

    def encode(self, word: str) -> str:
        return self.mapping.get(word, word)

    def __call__(self, text: str) -> str:
        return map_words(text, self.encode)
