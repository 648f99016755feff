"""The validation slice (disjoint from what students and teacher train on, and from dev), and task metrics."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from rosearch.config import config_from_dict
from rosearch.data.tasks import load_examples, subset_indices
from rosearch.data.validation import binary_f1, majority_rate, plan_validation, validation_size, word_count


def _config(**data):
    sections = {"run": {"seed": 5}, "data": {}, "teacher": {}}
    for section, values in data.items():
        sections[section] = values
    return config_from_dict(sections)


def _plan(config, n_train, word_counts=None):
    """The slice a run of ``config`` carves (prepare_inputs passes these sections)."""
    return plan_validation(config.data, n_train, word_counts, seed=config.run.seed,
                           teacher_limit=config.teacher.train_limit)


def test_slice_is_outside_the_students_and_the_teachers_subsets():
    n = 20_000
    config = _config(data={"train_limit": 3000, "validation_size": 1000}, teacher={"train_limit": 8000})
    plan = _plan(config, n)
    val = set(plan.validation)
    assert len(val) == 1000 and plan.student_keep is None and plan.overlaps_teacher == 0
    assert not val & set(subset_indices(n, 3000, 5))  # the students' distillation subset
    assert not val & set(subset_indices(n, 8000, 5))  # the teacher's fine-tuning subset, left as it was
    assert _plan(config, n) == plan  # seeded: the same slice every time


def test_slice_prefers_examples_only_the_teacher_saw_when_nothing_else_is_left():
    config = _config(data={"train_limit": 500, "validation_size": 400})  # the teacher fine-tuned on all of train
    plan = _plan(config, 2000)
    assert len(plan.validation) == 400 and plan.overlaps_teacher == 400 and plan.student_keep is None
    assert not set(plan.validation) & set(subset_indices(2000, 500, 5))


def test_students_on_the_whole_split_lose_the_slice_from_their_subset():
    config = _config(data={"validation_size": 1000})
    plan = _plan(config, 2490)  # RTE-sized: capped at 20% of train
    assert validation_size(config.data, 2490) == 498 == len(plan.validation)
    assert len(plan.student_keep) == 2490 - 498
    assert not set(plan.validation) & set(plan.student_keep)  # positions = indices: the students used all of train


def test_slice_with_a_minimum_length_takes_only_long_examples_outside_both_subsets():
    n = 20_000
    counts = [(i * 7919) % 23 + 1 for i in range(n)]  # 1..23 words, spread over the indices
    config = _config(data={"train_limit": 3000, "validation_size": 1000, "validation_min_words": 10},
                     teacher={"train_limit": 8000})
    plan = _plan(config, n, counts)
    assert len(plan.validation) == 1000 and plan.overlaps_teacher == 0
    assert min(counts[i] for i in plan.validation) >= 10
    assert not set(plan.validation) & (set(subset_indices(n, 3000, 5)) | set(subset_indices(n, 8000, 5)))
    assert _plan(config, n, counts) == plan
    unfiltered = _plan(_config(data={"train_limit": 3000, "validation_size": 1000}, teacher={"train_limit": 8000}),
                       n, counts)
    assert min(counts[i] for i in unfiltered.validation) < 10  # the field is what filters


def test_slice_with_too_few_long_examples_names_the_field():
    config = _config(data={"validation_size": 100, "validation_min_words": 5})
    with pytest.raises(ValueError, match="data.validation_min_words"):
        _plan(config, 2000, [4] * 1950 + [5] * 50)
    with pytest.raises(ValueError, match="word count"):
        _plan(config, 2000)


def test_minimum_length_counts_both_texts_and_must_not_be_negative():
    assert word_count("a  fine film", None) == 3 and word_count("is it", "yes it is") == 5
    with pytest.raises(Exception, match="data.validation_min_words"):
        _config(data={"validation_min_words": -1})


def test_search_inputs_select_on_a_slice_disjoint_from_distillation_and_dev(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    from rosearch.prepare.inputs import prepare_inputs

    config = config_from_dict({
        "run": {"cache_dir": str(tmp_path / "cache"), "seed": 1, "device": "cpu"},
        "data": {"task": "sst2", "data_dir": str(tiny_sst2_dir), "max_length": 32, "train_limit": 150,
                 "validation_size": 40},
        "teacher": {"model": str(tiny_teacher_dir), "finetuned": True},
        "search_space": {"hidden_sizes": [32], "embedding_sizes": [16], "attention_heads": [2]},
        "attack": {"enabled": True, "proxy": False, "num_examples": 10, "nltk_data": str(tmp_path / "nltk")},
    })
    inputs = prepare_inputs(config, torch.device("cpu"))
    train = load_examples("sst2", "train", str(tiny_sst2_dir))
    plan = _plan(config, len(train))
    assert len(inputs.val) == 40 and len(inputs.train) == 150
    assert not set(plan.validation) & set(subset_indices(len(train), 150, 1))
    val_texts = {train[i].text_a for i in plan.validation}
    assert all(e.text_a in val_texts for e in inputs.attack_examples)  # attacks sample the slice, not dev
    dev = load_examples("sst2", "dev", str(tiny_sst2_dir))
    assert len(inputs.dev) == len(dev)  # dev is whole and held out: the slice comes from train only
    assert inputs.split_stats["val_majority_rate"] == majority_rate(inputs.val.labels, 2)
    assert inputs.split_stats["dev_majority_rate"] == 0.5  # the tiny dev split alternates labels


def test_majority_rate_and_f1_by_hand():
    assert majority_rate(np.array([1, 1, 1, 0]), 2) == 0.75
    # predictions 1 1 0 0 1 vs labels 1 0 1 0 1: tp 2, fp 1, fn 1 -> F1 = 4 / 6
    assert binary_f1(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 1, 0, 1])) == pytest.approx(4 / 6)
    assert binary_f1(np.zeros(4, int), np.array([1, 0, 1, 0])) == 0.0  # a one-class predictor scores 0 F1
