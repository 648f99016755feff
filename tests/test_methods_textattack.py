"""The methods that run TextAttack: augmentation of the transfer set, the once-per-run method inputs,
and adversarial fine-tuning, end to end on the tiny teacher and toy SST-2 (textattack imported once)."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_sentence
from test_methods import changed, make_student, weights
from transformers import AutoTokenizer, BertForSequenceClassification

from rosearch.attack.resources import prepare_textattack, wordnet_available
from rosearch.config import AttackConfig, config_from_dict
from rosearch.data.tasks import Example, load_split
from rosearch.distill.augment import augment_examples
from rosearch.distill.methods import prepare_method_inputs
from rosearch.distill.teacher_cache import compute_teacher_outputs
from rosearch.distill.trainer import distill
from rosearch.data.predictions import predict_logits

pytestmark = pytest.mark.usefixtures("single_thread")

NEIGHBORS = {"good": ["fine", "nice"], "bad": ["poor", "awful"], "movie": ["film"], "film": ["movie"],
             "dull": ["boring", "tedious"], "great": ["superb", "brilliant"], "story": ["plot"], "plot": ["story"]}


@pytest.fixture(scope="module")
def attack_cfg(tmp_path_factory) -> AttackConfig:
    """A neighbour table and NLTK data in pytest's tmp dir; textattack imported once (~10 s)."""
    root = tmp_path_factory.mktemp("textattack")
    table = root / "neighbors.json"
    table.write_text(json.dumps(NEIGHBORS))
    cfg = AttackConfig(nltk_data=str(root / "nltk"), neighbors_path=str(table), recipe="deepwordbug",
                       model_batch_size=8, seed=0)
    prepare_textattack(cfg, root)
    import textattack  # noqa: F401

    return cfg


def toy_examples(n: int, pair: bool = False) -> list[Example]:
    rng = random.Random(5)
    return [Example(make_sentence(rng, i % 2), make_sentence(rng, 1 - i % 2) if pair else None, i % 2) for i in range(n)]


def test_augmentation_is_seeded_cached_and_alternates_recipes(attack_cfg, tmp_path):
    examples = toy_examples(30)
    kwargs = dict(recipes=("char", "neighbors"), per_example=2, limit=12, pct_words=0.2, seed=1, attack=attack_cfg)
    first = augment_examples(examples, cache_dir=tmp_path / "a", **kwargs)
    fresh = augment_examples(examples, cache_dir=tmp_path / "b", **kwargs)  # recomputed elsewhere: same texts
    assert first.examples == fresh.examples and first.sources == fresh.sources and first.key == fresh.key
    cached = augment_examples(examples, cache_dir=tmp_path / "a", **kwargs)
    assert cached == first
    assert 12 <= len(first.examples) <= 24 and len(set(first.sources)) <= 12
    for copy, source, recipe in zip(first.examples, first.sources, first.recipes):
        original = examples[source]
        assert copy.text_a != original.text_a and copy.label == original.label
        if recipe == "neighbors":  # a swap from the table, word count unchanged
            assert len(copy.text_a.split()) == len(original.text_a.split())
    assert set(first.counts()) == {"char", "neighbors"}
    other_seed = augment_examples(examples, cache_dir=tmp_path / "a", **{**kwargs, "seed": 2})
    assert other_seed.examples != first.examples


def test_pairs_augment_both_texts(attack_cfg, tmp_path):
    examples = toy_examples(6, pair=True)
    out = augment_examples(examples, recipes=("char",), per_example=1, limit=None, pct_words=0.5, seed=0,
                           attack=attack_cfg, cache_dir=tmp_path)
    assert out.examples and all(e.text_b is not None for e in out.examples)
    assert any(e.text_b != examples[s].text_b for e, s in zip(out.examples, out.sources))


@pytest.mark.skipif(not wordnet_available(),
                    reason="WordNet 3.0 is not installed (apt-get install wordnet-base wordnet-sense-index)")
def test_wordnet_augmenters(attack_cfg, tmp_path):
    examples = [Example("the movie was good and the story was great", None, 1)] * 3
    out = augment_examples(examples, recipes=("wordnet", "insert"), per_example=1, limit=None, pct_words=0.3,
                           seed=0, attack=attack_cfg, cache_dir=tmp_path)
    assert out.recipes and set(out.recipes) <= {"wordnet", "insert"}
    inserted = [e for e, r in zip(out.examples, out.recipes) if r == "insert"]
    assert all(len(e.text_a.split()) > 9 for e in inserted)


