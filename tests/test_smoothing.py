"""Randomized smoothing: copies seeded by the text (the same in every process), one copy or rate 0
is the plain model bit for bit, the attack wrapper, ``predict`` (torch and ONNX) and a plain
``pipeline`` answer a text alike, settings are refused by field, and a tiny search explores the gene."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import NEGATIVE, NEUTRAL, POSITIVE

from rosearch.config import ConfigError, config_from_dict
from rosearch.defense import (
    DEFENSE_FILE, Defense, DefenseError, DefenseResources, defend_copies, load_defense, smoothed_logits,
)
from rosearch.defense.smoothing import Smoother, mean_probability_logits, text_seed
from rosearch.search_space.genome import CellSpec, Genome

# every cue word's neighbours are the other cue words of its sentiment (as counter-fitted neighbours are)
NEIGHBOURS = {w: tuple(v for v in group if v != w) for group in (POSITIVE, NEGATIVE) for w in group}
NEIGHBOURS |= {"movie": ("film", "story"), "film": ("movie", "story"), "very": ("quite",), "quite": ("very",)}
COUNTS = {w: 5 for w in NEUTRAL + POSITIVE + NEGATIVE}
TEXTS = ["the movie was very good and witty", "a dull , boring plot", "the film is quite lovely",
         "the story was awful and the acting was weak"]


def resources(copies: int = 8, rate: float = 0.5) -> DefenseResources:
    return DefenseResources(counts=COUNTS, neighbours=NEIGHBOURS, smoothing_copies=copies, smoothing_rate=rate)


def test_copies_are_seeded_by_the_text_alone_in_every_process():
    smoother = Smoother(NEIGHBOURS, copies=16, rate=0.5)
    copies = smoother(TEXTS[0])
    assert len(copies) == 16 and len(set(copies)) > 1  # perturbed, and not all alike
    assert Smoother(NEIGHBOURS, copies=16, rate=0.5)(TEXTS[0]) == copies  # a fresh object, the same copies
    script = ("import json, sys; from rosearch.defense.smoothing import Smoother, text_seed; "
              f"print(json.dumps([text_seed({TEXTS[0]!r}), Smoother(json.loads(sys.argv[1]), copies=16, rate=0.5)"
              f"({TEXTS[0]!r})]))")
    for hash_seed in ("1", "2"):  # Python's salted str hash differs between these two; the copies must not
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", script, json.dumps(NEIGHBOURS)], env=env, check=True,
                             capture_output=True, text=True).stdout
        assert json.loads(out) == [text_seed(TEXTS[0]), copies]


def test_different_texts_use_different_perturbations():
    smoother = Smoother(NEIGHBOURS, copies=16, rate=0.5)
    first, second = smoother("good good good good"), smoother("good good good good .")
    assert [c.split() for c in first] != [c.split()[:4] for c in second]  # same words, another seed
    assert text_seed("good") != text_seed("good ")
    for text in TEXTS:  # every swap is a neighbour of the word it replaces
        for copy in smoother(text):
            for was, now in zip(text.split(), copy.split()):
                assert now == was or now in NEIGHBOURS[was]


def test_mean_probability_logits_is_the_log_of_the_mean_probability():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    joined = mean_probability_logits(logits, 3)
    expected = torch.softmax(torch.from_numpy(logits), -1).view(2, 3, 3).mean(1)
    np.testing.assert_allclose(np.exp(joined), expected.numpy(), rtol=1e-5)
    assert mean_probability_logits(logits, 1) is logits
    with pytest.raises(ValueError, match="groups of 4"):
        mean_probability_logits(logits, 4)


def _wrapper(model, tokenizer, defense, tmp_path):
    from rosearch.attack.resources import prepare_textattack
    from rosearch.attack.wrapper import make_wrapper
    from rosearch.config import AttackConfig

    prepare_textattack(AttackConfig(nltk_data=str(tmp_path / "nltk")), tmp_path)  # before textattack's import
    return make_wrapper(model, tokenizer, max_length=32, batch_size=5, device="cpu", defense=defense)


def test_one_copy_or_rate_zero_is_the_plain_model_exactly(tmp_path, tiny_tokenizer, tiny_teacher_dir, single_thread):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()
    plain = _wrapper(model, tiny_tokenizer, None, tmp_path)(TEXTS)
    for copies, rate in ((1, 0.5), (8, 0.0)):
        defense = Defense(["smoothing"], resources(copies, rate))
        assert defense.copies_per_text == 1 and defend_copies(defense, TEXTS) == TEXTS
        assert np.array_equal(_wrapper(model, tiny_tokenizer, defense, tmp_path)(TEXTS), plain)
    smoothed = _wrapper(model, tiny_tokenizer, Defense(["smoothing"], resources()), tmp_path)
    first = smoothed(TEXTS)
    assert first.shape == plain.shape and not np.allclose(first, plain)  # k copies really change the answer
    assert np.array_equal(smoothed(list(reversed(TEXTS)))[::-1], first)  # per text, whatever the batch


def _student(tokenizer):
    from rosearch.student.configuration import StudentConfig
    from rosearch.student.modeling import StudentForSequenceClassification

    torch.manual_seed(0)
    genome = Genome(32, 16, (CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "ffn_r1_gelu", "output"]),))
    config = StudentConfig(genome=genome.to_dict(), vocab_size=tokenizer.vocab_size, max_position_embeddings=64,
                           num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    return StudentForSequenceClassification(config).eval()


def test_wrapper_predict_onnx_and_pipeline_answer_alike(tmp_path, tiny_tokenizer, single_thread):
    """A smoothed exported student: the attack wrapper, `predict` on torch and ONNX, and a plain
    transformers pipeline give one answer per text, the same one."""
    from transformers import AutoTokenizer, pipeline

    from rosearch.defense.tokenizer import mark_tokenizer_defended
    from rosearch.deploy.onnx import LOGITS_ATOL, write_onnx_variants
    from rosearch.deploy.predict import Predictor
    from rosearch.student.modeling import register_auto_classes

    model = _student(tiny_tokenizer)
    folder = tmp_path / "student"
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    defense = Defense(["word_recognition", "smoothing"], resources())
    write_onnx_variants(model, folder, tiny_tokenizer, defense(TEXTS), None, int8=False)
    defense.save(folder)
    mark_tokenizer_defended(folder)
    assert load_defense(folder).copies_per_text == 8

    attacked = _wrapper(model, tiny_tokenizer, defense, tmp_path)(TEXTS)
    on_torch = Predictor(folder, "torch").logits(TEXTS)
    np.testing.assert_allclose(on_torch, attacked, rtol=0, atol=1e-5)
    np.testing.assert_allclose(Predictor(folder, "onnx").logits(TEXTS), attacked, rtol=0, atol=10 * LOGITS_ATOL)
    assert np.array_equal(Predictor(folder, "torch").logits(TEXTS), on_torch)  # a new process-free reload: same
    plain = Predictor(folder, "torch")
    plain.defense = Defense(["word_recognition"], resources())  # the same student without smoothing
    assert not np.allclose(plain.logits(TEXTS), on_torch)

    register_auto_classes()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[0] == 8 * len(TEXTS) and batch["smoothing_copies"].tolist() == [8] * len(TEXTS)
    with torch.no_grad():
        np.testing.assert_allclose(model(**batch).logits.numpy(), attacked, rtol=0, atol=1e-5)
    probabilities = np.exp(attacked) / np.exp(attacked).sum(-1, keepdims=True)
    classify = pipeline("text-classification", model=str(folder), device="cpu", top_k=None)
    for text, scores, p in zip(TEXTS, classify(TEXTS), probabilities):
        assert {d["label"]: d["score"] for d in scores}["positive"] == pytest.approx(float(p[1]), abs=1e-5), text
    with pytest.raises(ValueError, match="batch_size=1"):  # its collation keeps one row per text: refused, not wrong
        classify(TEXTS, batch_size=3)


def test_bad_settings_are_refused_naming_the_field(tmp_path):
    for section, match in (({"smoothing_copies": 0}, "defense.smoothing_copies"),
                           ({"smoothing_copies": 257}, "defense.smoothing_copies"),
                           ({"smoothing_rate": -0.1}, "defense.smoothing_rate"),
                           ({"smoothing_rate": 1.5}, "defense.smoothing_rate")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict({"defense": section})
    with pytest.raises(ConfigError, match="attack.neighbors_path"):
        config_from_dict({"search_space": {"defense_choices": ["smoothing"]}})
    with pytest.raises(ValueError, match="smoothing_copies"):
        Smoother(NEIGHBOURS, copies=0, rate=0.5)
    with pytest.raises(ValueError, match="smoothing_rate"):
        Defense(["smoothing"], resources(rate=2.0))
    Defense(["smoothing"], resources()).save(tmp_path)  # a defense file edited to an impossible setting
    import gzip

    payload = json.loads(gzip.decompress((tmp_path / DEFENSE_FILE).read_bytes()))
    payload["resources"]["smoothing_copies"] = -3
    (tmp_path / DEFENSE_FILE).write_bytes(gzip.compress(json.dumps(payload).encode()))
    with pytest.raises(DefenseError, match="smoothing_copies"):
        load_defense(tmp_path)


def test_saved_defense_keeps_the_settings_and_only_the_tables_it_uses(tmp_path):
    smoothing = Defense(["smoothing", "synonym_encoding"], resources(copies=4, rate=0.25))
    smoothing.save(tmp_path)
    loaded = load_defense(tmp_path)
    assert loaded.copies_per_text == 4 and loaded.resources.smoothing_rate == 0.25
    assert [loaded.copies(t) for t in TEXTS] == [smoothing.copies(t) for t in TEXTS]
    assert loaded.describe()["smoothing"]["copies"] == 4
    Defense(["word_recognition"], resources()).save(tmp_path)
    assert load_defense(tmp_path).resources.neighbours == {}  # unused: not shipped
    logits = np.zeros((8, 2), dtype=np.float32)
    assert smoothed_logits(None, logits) is logits


def test_a_tiny_search_explores_smoothing_and_scores_its_copies(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    from test_search import check_store, tiny_search_dict

    from rosearch.prepare.inputs import prepare_inputs
    from rosearch.search import run_search

    path = tmp_path / "neighbours.json"
    path.write_text(json.dumps({w: list(n) for w, n in NEIGHBOURS.items()}), encoding="utf-8")
    data = {"search_space": {"defense_choices": ["smoothing"]}, "attack": {"neighbors_path": str(path)},
            "defense": {"smoothing_copies": 3, "smoothing_rate": 0.4}}
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, **data))
    inputs = prepare_inputs(config, torch.device("cpu"))
    defended = inputs.for_defenses(("smoothing",))
    assert inputs.copies(("smoothing",)) == 3 and inputs.copies(()) == 1
    assert len(defended.dev) == 3 * len(inputs.dev) and len(defended.train) == len(inputs.train)
    assert (defended.dev.labels[::3] == inputs.dev.labels).all()
    summary = run_search(config)
    assert summary.failed == 0
    records = check_store(config.run.run_dir, expect_ok=8)
    carried = {Genome.from_json(r.genome_json).defenses for r in records}
    assert ("smoothing",) in carried and carried <= {(), ("smoothing",)}  # the gene is explored
    assert all(0.0 <= r.metrics["dev_accuracy"] <= 1.0 for r in records)
    assert load_defense(config.run.run_dir).resources.smoothing_copies == 3
