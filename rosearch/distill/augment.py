"""The ``augment`` method's data: the transfer set augmented with TextAttack augmenters.

A seeded subset of training examples (``augment.limit``) gets ``augment.per_example`` copies
each, the augmenters of ``augment.recipes`` taken in turn (so their shares stay equal); each
copy changes ``augment.pct_words`` of its words (at least one). Copies identical to their
original are dropped. The teacher labels the copies with soft targets (the trainer's KD
targets), so a copy whose change flips the meaning is still taught correctly — the reason
augmentation belongs with distillation (TinyBERT's data augmentation works the same way).

The texts are computed once per (examples, settings) and cached as JSON under
``<cache_dir>/augment/``; augmentation is seeded per example, and candidate lists are sorted
before TextAttack's random choices (its transformations return candidates in ``set`` order,
which changes between Python processes), so the same settings give the same texts anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import random
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rosearch.attack.resources import load_neighbors, prepare_textattack, require_wordnet
from rosearch.data.batching import collate
from rosearch.files.cache import AUGMENTED_COPIES, check_key, read_entry, write_text_atomically
from rosearch.choices import AUGMENT_RECIPE_NAMES as AUGMENT_RECIPES  # described in distill.methods
from rosearch.config import AttackConfig, DistillConfig
from rosearch.data.tasks import Example, encode_examples, subset_indices
from rosearch.distill.inputs import MethodInputsError
from rosearch.distill.losses import kd_loss
from rosearch.distill.protocol import DistillMethod, MethodRun, PrepareContext, StudentContext, batch_stream, forward
from rosearch.distill.teacher_cache import load_or_compute_teacher_outputs

logger = logging.getLogger(__name__)

CACHE_SUBDIR = AUGMENTED_COPIES.folder
_PROGRESS_STEPS = 10


class AugmentError(ValueError):
    """An augmentation setting is impossible (unknown augmenter, bad share, ...)."""


@dataclass(frozen=True)
class AugmentedExamples:
    """The augmented copies, each with the clean row it came from and the augmenter that made it."""

    examples: tuple[Example, ...]
    sources: tuple[int, ...]  # row of the clean split
    recipes: tuple[str, ...]
    key: str  # the cache key: identifies examples + settings + TextAttack version

    def counts(self) -> dict[str, int]:
        """Copies per augmenter."""
        return {name: self.recipes.count(name) for name in dict.fromkeys(self.recipes)}


def _examples_digest(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(f"{e.text_a}\0{e.text_b}\0{e.label}\n".encode())
    return digest.hexdigest()


def _file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def augment_key(
    examples: Sequence[Example], *, recipes: Sequence[str], per_example: int, limit: int | None,
    pct_words: float, seed: int, attack: AttackConfig,
) -> str:
    """Cache key of one augmentation: inputs, settings, the neighbour table's content, TextAttack version."""
    return AUGMENTED_COPIES.key({
        "examples": _examples_digest(examples), "recipes": list(recipes),
        "per_example": per_example, "limit": limit, "pct_words": pct_words, "seed": seed,
        "neighbors": _file_digest(attack.neighbors_path) if "neighbors" in recipes and attack.neighbors_path else None,
        "textattack": importlib.metadata.version("textattack"),
    })


def _check(recipes: Sequence[str], per_example: int, pct_words: float) -> None:
    unknown = [r for r in recipes if r not in AUGMENT_RECIPES]
    if not recipes or unknown:
        raise AugmentError(
            f"augment recipes {list(recipes)} must be a non-empty list of {', '.join(AUGMENT_RECIPES)} "
            "(fix: distill.augment.recipes)"
        )
    if per_example < 1:
        raise AugmentError(f"augment per_example must be >= 1, got {per_example} (fix: distill.augment.per_example)")
    if not 0.0 < pct_words <= 1.0:
        raise AugmentError(f"augment pct_words must be in (0, 1], got {pct_words} (fix: distill.augment.pct_words)")