@pytest.fixture(scope="module")
def run_config(attack_cfg, tiny_sst2_dir, tiny_teacher_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("run-cache")
    return config_from_dict({
        "run": {"cache_dir": str(cache), "seed": 0},
        "data": {"task": "sst2", "data_dir": str(tiny_sst2_dir), "max_length": 32, "train_limit": 64},
        "teacher": {"model": str(tiny_teacher_dir), "finetuned": True, "eval_batch_size": 32},
        "distill": {
            "methods": ["augment", "mate_kd", "adv_finetune"], "max_steps": 40, "batch_size": 8,
            "learning_rate": 3e-3,
            "augment": {"recipes": ["char", "neighbors"], "limit": 20, "per_example": 2},
            "mate_kd": {"generator_every": 10, "pretrain_steps": 5, "generator_layers": 1},
            "adv_finetune": {"examples": 12, "steps": 3, "recipe": "deepwordbug", "lr": 1e-3},
        },
        "attack": {"neighbors_path": attack_cfg.neighbors_path, "nltk_data": attack_cfg.nltk_data,
                   "model_batch_size": 8},
    })


def test_method_inputs_end_to_end(run_config, tiny_teacher_dir, caplog):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    examples, train = load_split(run_config.data, "train", tokenizer, run_config.run.cache_dir, 0)
    inputs = prepare_method_inputs(run_config, teacher_dir=str(tiny_teacher_dir), train_examples=examples,
                                   train=train, device="cpu")
    assert inputs.methods == ("augment", "mate_kd", "adv_finetune")
    assert 20 <= len(inputs.augmented) <= 40 and len(inputs.augmented_sources) == len(inputs.augmented)
    teacher = BertForSequenceClassification.from_pretrained(tiny_teacher_dir)
    expected = predict_logits(teacher, inputs.augmented, batch_size=16, device="cpu")
    np.testing.assert_allclose(inputs.augmented_outputs.logits, expected, atol=1e-5)
    assert (tiny_teacher_dir / "config.json").is_file() and inputs.generator_dir
    assert inputs.train_examples == tuple(examples) and inputs.text_columns == ("sentence",)
    assert inputs.mask_token_id == tokenizer.mask_token_id and tokenizer.pad_token_id in inputs.special_token_ids

    with caplog.at_level(logging.INFO, logger="rosearch.distill"):
        again = prepare_method_inputs(run_config, teacher_dir=str(tiny_teacher_dir), train_examples=examples,
                                      train=train, device="cpu")
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "augment: cache hit" in messages and "generator cache hit" in messages
    assert again.augmented.fingerprint == inputs.augmented.fingerprint

    outputs = compute_teacher_outputs(teacher.eval(), train, layers=(), batch_size=32, device="cpu")
    student = make_student(tokenizer.vocab_size)
    before = weights(student)
    result = distill(student, train, outputs, run_config.distill, seed=0, device="cpu", method_inputs=inputs)
    stats = result.method_stats
    assert changed(before, student) and not student.training
    assert 40 * 3 <= stats["augment_examples_seen"] <= 40 * 4  # 4 per step (an epoch's last batch may be short)
    assert stats["mate_kd_generator_updates"] == 4  # at steps 1, 11, 21, 31
    assert stats["adv_attacked"] == 12 and stats["adv_successful"] >= 1
    assert stats["adv_examples"] == stats["adv_successful"]  # failed attacks are not training material
    assert stats["adv_finetune_steps"] == 3 and np.isfinite(stats["adv_finetune_final_loss"])
    assert result.train_seconds >= stats["kd_seconds"] + stats["adv_finetune_seconds"]

    # adv_finetune really moves the student: the same run without its fine-tuning ends elsewhere
    plain = make_student(tokenizer.vocab_size)
    no_adv = replace(run_config.distill, methods=("augment", "mate_kd"))
    distill(plain, train, outputs, no_adv, seed=0, device="cpu", method_inputs=inputs)
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), student.state_dict().values()))
