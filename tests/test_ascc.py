"""ascc: adversarial KD inside each token's substitution hull (rosearch.distill.ascc)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import NEGATIVE, POSITIVE, encode_texts, make_sentence
from test_methods import CFG, changed, make_student, weights
from transformers import BertForSequenceClassification

from rosearch.config import AsccConfig, AttackConfig, ConfigError, config_from_dict
from rosearch.defense.pipeline import Defense, DefenseResources
from rosearch.distill.hull import HullEmbedding, token_hulls
from rosearch.distill.inputs import MethodInputs, MethodInputsError
from rosearch.distill.teacher_cache import compute_teacher_outputs
from rosearch.distill.trainer import distill
from rosearch.files.tokenizer_files import read_tokenizer_files

pytestmark = pytest.mark.usefixtures("single_thread")

# every cue word's substitutes are the other cue words of its side plus one of the other side
SUBSTITUTIONS = {w: tuple(x for x in POSITIVE if x != w)[:3] + (NEGATIVE[0],) for w in POSITIVE}
SUBSTITUTIONS |= {w: tuple(x for x in NEGATIVE if x != w)[:3] + ("multiword phrase",) for w in NEGATIVE}


@pytest.fixture(scope="module")
def toy(tiny_tokenizer):
    rng = random.Random(3)
    labels = [i % 2 for i in range(64)]
    return encode_texts(tiny_tokenizer, [make_sentence(rng, y) for y in labels], labels, "toy-ascc")


@pytest.fixture(scope="module")
def outputs(tiny_teacher_dir, toy):
    teacher = BertForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()
    return compute_teacher_outputs(teacher, toy, layers=(), batch_size=16, device="cpu")


def inputs_for(tiny_teacher_dir, substitutions=SUBSTITUTIONS) -> MethodInputs:
    return MethodInputs(methods=("ascc",), teacher_dir=str(tiny_teacher_dir),
                        tokenizer_files=read_tokenizer_files(tiny_teacher_dir), cache_dir="unused", max_length=64,
                        text_columns=("sentence",), attack=AttackConfig(), substitutions=substitutions)


def test_hull_table_lists_the_token_then_its_single_token_substitutes(tiny_tokenizer):
    table, size = token_hulls(SUBSTITUTIONS, tiny_tokenizer, None, max_size=5)
    good, bad = tiny_tokenizer.convert_tokens_to_ids(["good", "bad"])
    assert table[good, 0] == good and size[good] == 5
    assert tiny_tokenizer.convert_ids_to_tokens(table[good, 1:5].tolist()) == ["great", "fine", "superb", "bad"]
    assert size[bad] == 4  # "multiword phrase" is not one token: left out
    the = tiny_tokenizer.convert_tokens_to_ids("the")
    assert size[the] == 1 and set(table[the].tolist()) == {the}  # no substitutes: its own embedding only


def test_hull_table_follows_the_students_defense(tiny_tokenizer):
    """A synonym-encoded student sees codes: the hull is over what the substitutes become."""
    defense = Defense(["synonym_encoding"], DefenseResources(counts={"good": 5}, synonyms={"great": "good"}))
    table, size = token_hulls({"fine": ("great", "superb")}, tiny_tokenizer, defense, max_size=4)
    fine = tiny_tokenizer.convert_tokens_to_ids("fine")
    assert tiny_tokenizer.convert_ids_to_tokens(table[fine, 1:int(size[fine])].tolist()) == ["good", "superb"]


def test_hull_points_stay_inside_the_convex_hull(tiny_tokenizer):
    """Whatever the ascent does to eta, each token's embedding is a convex combination of its set's rows."""
    table, size = token_hulls(SUBSTITUTIONS, tiny_tokenizer, None, max_size=5)
    student = make_student(tiny_tokenizer.vocab_size)
    embedding = student.get_input_embeddings()
    hull = HullEmbedding(embedding, table, size)
    ids = torch.tensor([tiny_tokenizer.convert_tokens_to_ids(["[CLS]", "good", "movie", "bad", "[SEP]"])])
    cand, valid = hull.candidates(ids)
    eta = torch.randn(valid.shape, generator=torch.Generator().manual_seed(0)) * 10
    w = hull.weights(eta, valid)
    assert torch.all(w >= 0) and torch.allclose(w.sum(-1), torch.ones(1, 5)) and torch.all(w[~valid] == 0)
    seen = {}
    projection = student.student.embeddings.embedding_projection  # what the word embeddings feed
    handle = projection.register_forward_pre_hook(lambda m, args: seen.setdefault("points", args[0].detach()))
    try:
        hull.forward(student.eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, cand, w)
    finally:
        handle.remove()
    E = embedding.weight.detach()
    for t in range(5):  # recomputed independently: sum_k w_k E[s_k] over the token's own set only
        n = int(size[ids[0, t]])
        expected = (w[0, t, :n, None] * E[table[ids[0, t], :n]]).sum(0)
        assert torch.allclose(seen["points"][0, t], expected, atol=1e-6)
    movie = 2  # no substitutes: exactly its own embedding
    assert torch.allclose(seen["points"][0, movie], E[ids[0, movie]], atol=1e-6)


def test_ascc_trains_seeded_and_moves_words_off_themselves(tiny_teacher_dir, tiny_tokenizer, toy, outputs):
    student = make_student(tiny_tokenizer.vocab_size)
    before = weights(student)
    cfg = replace(CFG, methods=("ascc",), ascc=AsccConfig(steps=2, max_candidates=4))
    result = distill(student, toy, outputs, cfg, seed=0, device="cpu", log_every=4,
                     method_inputs=inputs_for(tiny_teacher_dir))
    assert changed(before, student) and all(np.isfinite(loss) for _, loss in result.loss_history)
    assert result.method_stats["ascc_tokens_with_hull"] == len(POSITIVE) + len(NEGATIVE)
    assert result.method_stats["ascc_mean_weight_off_original"] > 0.5  # the ascent moves words off themselves
    again = make_student(tiny_tokenizer.vocab_size)
    distill(again, toy, outputs, cfg, seed=0, device="cpu", log_every=4, method_inputs=inputs_for(tiny_teacher_dir))
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values()))  # seeded


def test_ascc_needs_its_inputs(tiny_teacher_dir, tiny_tokenizer, toy, outputs):
    cfg = replace(CFG, methods=("ascc",))
    with pytest.raises(MethodInputsError, match="ascc"):
        distill(make_student(tiny_tokenizer.vocab_size), toy, outputs, cfg, seed=0, device="cpu",
                method_inputs=inputs_for(tiny_teacher_dir, substitutions={}))


@pytest.mark.parametrize(("section", "field"), [
    ({"steps": 0}, "distill.ascc.steps"), ({"step_size": 0}, "distill.ascc.step_size"),
    ({"sources": ["glove"]}, r"distill.ascc.sources\[0\]"), ({"sources": []}, "distill.ascc.sources"),
    ({"max_candidates": 0}, "distill.ascc.max_candidates"),
])
def test_config_refuses_impossible_ascc_settings(section, field):
    with pytest.raises(ConfigError, match=field):
        config_from_dict({"distill": {"methods": ["ascc"], "ascc": section},
                          "attack": {"neighbors_path": "n.json"}})


def test_counterfitted_source_needs_the_neighbour_table():
    with pytest.raises(ConfigError, match="distill.ascc.sources.*attack.neighbors_path"):
        config_from_dict({"distill": {"methods": ["ascc"]}})
    assert config_from_dict({"distill": {"methods": ["ascc"], "ascc": {"sources": ["wordnet"]}}}).distill.ascc.sources == ("wordnet",)


def test_the_ascc_section_is_part_of_the_results_fingerprint():
    base = config_from_dict({})
    assert "ascc" in base.to_dict()["distill"]
    assert config_from_dict({"distill": {"ascc": {"steps": 2}}}).results_fingerprint() == base.results_fingerprint()  # the default
    assert config_from_dict({"distill": {"ascc": {"steps": 3}}}).results_fingerprint() != base.results_fingerprint()


# --------------------------------------------------------------------------------------------
# The adversarial teacher (teacher.adversarial: ascc)
# --------------------------------------------------------------------------------------------


def test_adversarial_teacher_trains_in_the_hulls_and_differs_from_the_plain_one(tiny_teacher_dir, tiny_tokenizer, toy,
                                                                                tmp_path):
    from rosearch.config import TeacherConfig
    from rosearch.distill.teacher import TeacherError, finetune_teacher, load_teacher

    plain_cfg = TeacherConfig(max_steps=4, batch_size=16, learning_rate=1e-3)
    adv_cfg = replace(plain_cfg, adversarial="ascc", adversarial_steps=1)
    states, infos = [], []
    for name, cfg in (("plain", plain_cfg), ("adv", adv_cfg), ("adv-again", adv_cfg)):
        model, tokenizer = load_teacher(str(tiny_teacher_dir), 2, "cpu")
        infos.append(finetune_teacher(model, toy, toy, cfg, seed=0, device="cpu", output_dir=tmp_path / name,
                                      tokenizer=tokenizer, substitutions=SUBSTITUTIONS))
        states.append(model.state_dict())
    plain, adv, again = states
    assert "adversarial" not in infos[0] and infos[1]["adversarial"] == "ascc" and infos[1]["adversarial_steps"] == 1
    assert any(not torch.equal(plain[k], adv[k]) for k in plain)  # the hull term changes training
    assert all(torch.equal(adv[k], again[k]) for k in adv)  # and is seeded
    assert infos[1]["train_loss"] > infos[0]["train_loss"]  # clean CE + the worst-hull CE
    model, tokenizer = load_teacher(str(tiny_teacher_dir), 2, "cpu")
    with pytest.raises(TeacherError, match="teacher.adversarial=ascc needs the substitutes"):
        finetune_teacher(model, toy, toy, adv_cfg, seed=0, device="cpu", output_dir=tmp_path / "x", tokenizer=tokenizer)


@pytest.mark.parametrize(("teacher", "attack", "field"), [
    ({"adversarial": "freelb"}, {"neighbors_path": "n.json"}, "teacher.adversarial.*unknown kind"),
    ({"adversarial": "ascc", "finetuned": True}, {"neighbors_path": "n.json"}, "teacher.adversarial.*finetuned=true"),
    ({"adversarial": "ascc"}, {}, "teacher.adversarial.*attack.neighbors_path"),
    ({"adversarial": "ascc", "adversarial_steps": 0}, {"neighbors_path": "n.json"}, "teacher.adversarial_steps"),
    ({"adversarial": "ascc", "adversarial_weight": 0}, {"neighbors_path": "n.json"}, "teacher.adversarial_weight"),
])
def test_config_refuses_an_impossible_adversarial_teacher(teacher, attack, field):
    with pytest.raises(ConfigError, match=field):
        config_from_dict({"teacher": teacher, "attack": attack})


def test_an_adversarial_teacher_has_its_own_cache_directory():
    from rosearch.prepare.inputs import teacher_output_dir

    plain = config_from_dict({})
    adv = dataclasses.replace(plain, teacher=dataclasses.replace(plain.teacher, adversarial="ascc"))
    assert teacher_output_dir(adv) != teacher_output_dir(plain)
    assert teacher_output_dir(plain).name == "bert-base-uncased-sst2-930d11c3e928"  # see test_cache_keys.py
    assert adv.results_fingerprint() != plain.results_fingerprint()


def test_a_tiny_search_explores_the_ascc_training_gene(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    import json

    from test_search import check_store, tiny_search_dict

    from rosearch.search import run_search
    from rosearch.search_space.genome import Genome

    table = tmp_path / "neighbors.json"
    table.write_text(json.dumps({w: list(subs) for w, subs in SUBSTITUTIONS.items()}))
    config = config_from_dict(tiny_search_dict(
        tmp_path, tiny_sst2_dir, tiny_teacher_dir, run={"seed": 0}, search_space={"training_choices": ["ascc"]},
        distill={"ascc": {"sources": ["counterfitted"], "steps": 1}}, attack={"neighbors_path": str(table)}))
    summary = run_search(config)
    assert summary.failed == 0
    records = check_store(config.run.run_dir, expect_ok=summary.evaluated)
    trained = {Genome.from_json(r.genome_json).training for r in records}
    assert trained == {(), ("ascc",)}  # both sampled
    for r in records:
        uses = Genome.from_json(r.genome_json).training == ("ascc",)
        assert r.metrics.get("distill_methods", []) == (["ascc"] if uses else [])


def test_typo_source_adds_the_real_words_one_edit_away():
    from rosearch.distill.hull import word_substitutions

    words = ["bad", "bed", "bid", "good", "goad", "plot"]
    subs = word_substitutions(words, ["typos"], neighbors_path=None, max_per_word=16)
    assert subs == {"bad": ("bed", "bid"), "bed": ("bad", "bid"), "bid": ("bad", "bed"), "good": ("goad",),
                    "goad": ("good",)}  # "plot" has no real word one edit away
    assert word_substitutions(words, ["typos"], neighbors_path=None, max_per_word=1)["bad"] == ("bed",)