def build_augmenters(
    recipes: Sequence[str], attack: AttackConfig, *, pct_words: float, cache_dir: str | Path
) -> dict[str, Any]:
    """One TextAttack ``Augmenter`` per recipe name (resources checked first, clear errors).

    Each returns one copy per call, with TextAttack's default augmentation constraints
    (RepeatModification, StopwordModification) and candidates sorted before every random choice.
    """
    _check(recipes, 1, pct_words)
    if {"wordnet", "insert"} & set(recipes):
        require_wordnet(attack.wordnet_dir)
    table = load_neighbors(attack.neighbors_path) if "neighbors" in recipes else {}
    prepare_textattack(attack, cache_dir)  # before the first `import textattack`
    classes = _textattack_classes()
    transformations = {
        "wordnet": classes.wordnet,
        "neighbors": lambda: classes.NeighborSwap(table),
        "insert": classes.SortedSynonymInsertion,
        "char": classes.char,
    }
    return {
        name: classes.SortedAugmenter(
            transformations[name](), constraints=classes.default_constraints(),
            pct_words_to_swap=pct_words, transformations_per_example=1,
        )
        for name in recipes
    }


def _textattack_classes() -> Any:
    """The TextAttack pieces of the augmenters; textattack is imported only here."""
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack.augmentation import Augmenter
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.transformations import (
        CompositeTransformation,
        WordSwap,
        WordSwapNeighboringCharacterSwap,
        WordSwapRandomCharacterDeletion,
        WordSwapRandomCharacterInsertion,
        WordSwapRandomCharacterSubstitution,
        WordSwapWordNet,
    )
    from textattack.transformations.word_insertions import WordInsertionRandomSynonym
    from textattack.transformations.word_swaps.word_swap_embedding import recover_word_case

    class SortedAugmenter(Augmenter):
        """An Augmenter whose random choice among candidates does not depend on set order."""

        def _filter_transformations(self, transformed_texts, current_text, original_text):
            kept = super()._filter_transformations(transformed_texts, current_text, original_text)
            return sorted(kept, key=lambda t: t.text)

    class SortedSynonymInsertion(WordInsertionRandomSynonym):
        """WordNet synonym insertion choosing from a sorted synonym list (not set order)."""

        def _get_synonyms(self, word):
            return sorted(super()._get_synonyms(word))

    class NeighborSwap(WordSwap):
        """Swap a word for one of its counter-fitted neighbours (case of the original kept)."""

        def __init__(self, table: Mapping[str, tuple[str, ...]]) -> None:
            super().__init__()
            self.table = table

        def _get_replacement_words(self, word):
            return [recover_word_case(n, word) for n in self.table.get(word.lower(), ())]

    def char() -> CompositeTransformation:  # TextAttack's CharSwapAugmenter transformation
        return CompositeTransformation([
            WordSwapNeighboringCharacterSwap(), WordSwapRandomCharacterSubstitution(),
            WordSwapRandomCharacterDeletion(), WordSwapRandomCharacterInsertion(),
        ])

    class EnglishWordNetSwap(WordSwapWordNet):
        """WordSwapWordNet for English. Its constructor would ask nltk to download omw-1.4 (the
        multilingual WordNet, unused for English; a network call that fails offline); the
        English WordNet is the one prepare_textattack provisions."""

        def __init__(self) -> None:
            self.language = "eng"

    return types.SimpleNamespace(
        SortedAugmenter=SortedAugmenter, SortedSynonymInsertion=SortedSynonymInsertion, NeighborSwap=NeighborSwap,
        char=char, wordnet=EnglishWordNetSwap,
        default_constraints=lambda: [RepeatModification(), StopwordModification()],
    )


