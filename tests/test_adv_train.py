"""adv_train: iterative adversarial training inside KD, end to end on the tiny teacher and toy SST-2
(real DeepWordBug attacks on a tiny student; the teacher labels the raw adversarial texts)."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_methods import changed, make_student, weights
from test_methods_textattack import attack_cfg  # noqa: F401  (module fixture: textattack set up once)
from transformers import AutoTokenizer, BertForSequenceClassification

from rosearch.config import ConfigError, config_from_dict
from rosearch.data.tasks import encode_examples, load_split
from rosearch.defense.pipeline import Defense, DefenseResources
from rosearch.defense.words import word_counts
from rosearch.distill.adv_train import AdversarialPool, round_steps
from rosearch.distill.methods import MethodInputsError, prepare_method_inputs
from rosearch.distill.teacher_cache import compute_teacher_outputs
from rosearch.distill.trainer import distill
from rosearch.data.predictions import predict_logits

pytestmark = pytest.mark.usefixtures("single_thread")

SYNONYMS = {"movie": "film", "story": "plot", "cast": "acting"}  # a toy synonym encoding


class CountingDefense(Defense):
    """A real defense that counts the texts it is applied to (the attack must query through it)."""

    calls = 0

    def apply(self, text: str) -> str:
        CountingDefense.calls += 1
        return super().apply(text)


def adv_config(attack_cfg, data_dir, teacher_dir, cache, **distill_overrides):  # noqa: F811
    adv_train = {"rounds": 2, "every": 15, "examples": 16, "recipes": ["deepwordbug"], "query_budget": 60,
                 "fraction": 0.25} | distill_overrides.pop("adv_train", {})
    return config_from_dict({
        "run": {"cache_dir": str(cache), "seed": 0},
        "data": {"task": "sst2", "data_dir": str(data_dir), "max_length": 32, "train_limit": 64},
        "teacher": {"model": str(teacher_dir), "finetuned": True, "eval_batch_size": 32},
        "distill": {
            "methods": ["adv_train"], "max_steps": 40, "batch_size": 8, "learning_rate": 3e-3,
            "adv_train": adv_train, **distill_overrides,
        },
        "attack": {"neighbors_path": attack_cfg.neighbors_path, "nltk_data": attack_cfg.nltk_data,
                   "model_batch_size": 8},
    })


@pytest.fixture(scope="module")
def world(attack_cfg, tiny_sst2_dir, tiny_teacher_dir, tmp_path_factory):  # noqa: F811
    """Config, clean split, its teacher outputs and the method inputs of a tiny adv_train run."""
    config = adv_config(attack_cfg, tiny_sst2_dir, tiny_teacher_dir, tmp_path_factory.mktemp("adv-cache"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    examples, train = load_split(config.data, "train", tokenizer, config.run.cache_dir, 0)
    inputs = prepare_method_inputs(config, teacher_dir=str(tiny_teacher_dir), train_examples=examples, train=train,
                                   device="cpu")
    teacher = BertForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()
    outputs = compute_teacher_outputs(teacher, train, layers=(), batch_size=32, device="cpu")
    return config, tokenizer, examples, train, outputs, inputs, teacher


def test_adv_train_runs_rounds_inside_kd_and_is_seeded(world, tiny_tokenizer):
    config, tokenizer, _, train, outputs, inputs, _ = world
    assert inputs.train_examples and round_steps(config.distill) == (15, 30)
    student = make_student(tokenizer.vocab_size)
    before = weights(student)
    result = distill(student, train, outputs, config.distill, seed=0, device="cpu", method_inputs=inputs)
    stats = result.method_stats
    assert changed(before, student) and not student.training and result.steps == 40
    assert stats["adv_train_rounds"] == 2 and stats["adv_train_attacked"] == 32
    assert 1 <= stats["adv_train_pool"] <= stats["adv_train_successful"]  # only successful attacks, de-duplicated
    assert 0 < stats["adv_train_mean_queries"] <= 60  # the per-example query budget holds
    # 2 examples of each batch come from the pool once a round found some (after step 15 or 30), none before
    assert stats["adv_train_examples_seen"] in (2.0 * 25, 2.0 * 10)
    assert result.train_seconds >= stats["adv_train_seconds"] > 0

    again = make_student(tokenizer.vocab_size)
    result_again = distill(again, train, outputs, config.distill, seed=0, device="cpu", method_inputs=inputs)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values()))
    same = {k: v for k, v in result_again.method_stats.items() if "seconds" not in k}
    assert same == {k: v for k, v in stats.items() if "seconds" not in k}

    plain = make_student(tokenizer.vocab_size)  # without the rounds the student ends elsewhere
    distill(plain, train, outputs, replace(config.distill, methods=()), seed=0, device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), student.state_dict().values()))


def test_pool_holds_teacher_labelled_texts_defended_for_the_student(world):
    config, tokenizer, examples, train, outputs, inputs, teacher = world
    defense = CountingDefense(["synonym_encoding"], DefenseResources(
        counts=word_counts(e.text_a for e in examples), synonyms=SYNONYMS))
    defended_train = encode_examples([replace(e, text_a=defense.apply(e.text_a)) for e in examples], tokenizer, 32,
                                     "defended", 2)
    student = make_student(tokenizer.vocab_size)
    # hard labels only: the random tiny teacher's soft labels would keep the student near chance
    distill(student, defended_train, outputs, replace(config.distill, methods=(), alpha=0.0, max_steps=60),
            seed=0, device="cpu")
    student.train()
    pool = AdversarialPool(inputs, config.distill, defended_train,
                           torch.as_tensor(outputs.logits), seed=0, device=torch.device("cpu"), defense=defense)
    CountingDefense.calls = 0
    pool.maybe_round(student, 14)  # not due: nothing happens
    assert CountingDefense.calls == 0 and pool.round_index == 0
    pool.maybe_round(student, 15)
    pool.maybe_round(student, 30)  # two rounds: two fresh samples of 16 training texts
    assert pool.round_index == 2 and CountingDefense.calls > len(pool.examples)  # the attack's queries went through the defense
    assert student.training  # handed back in train mode
    assert pool.examples, "the toy student should lose some attacks"
    raw = encode_examples(pool.examples, tokenizer, 32, "raw", 2)
    np.testing.assert_allclose(pool.logits.numpy(), predict_logits(teacher, raw, batch_size=16, device="cpu"),
                               atol=1e-5)  # the teacher's soft labels, on the raw adversarial text
    seen = encode_examples([replace(e, text_a=defense.apply(e.text_a)) for e in pool.examples], tokenizer, 32, "d", 2)
    assert np.array_equal(pool.split.input_ids, seen.input_ids)  # the student trains on the defended text
    assert any(word in e.text_a.split() for e in pool.examples for word in SYNONYMS)  # ... which differs here
    originals = {e.text_a for e in examples}
    assert all(e.text_a not in originals for e in pool.examples)
    loss = pool.mixed_kd(student, torch.tensor(1.0), 6)
    assert torch.isfinite(loss) and pool.seen == 2
    pool.close()


def test_adv_train_needs_its_inputs(world):
    config, tokenizer, _, train, outputs, inputs, _ = world
    with pytest.raises(MethodInputsError, match="adv_train"):
        distill(make_student(tokenizer.vocab_size), train, outputs, config.distill, seed=0, device="cpu")
    with pytest.raises(MethodInputsError, match="adv_train"):
        distill(make_student(tokenizer.vocab_size), train, outputs, config.distill, seed=0, device="cpu",
                method_inputs=replace(inputs, train_examples=()))


@pytest.mark.parametrize(("overrides", "field"), [
    ({"adv_train": {"every": 20}}, "distill.adv_train.every"),  # 2 x 20 = 40: no step after the last round
    ({"adv_train": {"rounds": 0}}, "distill.adv_train.rounds"),
    ({"adv_train": {"examples": 0}}, "distill.adv_train.examples"),
    ({"adv_train": {"recipes": []}}, "distill.adv_train.recipes"),
    ({"adv_train": {"recipes": ["typo"]}}, "distill.adv_train.recipes[0]"),
    ({"adv_train": {"recipes": ["pwws", "pwws"]}}, "distill.adv_train.recipes[1]"),
    ({"adv_train": {"query_budget": 0}}, "distill.adv_train.query_budget"),
    ({"adv_train": {"fraction": 1.0}}, "distill.adv_train.fraction"),
    ({"adv_train": {"fraction": 0.01}}, "distill.adv_train.fraction"),  # no adversarial example in a batch of 8
    ({"methods": ["augment", "adv_train"], "augment": {"recipes": ["char"], "fraction": 0.5},
      "adv_train": {"fraction": 0.5}}, "distill.adv_train.fraction"),  # augment + adv leave no clean example
])
def test_adv_train_config_errors_name_the_field(attack_cfg, tiny_sst2_dir, tiny_teacher_dir, tmp_path,  # noqa: F811
                                                overrides, field):
    with pytest.raises(ConfigError, match=re.escape(f"'{field}'")):
        adv_config(attack_cfg, tiny_sst2_dir, tiny_teacher_dir, tmp_path, **overrides)


def test_adv_train_combines_with_synonym_encoding(attack_cfg, tiny_sst2_dir, tiny_teacher_dir, tmp_path):  # noqa: F811
    config = adv_config(attack_cfg, tiny_sst2_dir, tiny_teacher_dir, tmp_path)
    config = config_from_dict({**_as_dict(config), "search_space": {"defenses": ["synonym_encoding"]},
                               "defense": {"synonym_sources": ["counterfitted"]}})
    assert config.distill.methods == ("adv_train",)


def _as_dict(config) -> dict:
    from dataclasses import asdict

    data = asdict(config)
    return {section: values for section, values in data.items() if section in ("run", "data", "teacher", "distill",
                                                                               "attack")}
