"""The attack runner, wrapper, proxy cache and `rosearch attack` command, on tiny models."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rosearch.attack.proxy import load_or_build_proxy_set, proxy_key
from rosearch.attack.resources import prepare_textattack
from rosearch.attack.runner import AttackReport, attack_model, reports_table, sample_attack_examples, write_reports
from rosearch.attack.wrapper import make_wrapper
from rosearch.config import AttackConfig
from rosearch.data.tasks import Example
from test_attack_recipes import EXAMPLES, KeywordClassifier

METRIC_KEYS = {
    "robust_accuracy", "clean_accuracy_attacked_sample", "attack_success_rate", "attack_successful", "attack_failed",
    "attack_skipped", "perturbed_word_pct", "attack_queries", "attack_seconds", "attack_examples",
}


@pytest.fixture(scope="module")
def attack_cfg(tmp_path_factory) -> AttackConfig:
    """NLTK data provisioned in pytest's tmp dir, and textattack imported once (~10 s)."""
    root = tmp_path_factory.getbasetemp()
    cfg = AttackConfig(nltk_data=str(root / "attack-nltk-data"), recipe="deepwordbug", model_batch_size=4, seed=3)
    prepare_textattack(cfg, root)
    import textattack  # noqa: F401

    return cfg


@pytest.fixture(scope="module")
def tiny_bert(tiny_teacher_dir):
    return AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()


def run_deepwordbug(model, tokenizer, cfg, cache_dir, examples=EXAMPLES) -> AttackReport:
    return attack_model(model, tokenizer, examples, cfg, cache_dir=cache_dir, model_name="kw", max_length=32,
                        device="cpu")


def test_sample_is_seeded_sorted_and_capped():
    examples = [Example(f"text {i}", None, i % 2) for i in range(50)]
    first = sample_attack_examples(examples, 10, seed=1)
    assert first == sample_attack_examples(examples, 10, seed=1) != sample_attack_examples(examples, 10, seed=2)
    positions = [examples.index(e) for e in first]
    assert positions == sorted(positions) and len(set(positions)) == 10
    assert sample_attack_examples(examples, 500, seed=1) == examples
    with pytest.raises(ValueError, match="attack.num_examples"):
        sample_attack_examples(examples, 0, seed=1)


@pytest.mark.parametrize("pairs", [False, True])
def test_wrapper_batches_equal_one_by_one(attack_cfg, tiny_bert, tiny_tokenizer, pairs):
    texts = ["a good film", "the plot was very dull and the acting was quite flat overall", "bad", "it is fine",
             "the cast was charming and the script witty", "tedious"]
    queries = list(zip(texts, reversed(texts))) if pairs else texts
    tiny_bert.train()
    wrapper = make_wrapper(tiny_bert, tiny_tokenizer, max_length=12, batch_size=4, device="cpu")
    batched = wrapper(queries)
    assert tiny_bert.training  # the caller's mode is restored
    tiny_bert.eval()
    alone = np.concatenate([wrapper([q]) for q in queries])
    assert batched.shape == (len(texts), 2) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    enc = tiny_tokenizer(*(zip(*queries) if pairs else (queries,)), truncation=True, max_length=12, padding=True,
                         return_tensors="pt")
    with torch.no_grad():
        reference = tiny_bert(**enc).logits.numpy()
    np.testing.assert_allclose(batched, reference, atol=1e-5)  # input order kept, truncation applied
    assert wrapper([]).shape == (0, 2)


def test_report_follows_textattack_definitions(attack_cfg, tiny_tokenizer, tmp_path):
    model = KeywordClassifier(tiny_tokenizer)
    report = run_deepwordbug(model, tiny_tokenizer, attack_cfg, tmp_path)
    rows = report.examples
    wins = [r for r in rows if r.status == "successful"]
    attacked = [r for r in rows if r.status != "skipped"]
    assert report.clean_accuracy == (5 - report.skipped) / 5 and report.accuracy_under_attack == report.failed / 5
    assert report.mean_perturbed_word_pct == pytest.approx(np.mean([r.perturbed_word_pct for r in wins]))
    assert report.mean_queries == pytest.approx(np.mean([r.queries for r in attacked]))  # skipped excluded
    assert [r.index for r in rows] == list(range(5)) and [r.label for r in rows] == [e.label for e in EXAMPLES]
    metrics = report.metrics("adv_")
    assert set(metrics) == {f"adv_{k}" for k in METRIC_KEYS} and all(isinstance(v, float) for v in metrics.values())
    assert metrics["adv_robust_accuracy"] == report.accuracy_under_attack and metrics["adv_attack_examples"] == 5.0
    data = json.loads(json.dumps(report.to_dict()))
    assert data["examples"][0]["status"] == rows[0].status and data["constraints"] == list(report.constraints)