@contextlib.contextmanager
def _seeded_globals(seed_text: str) -> Iterator[None]:
    """TextAttack draws from the global ``random`` / numpy RNGs: seed them, then restore the caller's."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        random.seed(seed_text)
        np.random.seed(int(hashlib.sha256(seed_text.encode()).hexdigest()[:8], 16))
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _augment_text(augmenter: Any, text: str) -> str:
    copies = augmenter.augment(text)
    return copies[0] if copies else text


def augment_examples(
    examples: Sequence[Example],
    *,
    recipes: Sequence[str],
    per_example: int,
    limit: int | None,
    pct_words: float,
    seed: int,
    attack: AttackConfig,
    cache_dir: str | Path,
) -> AugmentedExamples:
    """Augmented copies of a seeded subset of ``examples`` (cached; see the module docstring).

    Copy ``k`` of the ``p``-th chosen example uses ``recipes[(p * per_example + k) % len(recipes)]``
    and is seeded by (seed, example row, k), so it does not depend on which others are chosen.
    Pair tasks augment both texts with the same augmenter.
    """
    _check(recipes, per_example, pct_words)
    key = augment_key(examples, recipes=recipes, per_example=per_example, limit=limit, pct_words=pct_words,
                      seed=seed, attack=attack)
    path = AUGMENTED_COPIES.entry(cache_dir, key, suffix=".json")
    cached = read_entry(path, lambda p: _load(p, key), what="augment", log=logger)
    if cached is not None:
        logger.info("augment: cache hit %s (%d copies: %s)", path, len(cached.examples), cached.counts())
        return cached
    chosen = subset_indices(len(examples), limit, seed)
    rows = list(range(len(examples))) if chosen is None else chosen
    augmenters = build_augmenters(recipes, attack, pct_words=pct_words, cache_dir=cache_dir)
    logger.info("augment: %d examples x %d copies with %s (%.0f%% of words each)",
                len(rows), per_example, ", ".join(recipes), 100 * pct_words)
    out: list[Example] = []
    sources: list[int] = []
    used: list[str] = []
    start = time.perf_counter()
    every = max(1, math.ceil(len(rows) / _PROGRESS_STEPS))
    for p, row in enumerate(rows):
        example = examples[row]
        for k in range(per_example):
            name = recipes[(p * per_example + k) % len(recipes)]
            with _seeded_globals(f"{seed}:{row}:{k}"):
                text_a = _augment_text(augmenters[name], example.text_a)
                text_b = None if example.text_b is None else _augment_text(augmenters[name], example.text_b)
            if text_a != example.text_a or text_b != example.text_b:
                out.append(Example(text_a, text_b, example.label))
                sources.append(row)
                used.append(name)
        if (p + 1) % every == 0 or p + 1 == len(rows):
            elapsed = time.perf_counter() - start
            logger.info("augment: %d/%d examples, %d copies, %.0fs elapsed, ETA %.0fs",
                        p + 1, len(rows), len(out), elapsed, elapsed / (p + 1) * (len(rows) - p - 1))
    result = AugmentedExamples(tuple(out), tuple(sources), tuple(used), key)
    _save(path, result, seconds=time.perf_counter() - start)
    logger.info("augment: %d copies (%s) in %.1fs -> %s", len(out), result.counts(), time.perf_counter() - start, path)
    return result


def _load(path: Path, key: str) -> AugmentedExamples:
    """The copies cached at ``path``; :class:`~rosearch.files.cache.StaleEntry` when they are another key's."""
    data = json.loads(path.read_text(encoding="utf-8"))
    check_key(data.get("key"), key)
    examples = tuple(Example(a, b, int(y)) for a, b, y in zip(data["texts_a"], data["texts_b"], data["labels"]))
    return AugmentedExamples(examples, tuple(data["sources"]), tuple(data["recipes"]), key)


def _save(path: Path, result: AugmentedExamples, *, seconds: float) -> None:
    """Write atomically (:mod:`rosearch.files.cache`): concurrent runs never see half a file."""
    data = {
        **AUGMENTED_COPIES.stamp(result.key), "seconds": round(seconds, 2), "counts": result.counts(),
        "sources": list(result.sources), "recipes": list(result.recipes),
        "texts_a": [e.text_a for e in result.examples], "texts_b": [e.text_b for e in result.examples],
        "labels": [e.label for e in result.examples],
    }
    write_text_atomically(path, json.dumps(data) + "\n")



# --------------------------------------------------------------------------------------------
# The method: the copies prepared once per run, a share of every batch per student
# --------------------------------------------------------------------------------------------


