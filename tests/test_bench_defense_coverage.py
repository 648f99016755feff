"""bench/defense_coverage.py: the candidate families and the surface count, on hand-checkable cases."""

from __future__ import annotations

import importlib
import string

import pytest
from conftest import REPO_ROOT


@pytest.fixture
def coverage(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    return importlib.import_module("defense_coverage")


def test_one_letter_edits_are_deepwordbugs_four_kinds_and_exclude_the_word(coverage):
    letters = string.ascii_lowercase
    expected = {"ba"} | {"a", "b"}  # the adjacent swap, the deletions
    expected |= {w[:i] + c + w[i:] for w in ["ab"] for i in range(3) for c in letters}  # insertions
    expected |= {c + "b" for c in letters} | {"a" + c for c in letters}  # substitutions
    assert coverage.one_letter_edits("ab") == expected - {"ab"}


def test_surface_counts_words_with_a_crossing_candidate_and_sentences_with_none(coverage):
    clusters = {"fine": "good", "great": "good", "poor": "bad"}
    family = {"good": ("fine", "great"), "bad": ("poor", "weak"), "film": ()}
    result = coverage.surface([["good", "film"], ["bad", "good"]], lambda w: clusters.get(w, w),
                              lambda w: family.get(w, ()))
    # "good": every synonym in its cluster (closed); "bad": "weak" crosses; "film" has no candidates
    assert result == {"words_with_candidates": 3, "crossing_share": 1 / 3, "sentences_without_a_crossing_word": 0.5}