def test_attack_is_deterministic_and_leaves_global_rngs_alone(attack_cfg, tiny_tokenizer, tmp_path):
    model = KeywordClassifier(tiny_tokenizer)
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    before = random.getstate(), np.random.get_state(), torch.get_rng_state()
    first = run_deepwordbug(model, tiny_tokenizer, attack_cfg, tmp_path)
    assert random.getstate() == before[0]
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), before[1]))
    assert torch.equal(torch.get_rng_state(), before[2])
    random.seed(99)  # a different outer state must not change the (seeded) attack
    second = run_deepwordbug(model, tiny_tokenizer, attack_cfg, tmp_path)
    assert [(r.status, r.perturbed, r.queries) for r in first.examples] == \
           [(r.status, r.perturbed, r.queries) for r in second.examples]


def test_query_budget_caps_queries(attack_cfg, tiny_tokenizer, tmp_path):
    cfg = AttackConfig(nltk_data=attack_cfg.nltk_data, recipe="deepwordbug", query_budget=3)
    report = run_deepwordbug(KeywordClassifier(tiny_tokenizer), tiny_tokenizer, cfg, tmp_path)
    assert max(r.queries for r in report.examples) <= 3


def test_text_columns_must_fit_the_examples(attack_cfg, tiny_tokenizer, tmp_path):
    pairs = [Example("a good film", "it was fine", 1)]
    with pytest.raises(ValueError, match="text_columns"):
        run_deepwordbug(KeywordClassifier(tiny_tokenizer), tiny_tokenizer, attack_cfg, tmp_path, pairs)
    with pytest.raises(ValueError, match="no examples"):
        run_deepwordbug(KeywordClassifier(tiny_tokenizer), tiny_tokenizer, attack_cfg, tmp_path, [])


def test_write_reports_and_table(attack_cfg, tiny_tokenizer, tmp_path):
    report = run_deepwordbug(KeywordClassifier(tiny_tokenizer), tiny_tokenizer, attack_cfg, tmp_path)
    json_path, csv_path = write_reports([report, report], tmp_path / "out")
    assert json_path.name.startswith("attack_kw_") and json_path.suffix == ".json" and csv_path.suffix == ".csv"
    data = json.loads(json_path.read_text())
    assert len(data) == 2 and len(data[0]["examples"]) == 5 and data[0]["recipe"] == "deepwordbug"
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 2 and float(rows[0]["accuracy_under_attack"]) == report.accuracy_under_attack
    assert rows[0]["constraints"] == "; ".join(report.constraints)
    table = reports_table([report])
    assert table.row_count == 1 and [c.header for c in table.columns][:3] == ["recipe", "model", "n"]


def test_proxy_set_is_built_once_then_cached(attack_cfg, tiny_tokenizer, tmp_path):
    model = KeywordClassifier(tiny_tokenizer)
    kwargs = dict(cache_dir=tmp_path, teacher_key="teacher-abc", max_length=32, device="cpu", text_columns=("text",))
    proxy = load_or_build_proxy_set(model, tiny_tokenizer, EXAMPLES, attack_cfg, **kwargs)
    calls = model.calls
    report = proxy.teacher_report
    assert calls > 0 and proxy.recipe == "deepwordbug" and report["successful"] >= 1
    assert len(proxy) == report["successful"] + report["failed"]  # fooling texts + hardest variants that did not fool
    assert "examples" not in report
    originals = {e.text_a: e.label for e in EXAMPLES}
    fooled = [text for text in proxy.texts_a if text not in originals]
    assert len(fooled) >= report["successful"]  # every fooling text is a real perturbation
    enc = tiny_tokenizer(list(proxy.texts_a), padding=True, return_tensors="pt")
    with torch.no_grad():
        predictions = model(enc["input_ids"], enc["attention_mask"]).logits.argmax(dim=1).tolist()
    teacher_accuracy = sum(p == y for p, y in zip(predictions, proxy.labels)) / len(proxy)
    assert teacher_accuracy == pytest.approx(1 - report["attack_success_rate"])
    assert all(text_b is None for text_b in proxy.texts_b)
    assert len(list((tmp_path / "proxy").glob("*.json"))) == 1
    calls = model.calls
    again = load_or_build_proxy_set(model, tiny_tokenizer, EXAMPLES, attack_cfg, **kwargs)
    assert again == proxy and model.calls == calls  # cache hit: the teacher is not queried
    assert proxy.examples()[0] == Example(proxy.texts_a[0], None, proxy.labels[0])
    other = AttackConfig(nltk_data=attack_cfg.nltk_data, recipe="deepwordbug", query_budget=50)
    assert proxy_key("teacher-abc", "deepwordbug", EXAMPLES, other, 32) != \
           proxy_key("teacher-abc", "deepwordbug", EXAMPLES, attack_cfg, 32)


def test_proxy_set_of_pairs_keeps_columns(attack_cfg, tiny_tokenizer, tmp_path):
    pairs = [Example("the plot", "the movie was dull", 0), Example("a film", "it was great", 1)]
    proxy = load_or_build_proxy_set(
        KeywordClassifier(tiny_tokenizer), tiny_tokenizer, pairs, attack_cfg, cache_dir=tmp_path, teacher_key="t",
        max_length=32, device="cpu", text_columns=("sentence1", "sentence2"),
    )
    assert proxy.labels[0] == 0 and proxy.texts_a[0] == "the plot" and proxy.texts_b[0] != "the movie was dull"