class AugmentStream(MethodRun):
    """``augment``: the share of every batch drawn from the teacher-labelled augmented copies.

    The batch keeps ``cfg.batch_size`` examples (``augment.fraction`` of them augmented) rather
    than alternating clean and augmented batches: every step then estimates the same mixed
    objective, the step budget keeps its meaning, and a step costs what a plain step costs.
    Its shuffles come from their own seeded RNG.
    """

    def __init__(self, ctx: StudentContext) -> None:
        inputs, cfg = ctx.inputs, ctx.cfg
        self.split = inputs.augmented
        self.cfg = cfg
        self.device = ctx.device
        self.batch_size = AUGMENT.batch_share(cfg)
        if not 1 <= self.batch_size <= cfg.batch_size - 1:
            raise ValueError(
                f"distill.augment.fraction={cfg.augment.fraction} of a batch of {cfg.batch_size} leaves no room for "
                "one of the two kinds (fix: a fraction nearer 0.5, or a larger distill.batch_size)"
            )
        self.logits = torch.as_tensor(np.asarray(inputs.augmented_outputs.logits, dtype=np.float32), device=ctx.device)
        if tuple(self.logits.shape) != (len(self.split), self.split.num_labels):
            raise MethodInputsError(
                f"augmented teacher logits have shape {tuple(self.logits.shape)}, the augmented split needs "
                f"({len(self.split)}, {self.split.num_labels}) (fix: rebuild the method inputs)"
            )
        self.batches = batch_stream(self.split, self.batch_size, random.Random(f"{ctx.seed}:augment"),
                                    cfg.length_bucketing)
        self.seen = 0
        self.last_size = 0  # examples of the latest augmented share (an epoch's last batch may be short)
        logger.info("augment: %d of every %d batch examples from %d augmented copies",
                    self.batch_size, cfg.batch_size, len(self.split))

    def mix(self, student: nn.Module, loss: Tensor, count: int) -> tuple[Tensor, int]:
        """The KD loss of the whole mixed batch: the example-weighted mean of both parts."""
        indices = next(self.batches)
        batch = collate(self.split, indices, self.device)
        logits = forward(student, batch, hidden=False).logits  # [Ba, C]
        part = kd_loss(logits, self.logits[batch["indices"]], batch["labels"],
                       alpha=self.cfg.alpha, temperature=self.cfg.temperature)
        self.seen += len(indices)
        self.last_size = len(indices)
        return (count * loss + len(indices) * part) / (count + len(indices)), count + len(indices)

    def stats(self) -> dict[str, float]:
        return {"augment_examples_seen": self.seen}


class Augment(DistillMethod):
    """The augment method (:class:`~rosearch.distill.protocol.DistillMethod`)."""

    name = "augment"
    description = ("transfer set augmented with TextAttack augmenters (WordNet / counter-fitted neighbour swaps, "
                   "synonym insertion, character edits), labelled by the teacher once; a share of every batch "
                   "(Jiao et al., TinyBERT, 2020; Wei & Zou, EDA, 2019; Morris et al., TextAttack, 2020)")

    def needs_inputs(self) -> bool:
        return True

    def prepare(self, ctx: PrepareContext) -> dict[str, Any]:
        """Augmented copies (cached texts), encoded, with the teacher's logits on them (cached)."""
        config, train = ctx.config, ctx.train
        knobs = config.distill.augment
        augmented = augment_examples(
            ctx.train_examples, recipes=knobs.recipes, per_example=knobs.per_example,
            limit=knobs.limit, pct_words=knobs.pct_words, seed=config.run.seed,
            attack=config.attack, cache_dir=config.run.cache_dir,
        )
        if not augmented.examples:
            raise MethodInputsError(
                "augmentation produced no copy that differs from its original (fix: raise distill.augment.limit or "
                "distill.augment.pct_words, or add augmenters to distill.augment.recipes)"
            )
        split = encode_examples(
            list(augmented.examples), ctx.tokenizer, config.data.max_length,
            f"{train.fingerprint}-augment-{augmented.key[:16]}", train.num_labels,
        )
        outputs = load_or_compute_teacher_outputs(
            ctx.teacher, ctx.teacher_dir, split, layers=(), batch_size=config.teacher.eval_batch_size,
            device=ctx.device, cache_dir=config.run.cache_dir,
        )
        return {"augmented": split, "augmented_outputs": outputs, "augmented_sources": augmented.sources}

    def batch_share(self, cfg: DistillConfig) -> int:
        return int(round(cfg.augment.fraction * cfg.batch_size))

    def start(self, ctx: StudentContext) -> AugmentStream:
        return AugmentStream(ctx)


AUGMENT = Augment()
