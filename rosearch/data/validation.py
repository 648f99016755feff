"""The search's validation slice and the task metrics every accuracy is shown with.

A search that selects students on the dev split and then reports dev numbers reports a biased
figure. So selection uses a seeded slice of the *train* split instead, carved from examples
neither the students distil on nor (where enough remain) the teacher fine-tuned on; the dev split
is only evaluated for reporting. The teacher's subset is left exactly as it was, so a cached
fine-tuned teacher stays valid.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rosearch.config import VALIDATION_MAX_SHARE, DataConfig
from rosearch.data.tasks import subset_indices

logger = logging.getLogger(__name__)

F1_TASKS = frozenset({"mrpc", "qqp"})  # GLUE reports F1 of the positive class beside accuracy for these


@dataclass(frozen=True)
class ValidationPlan:
    """Which train indices the slice takes and which the students distil on (sorted, disjoint)."""

    validation: list[int]
    student_keep: list[int] | None  # positions of the students' split they keep (None: all of it, unchanged)
    overlaps_teacher: int  # slice examples the teacher fine-tuned on (0 unless train was too small)


def validation_size(data: DataConfig, n_train: int) -> int:
    """The slice size: ``data.validation_size``, at most VALIDATION_MAX_SHARE of the train split."""
    return min(data.validation_size, int(n_train * VALIDATION_MAX_SHARE))


def plan_validation(data: DataConfig, n_train: int, word_counts: Sequence[int] | None = None, *, seed: int,
                    teacher_limit: int | None) -> ValidationPlan:
    """Carve the seeded validation slice out of ``n_train`` train indices (see the module docstring).

    ``seed`` is ``run.seed`` and ``teacher_limit`` is ``teacher.train_limit``: the slice avoids the
    students' subset (``data.train_limit``) and the teacher's, both drawn with that seed. Preference: outside both the students' and the teacher's subsets; then outside the students'
    only (the teacher saw those sentences, the students did not); and only when the students
    use (nearly) the whole split are the slice's examples taken out of their subset. With
    ``data.validation_min_words`` set, only indices whose ``word_counts`` reach it are eligible.
    """
    size = validation_size(data, n_train)
    if size < 1:
        raise ValueError(f"train split of {n_train} examples is too small for a validation slice "
                         "(fix: set data.validation_size=0 to select on dev)")
    everything = set(range(n_train))
    eligible = _eligible(data, n_train, word_counts)
    if len(eligible) < size:
        raise ValueError(f"only {len(eligible)} train examples have >= {data.validation_min_words} words, fewer "
                         f"than the {size} the validation slice needs (fix: lower data.validation_min_words or "
                         "data.validation_size)")
    student = set(subset_indices(n_train, data.train_limit, seed) or everything)
    teacher = set(subset_indices(n_train, teacher_limit, seed) or everything)
    rng = random.Random(seed + 7919)  # its own stream: the subsets above keep their seeded draws
    free = sorted(eligible - student - teacher)
    if len(free) >= size:
        return ValidationPlan(sorted(rng.sample(free, size)), None, 0)
    seen_by_teacher = sorted(eligible - student - set(free))
    if len(free) + len(seen_by_teacher) >= size:
        chosen = free + rng.sample(seen_by_teacher, size - len(free))
        logger.warning("validation slice: only %d train examples are outside both the students' and the teacher's "
                       "subsets; %d of the %d slice examples were seen by the teacher", len(free), size - len(free), size)
        return ValidationPlan(sorted(chosen), None, size - len(free))
    in_student = sorted(eligible & student)
    chosen = set(rng.sample(in_student, size - len(free) - len(seen_by_teacher))) | set(free) | set(seen_by_teacher)
    logger.warning("validation slice: the students distil on (nearly) the whole train split; %d of its %d examples "
                   "are taken out of their subset", len(chosen & student), size)
    keep = [position for position, index in enumerate(sorted(student)) if index not in chosen]
    return ValidationPlan(sorted(chosen), keep, len(chosen & teacher))


def _eligible(data: DataConfig, n_train: int, word_counts: Sequence[int] | None) -> set[int]:
    """Indices that may enter the slice: all, or those with at least ``data.validation_min_words`` words."""
    minimum = data.validation_min_words
    if minimum <= 0:
        return set(range(n_train))
    if word_counts is None or len(word_counts) != n_train:
        raise ValueError("data.validation_min_words needs the word count of every train example")
    return {i for i, count in enumerate(word_counts) if count >= minimum}


def word_count(text_a: str, text_b: str | None) -> int:
    """Whitespace words of an example (both texts of a pair), as ``data.validation_min_words`` counts them."""
    return len(text_a.split()) + (len(text_b.split()) if text_b else 0)


def majority_rate(labels: np.ndarray, num_labels: int) -> float:
    """Accuracy of always predicting the split's most frequent label (what a useless model scores)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float(np.bincount(labels, minlength=num_labels).max() / len(labels))


def binary_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE reports for MRPC and QQP; 0 when it is never hit."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    tp = int(np.sum((predictions == 1) & (labels == 1)))
    fp = int(np.sum((predictions == 1) & (labels != 1)))
    fn = int(np.sum((predictions != 1) & (labels == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