def command_args(*argv: str) -> argparse.Namespace:
    from rosearch.cli import build_parser

    return build_parser().parse_args(["attack", *argv])


def test_command_end_to_end(attack_cfg, tiny_teacher_dir, tiny_sst2_dir, tmp_path):
    from rosearch.attack.command import run

    args = command_args(
        "--model", str(tiny_teacher_dir), "--task", "sst2", "--data-dir", str(tiny_sst2_dir), "--recipe", "deepwordbug",
        "--n", "5", "--seed", "0", "--max-length", "32", "--cache-dir", str(tmp_path / "cache"), "--out",
        str(tmp_path / "out"), "--device", "cpu", "--nltk-data", attack_cfg.nltk_data,
    )
    assert run(args) == 0
    (json_path,) = (tmp_path / "out").glob("attack_*.json")
    (csv_path,) = (tmp_path / "out").glob("attack_*.csv")
    (report,) = json.loads(json_path.read_text())
    assert report["recipe"] == "deepwordbug" and report["n"] == 5 and len(report["examples"]) == 5
    assert report["model"] == tiny_teacher_dir.name
    assert report["successful"] + report["failed"] + report["skipped"] == 5
    assert len(list(csv.DictReader(csv_path.open()))) == 1


def test_command_needs_a_tokenizer(tiny_teacher_dir, tiny_sst2_dir, tmp_path):
    from rosearch.attack.command import run

    bare = tmp_path / "bare-model"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_teacher_dir / name, bare / name)
    args = command_args("--model", str(bare), "--data-dir", str(tiny_sst2_dir), "--cache-dir", str(tmp_path))
    with pytest.raises(ValueError, match="--tokenizer"):
        run(args)


# --------------------------------------------------------------------------------------------
# Parallel attack workers (attack.num_workers)
# --------------------------------------------------------------------------------------------


def test_a_chunk_attacked_alone_matches_the_whole_run(attack_cfg, tiny_tokenizer, tmp_path):
    """Per-example seeds make an example's result independent of what ran before it: the
    premise that lets workers split the sample."""
    from rosearch.attack.runner import _attack_chunk, _Chunk

    model = KeywordClassifier(tiny_tokenizer)
    whole = run_deepwordbug(model, tiny_tokenizer, attack_cfg, tmp_path)
    chunk = _Chunk(model=model, tokenizer=tiny_tokenizer, examples=EXAMPLES[2:], text_columns=("text",), start=2,
                   cfg=attack_cfg, recipe="deepwordbug", cache_dir=str(tmp_path), max_length=32,
                   threads=torch.get_num_threads(), log_level=None)
    alone = _attack_chunk(chunk)
    assert [row for row, _ in alone.rows] == list(whole.examples[2:])
    assert [row.index for row, _ in alone.rows] == [2, 3, 4]
    assert alone.constraints == whole.constraints and alone.seconds > 0


def test_worker_count_is_capped_and_cpu_only(attack_cfg):
    from rosearch.attack.runner import _worker_count

    cfg = dataclasses.replace(attack_cfg, num_workers=4)
    assert _worker_count(cfg, 10, torch.device("cpu")) == 4
    assert _worker_count(cfg, 3, torch.device("cpu")) == 3  # never more workers than examples
    assert _worker_count(cfg, 10, torch.device("cuda")) == 1  # a GPU attack stays in this process
    assert _worker_count(attack_cfg, 10, torch.device("cpu")) == 1


def test_num_workers_is_validated():
    from rosearch.config import ConfigError, config_from_dict

    assert config_from_dict({"attack": {"num_workers": 3}}).attack.num_workers == 3
    with pytest.raises(ConfigError, match="attack.num_workers"):
        config_from_dict({"attack": {"num_workers": 0}})


def test_parallel_workers_return_the_sequential_results(attack_cfg, tiny_tokenizer, tmp_path):
    """Two spawned worker processes (each imports TextAttack: the slowest test here, ~10 s)."""
    from rosearch.attack.runner import run_attack

    model = KeywordClassifier(tiny_tokenizer)
    kwargs = dict(recipe=None, cache_dir=tmp_path, model_name="kw", max_length=32, device="cpu", text_columns=("text",))
    sequential = run_attack(model, tiny_tokenizer, EXAMPLES, attack_cfg, **kwargs)
    parallel = run_attack(model, tiny_tokenizer, EXAMPLES, dataclasses.replace(attack_cfg, num_workers=2), **kwargs)
    assert parallel.report.examples == sequential.report.examples  # statuses, texts, queries, in sample order
    assert parallel.perturbed_columns == sequential.perturbed_columns
    same = ("clean_accuracy", "accuracy_under_attack", "attack_success_rate", "mean_queries", "constraints")
    assert all(getattr(parallel.report, k) == getattr(sequential.report, k) for k in same)
    assert {r.status for r in sequential.report.examples} == {"successful", "failed", "skipped"}
