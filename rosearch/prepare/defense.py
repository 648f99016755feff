"""Once per run: the resources every candidate's input defenses are built from, and the run's
splits as each defended student sees them (so workers never re-tokenise).

Word recognition's lexicon and frequency prior are the words of the task's training text;
synonym clusters are built over that vocabulary from WordNet (exactly PWWS's candidate
relation) and the counter-fitted neighbour table (TextFooler-style swaps), as configured.
Smoothing swaps lexicon words for their counter-fitted neighbours; the evaluation splits of a
smoothed student hold each example's copies, consecutive (:func:`encode_defended_splits`).

:func:`build_defense_resources` and :func:`encode_defended_splits` take the whole config: which
tables to build is the search space's (the defenses candidates may carry), how is the ``defense``
section's, where the synonym sources come from the ``attack`` section and ``run.cache_dir``, and the
defended splits are tokenised at ``data.max_length``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rosearch.attack.resources import load_neighbors, prepare_textattack
from rosearch.data.batching import EncodedSplit
from rosearch.config import Config, SearchSpaceConfig
from rosearch.data.tasks import Example, encode_examples
from rosearch.defense.names import SMOOTHING, SYNONYM_ENCODING, TYPO_ENCODING
from rosearch.defense.pipeline import Defense, DefenseResources
from rosearch.defense.synonym_encoding import build_clusters
from rosearch.defense.typo_encoding import build_typo_codes
from rosearch.defense.wordnet_synonyms import wordnet_relations
from rosearch.defense.words import word_counts

logger = logging.getLogger(__name__)


def defense_key(names: Sequence[str]) -> str:
    """How a set of defenses is named in :attr:`SearchInputs.defended_splits` (``+``-joined)."""
    return "+".join(names)


def defense_combinations(space: SearchSpaceConfig) -> list[tuple[str, ...]]:
    """Every non-empty defense set a candidate of this search ``space`` may carry: the always-on defenses
    plus any subset of the choices, each in application order."""
    out = []
    for k in range(len(space.defense_choices) + 1):
        for chosen in itertools.combinations(space.defense_choices, k):
            names = tuple(n for n in space.defenses_used() if n in set(space.defenses) | set(chosen))
            if names:
                out.append(names)
    return out


def build_defense_resources(config: Config, lexicon_texts: Sequence[str]) -> DefenseResources:
    """Lexicon counts from ``lexicon_texts`` and, when some candidate may carry them, the synonym
    clusters, the typo code table and smoothing's neighbour table over that vocabulary."""
    cfg = config.defense
    start = time.perf_counter()
    counts = word_counts(lexicon_texts)
    synonyms: dict[str, str] = {}
    used = config.search_space.defenses_used()
    neighbours: dict[str, tuple[str, ...]] = {}
    if SMOOTHING in used:  # the lexicon's words only: the table travels with an exported student
        neighbours = {w: tuple(n) for w, n in load_neighbors(config.attack.neighbors_path).items() if w in counts and n}
    if SYNONYM_ENCODING in used:
        relations: dict[str, set[str]] = {}
        sources: list[Mapping[str, Sequence[str]]] = []
        if "wordnet" in cfg.synonym_sources:
            prepare_textattack(config.attack, config.run.cache_dir)  # provisions nltk's WordNet layout
            sources.append(wordnet_relations(sorted(counts)))
        if "counterfitted" in cfg.synonym_sources:
            sources.append(load_neighbors(config.attack.neighbors_path))
        for source in sources:
            for word, related in source.items():
                relations.setdefault(word, set()).update(related)
        synonyms = build_clusters(counts, relations)
    typo_codes: dict[str, str] = {}
    if TYPO_ENCODING in used:
        typo_codes = build_typo_codes(encoded_counts(counts, synonyms), max_distance=cfg.typo_edit_distance,
                                      min_ratio=cfg.typo_min_ratio, anchor_count=cfg.typo_anchor_count)
    resources = DefenseResources(counts=dict(counts), synonyms=synonyms, typo_codes=typo_codes,
                                 max_distance=cfg.max_edit_distance, backoff=cfg.backoff, neutral_word=cfg.neutral_word,
                                 neighbours=neighbours, smoothing_copies=cfg.smoothing_copies,
                                 smoothing_rate=cfg.smoothing_rate)
    tables = [f"{len(synonyms)} words synonym-encoded into {len(set(synonyms.values()))} clusters"] if synonyms else []
    tables += [f"{len(neighbours)} words smoothing may swap"] if neighbours else []
    tables += [f"{len(typo_codes)} words typo-encoded into {len(set(typo_codes.values()))} heads"] if typo_codes else []
    logger.info("defense: lexicon of %d words from %d training texts%s (%.1fs)", len(counts), len(lexicon_texts),
                "".join(f"; {t}" for t in tables), time.perf_counter() - start)
    return resources


def encoded_counts(counts: Mapping[str, int], synonyms: Mapping[str, str]) -> Counter[str]:
    """Word counts as typo encoding sees them: after synonym encoding (which runs before it), so its
    codes are synonym representatives and the composition stays idempotent."""
    out: Counter[str] = Counter()
    for word, count in counts.items():
        out[synonyms.get(word, word)] += count
    return out


def defend_examples(defense: Defense, examples: Sequence[Example]) -> list[Example]:
    """``examples`` with the defense applied to every text (labels unchanged)."""
    return [Example(text_a=defense.apply(e.text_a), text_b=None if e.text_b is None else defense.apply(e.text_b),
                    label=e.label) for e in examples]


def copied_examples(defense: Defense, examples: Sequence[Example]) -> list[Example]:
    """Each example as the ``defense.copies_per_text`` copies a smoothed student is measured on, consecutive
    (each copy keeps the label; :func:`rosearch.defense.smoothed_logits` joins their logits back)."""
    out = []
    for e in examples:
        seconds = defense.copies(e.text_b) if e.text_b is not None else [None] * defense.copies_per_text
        out.extend(Example(text_a=a, text_b=b, label=e.label) for a, b in zip(defense.copies(e.text_a), seconds))
    return out


def _copies_tag(defense: Defense, split: str) -> str:
    """What the fingerprint of a split of copies adds (nothing for one copy per example)."""
    if split == "train" or defense.copies_per_text == 1:
        return ""
    return f"|copies={defense.copies_per_text},rate={defense.resources.smoothing_rate}"


def encode_defended_splits(
    config: Config, resources: DefenseResources, splits: Mapping[str, tuple[Sequence[Example], EncodedSplit]],
    tokenizer: Any, num_labels: int,
) -> dict[str, dict[str, EncodedSplit]]:
    """For every defense set of the run, each named split as that defended student sees it: ``train``
    through :meth:`Defense.apply` (what it learns from), every other split as its copies (one per
    example unless the set smooths: :func:`copied_examples`)."""
    out: dict[str, dict[str, EncodedSplit]] = {}
    for names in defense_combinations(config.search_space):
        start = time.perf_counter()
        defense = Defense(names, resources)
        key = defense_key(names)
        out[key] = {
            name: encode_examples((defend_examples if name == "train" else copied_examples)(defense, examples),
                                  tokenizer, config.data.max_length,
                                  f"{split.fingerprint}|defense={key}{_copies_tag(defense, name)}", num_labels)
            for name, (examples, split) in splits.items()
        }
        logger.info("defense: %s applied to %s in %.1fs", key, ", ".join(splits), time.perf_counter() - start)
    return out
