"""End-to-end searches on tiny models: in-process and on local Ray, failures, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rosearch.config import config_from_dict
from rosearch.records.store import ResultStore
from rosearch.search import run_candidate_task, run_search
from rosearch.search_space.genome import Genome

REPO = Path(__file__).resolve().parents[1]


def tiny_search_dict(tmp_path: Path, sst2_dir: Path, teacher_dir: Path, **sections) -> dict:
    """A 2-generation, 4-individual search over tiny students (hidden 32) of a tiny teacher."""
    data = {
        "run": {"name": "tiny", "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
                "seed": 3, "device": "cpu", "num_threads": 1},
        "data": {"task": "sst2", "data_dir": str(sst2_dir), "max_length": 32},
        "teacher": {"model": str(teacher_dir), "finetuned": True, "eval_batch_size": 64},
        "search_space": {"hidden_sizes": [32], "embedding_sizes": [16], "num_layers": [1, 2], "nodes_per_cell": 4,
                         "max_edges": 5, "attention_heads": [2, 4], "kernel_sizes": [3], "ffn_ratios": [1, 2],
                         "activations": ["gelu", "relu"]},
        "distill": {"max_steps": 6, "batch_size": 16, "eval_batch_size": 64},
        "evolution": {"population_size": 4, "generations": 2, "elitism": 1, "tournament_size": 2},
        "workers": {"backend": "inprocess"},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


def check_store(run_dir: Path, *, expect_ok: int, expect_failed: int = 0) -> list:
    store = ResultStore(run_dir / "results.sqlite")
    try:
        records = store.candidates()
        assert sum(r.status == "ok" for r in records) == expect_ok
        assert sum(r.status == "failed" for r in records) == expect_failed
        assert len({r.genome_hash for r in records}) == len(records)
        for r in records:
            assert Genome.from_json(r.genome_json).hash() == r.genome_hash
            if r.status == "ok":
                for key in ("dev_accuracy", "params", "flops", "latency_ms_b1", "latency_ms_b32"):
                    assert key in r.metrics, key
                assert 0.0 <= r.metrics["dev_accuracy"] <= 1.0
                assert r.fitness is not None
                assert (run_dir / "candidates" / r.genome_hash / "model.safetensors").is_file()  # weights kept
        gens = store.generations()
        assert [g["generation"] for g in gens] == [0, 1]
        assert all(len(g["population"]) == 4 for g in gens)
        second = [r for r in records if r.generation == 1]
        assert second and all(len(r.parents) >= 1 for r in second)  # offspring know their parents
        checkpoint = store.load_checkpoint()
        assert checkpoint["planned"] == [] and checkpoint["in_flight"] == []  # the last generation is complete
        assert store.run_config()["evolution"]["population_size"] == 4
        return records
    finally:
        store.close()


def test_search_inprocess_end_to_end(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    summary = run_search(config)
    assert summary.evaluated == 8 and summary.failed == 0
    check_store(config.run.run_dir, expect_ok=8)
    assert summary.top and summary.top[0]["objectives"][0] >= summary.top[-1]["objectives"][0]
    assert json.loads((config.run.run_dir / "summary.json").read_text())["evaluated"] == 8
    info = json.loads((config.run.run_dir / "run_info.json").read_text())
    assert info["teacher_dev_accuracy"] == summary.teacher_dev_accuracy and info["teacher_attack"] is None


def test_kept_weights_reproduce_the_stored_accuracy(tmp_path, tiny_sst2_dir, tiny_teacher_dir, tiny_tokenizer):
    """The weights a worker shipped back are the ones it measured (reloaded: same dev accuracy)."""
    from rosearch.data.tasks import load_split
    from rosearch.data.predictions import accuracy
    from rosearch.records.artifacts import load_student, read_candidate_files

    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                               evolution={"generations": 1}))
    run_search(config)
    _, dev = load_split(config.data, "dev", tiny_tokenizer, config.run.cache_dir, config.run.seed)
    with ResultStore(config.run.run_dir / "results.sqlite") as store:
        records = [r for r in store.candidates() if r.status == "ok"]
    assert records
    for r in records:
        model = load_student(read_candidate_files(config.run.run_dir, r.genome_hash))
        assert accuracy(model, dev, batch_size=64, device="cpu") == r.metrics["dev_accuracy"]


def test_search_on_local_ray(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    pytest.importorskip("ray")
    config = config_from_dict(tiny_search_dict(
        tmp_path, tiny_sst2_dir, tiny_teacher_dir, workers={"backend": "ray", "num_cpus_per_candidate": 1}))
    summary = run_search(config)
    assert summary.evaluated == 8
    records = check_store(config.run.run_dir, expect_ok=8)
    assert all(r.worker.split(":")[1] != str(os.getpid()) for r in records)  # ran in Ray worker processes


@pytest.mark.parametrize("strategy", ["aging", "random"])
def test_asynchronous_strategies_on_local_ray(tmp_path, tiny_sst2_dir, tiny_teacher_dir, strategy):
    """A child is proposed whenever a worker frees: the budget is spent exactly, nothing twice, the
    checkpoint holds the completion order, and reports read the same generation rows."""
    pytest.importorskip("ray")
    config = config_from_dict(tiny_search_dict(
        tmp_path, tiny_sst2_dir, tiny_teacher_dir, evolution={"strategy": strategy},
        workers={"backend": "ray", "num_cpus_per_candidate": 1}))
    summary = run_search(config)
    assert summary.evaluated == 8 and summary.failed == 0
    with ResultStore(config.run.run_dir / "results.sqlite") as store:
        records = store.candidates()
        state = store.load_checkpoint()
        generations = store.generations()
    assert len({r.genome_hash for r in records}) == 8
    assert sorted(state["completed"]) == sorted(r.genome_hash for r in records) and state["in_flight"] == []
    assert [g["generation"] for g in generations] == [0, 1] and all(len(g["population"]) == 4 for g in generations)
    children = [r for r in records if r.parents]
    assert (len(children) >= 3) if strategy == "aging" else not children
    assert all("/node-" in r.worker for r in records)  # the store says which Ray node ran each candidate


def fail_on_two_layers(task, shared):
    """A task function that raises for every two-layer student (deterministic failure)."""
    if Genome.from_json(task.genome_json).num_layers == 2:
        raise RuntimeError("simulated candidate crash")
    return run_candidate_task(task, shared)


def test_failed_candidate_is_recorded_and_search_completes(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    summary = run_search(config, task_fn=fail_on_two_layers)
    assert summary.failed >= 1 and summary.evaluated >= 1
    store = ResultStore(config.run.run_dir / "results.sqlite")
    failed = [r for r in store.candidates() if r.status == "failed"]
    assert failed and all("simulated candidate crash" in r.error for r in failed)
    assert all(Genome.from_json(r.genome_json).num_layers == 2 for r in failed)
    assert store.load_checkpoint()["planned"] == []
    store.close()


def test_existing_run_requires_resume(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, evolution={"generations": 1})
    run_search(config_from_dict(data))
    with pytest.raises(ValueError, match="--resume"):
        run_search(config_from_dict(data))


def test_unreachable_ray_address_fails_before_any_work(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, workers={"backend": "ray", "address": "127.0.0.1:1"})
    start = time.time()
    with pytest.raises(ValueError, match=r"workers.address='127.0.0.1:1'"):
        run_search(config_from_dict(data))
    assert time.time() - start < 30
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()  # nothing was prepared


def test_failed_preparation_does_not_lock_the_run(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    import shutil

    from rosearch.data.tasks import DataError

    broken = tmp_path / "SST-2"
    shutil.copytree(tiny_sst2_dir, broken)
    (broken / "dev.tsv").unlink()
    data = tiny_search_dict(tmp_path, broken, tiny_teacher_dir, evolution={"generations": 1})
    with pytest.raises(DataError, match="dev.tsv"):
        run_search(config_from_dict(data))
    shutil.copy(tiny_sst2_dir / "dev.tsv", broken / "dev.tsv")
    assert run_search(config_from_dict(data)).evaluated == 4  # no --resume needed after the fix


def test_resume_extends_a_finished_run_and_may_change_workers(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, evolution={"generations": 1})
    run_search(config_from_dict(data))
    more = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, workers={"max_retries": 0})
    summary = run_search(config_from_dict(more), resume=True)
    assert summary.evaluated == 4  # only the new generation was trained
    check_store(config_from_dict(more).run.run_dir, expect_ok=8)
    changed = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, distill={"max_steps": 7})
    with pytest.raises(ValueError, match="distill.max_steps"):
        run_search(config_from_dict(changed), resume=True)


def test_finetuned_flag_on_a_bare_backbone_is_refused(tmp_path, tiny_sst2_dir, tiny_tokenizer):
    from transformers import BertConfig, BertModel

    from rosearch.distill.teacher import TeacherError

    bare = tmp_path / "bare"
    BertModel(BertConfig(vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(bare)
    tiny_tokenizer.save_pretrained(bare)
    with pytest.raises(TeacherError, match="finetuned=false"):
        run_search(config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, bare)))


def test_embedding_wider_than_teacher_is_a_config_error(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    from rosearch.config import ConfigError

    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, search_space={"embedding_sizes": [64]})
    with pytest.raises(ConfigError, match="search_space.embedding_sizes"):
        run_search(config_from_dict(data))


def _finished(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _cli(config_path: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "run_search.py"), "--config", str(config_path), *extra]


@pytest.mark.parametrize("strategy", ["generational", "aging"])
def test_kill_and_resume_matches_uninterrupted_run(tmp_path, tiny_sst2_dir, tiny_teacher_dir, strategy):
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, evolution={"strategy": strategy})
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")

    # the reference: the same search, never interrupted
    ref = dict(data, run=dict(data["run"], name="reference"))
    ref_path = tmp_path / "reference.yaml"
    ref_path.write_text(yaml.safe_dump(ref))
    subprocess.run(_cli(ref_path), env=env, check=True, capture_output=True, timeout=300)

    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(data))
    db = tmp_path / "runs" / "tiny" / "results.sqlite"
    proc = subprocess.Popen(_cli(path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _finished(db) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the search finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    store = ResultStore(db, read_only=True)
    before = {r.genome_hash: r.finished_at for r in store.candidates()}
    store.close()
    assert 5 <= len(before) < 8

    resumed = subprocess.run(_cli(path, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    store = ResultStore(db, read_only=True)
    after = {r.genome_hash: r for r in store.candidates()}
    final = store.generations()[-1]["population"]
    store.close()
    assert len(after) == 8
    for key, finished_at in before.items():  # finished candidates were not re-trained
        assert after[key].finished_at == finished_at

    ref_store = ResultStore(tmp_path / "runs" / "reference" / "results.sqlite", read_only=True)
    ref_records = {r.genome_hash: r for r in ref_store.candidates()}
    ref_final = ref_store.generations()[-1]["population"]
    ref_store.close()
    assert set(after) == set(ref_records)
    assert final == ref_final
    for key, record in after.items():
        assert record.metrics["dev_accuracy"] == ref_records[key].metrics["dev_accuracy"]


def test_resume_retries_transient_failures_but_not_candidate_errors(tmp_path):
    """A stored timeout/crash is the machine's fault and is run again; a Python error is reused."""
    from rosearch.evolution.operators import Proposal
    from rosearch.evaluate.fitness import fitness_spec
    from rosearch.records.store import CandidateRecord
    from rosearch.search import SearchProgress, _CandidateDispatcher
    from rosearch.search_space.sampling import sample_genome
    from rosearch.workers import InProcessBackend
    import random

    config = config_from_dict({})
    rng = random.Random(0)
    transient, permanent = (sample_genome(rng, config.search_space) for _ in range(2))
    store = ResultStore(tmp_path / "r.sqlite")
    for genome, error in ((transient, "TimeoutError: timeout after 5s (workers.timeout_s)"),
                          (permanent, "RuntimeError: shapes do not match")):
        store.record_candidate(CandidateRecord(
            genome_hash=genome.hash(), genome_json=genome.to_json(), generation=0, parents=(), status="failed",
            metrics={}, fitness=None, objectives=(-1e9,), error=error, attempts=1, seconds=1.0, worker="w",
            finished_at=1.0))
    calls = []

    def fake_evaluate(task, shared):
        calls.append(task.genome_hash)
        return {"val_accuracy": 0.8, "dev_accuracy": 0.8, "params": 1_000_000, "flops": 10}

    spec = fitness_spec(config, teacher_cost={"params": 20_000_000, "flops": 100})
    dispatcher = _CandidateDispatcher(store, InProcessBackend(fake_evaluate, None), spec, config, SearchProgress(1, 2))
    for genome in (transient, permanent):
        dispatcher.submit(Proposal(genome, 0, ()))
    values = dict(dispatcher.next_result() for _ in range(2))
    assert calls == [transient.hash()]
    assert store.candidate(transient.hash()).status == "ok"
    assert values[permanent.hash()] == spec.worst()
    store.close()


def test_robustness_search_scores_every_candidate_on_the_proxy_and_attacks_the_top(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    """attack.enabled: the teacher's adversarial examples score every candidate; the full
    attack runs on each generation's best candidate and the final top one, through the workers."""
    attack = {"enabled": True, "recipe": "deepwordbug", "recipes": [], "num_examples": 6, "top_k": 1,
              "model_batch_size": 32, "nltk_data": str(tmp_path / "nltk"), "proxy": True, "full_attack": "top_k"}
    # the random tiny teacher is fine-tuned first: a teacher that is wrong everywhere leaves nothing to attack
    teacher = {"finetuned": False, "epochs": 4, "learning_rate": 2e-3, "batch_size": 16}
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, attack=attack, teacher=teacher,
                                               fitness={"robustness_weight": 0.5}))
    summary = run_search(config)
    records = [r for r in check_store(config.run.run_dir, expect_ok=8) if r.status == "ok"]
    teacher = summary.teacher_attack
    assert teacher["recipe"] == "deepwordbug" and teacher["n"] == 6
    assert teacher["successful"] + teacher["failed"] + teacher["skipped"] == 6
    proxy_size = json.loads((config.run.run_dir / "run_info.json").read_text())["proxy_examples"]
    assert proxy_size == teacher["successful"] + teacher["failed"] >= 1
    teacher_params = json.loads((config.run.run_dir / "run_info.json").read_text())["teacher_params"]
    for r in records:
        m = r.metrics
        assert 0.0 <= m["proxy_robust_accuracy"] <= 1.0 and m["proxy_examples"] == proxy_size
        efficiency = 1 - min(m["params"] / teacher_params, 1)
        assert r.fitness == pytest.approx(m["val_accuracy"] + 0.5 * m["proxy_robust_accuracy"] + 0.1 * efficiency)
    attacked = [r for r in records if "robust_accuracy" in r.metrics]
    assert 1 <= len(attacked) <= 3  # top 1 of each of 2 generations + the final top 1 (may coincide)
    for r in attacked:
        m = r.metrics
        assert m["attack_successful"] + m["attack_failed"] + m["attack_skipped"] == 6
        assert m["robust_accuracy"] <= m["clean_accuracy_attacked_sample"]
    assert "robust_accuracy" in summary.top[0]  # the final top candidate always carries full-attack numbers


def test_pareto_front_keeps_exactly_the_non_dominated_candidates(tmp_path):
    from rosearch.evaluate.fitness import fitness_spec
    from rosearch.records.store import CandidateRecord
    from rosearch.search import pareto_front

    config = config_from_dict({"evolution": {"mode": "nsga2"}, "attack": {"enabled": True, "full_attack": "all"}})
    spec = fitness_spec(config, teacher_cost={"params": 10, "flops": 10})  # (accuracy, robustness, params)
    points = {"a": (0.9, 0.2, 5.0), "b": (0.8, 0.5, 5.0), "c": (0.8, 0.2, 5.0), "d": (0.7, 0.1, 1.0), "e": (0.7, 0.1, 2.0)}
    with ResultStore(tmp_path / "r.sqlite") as store:
        for i, (name, objectives) in enumerate(points.items()):
            store.record_candidate(CandidateRecord(
                genome_hash=name, genome_json="{}", generation=0, parents=(), status="ok", metrics={}, fitness=None,
                objectives=objectives, error=None, attempts=1, seconds=1.0, worker="w", finished_at=float(i)))
        assert sorted(pareto_front(store, spec)) == ["a", "b", "d"]  # c is dominated by a and b, e by d


def test_a_teacher_wrong_on_every_attacked_example_is_a_clear_error(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    """The random tiny teacher misclassifies the whole sample: no adversarial example, no proxy set."""
    import torch

    from rosearch.prepare.inputs import ProxySetError, prepare_inputs

    attack = {"enabled": True, "recipe": "deepwordbug", "num_examples": 6, "nltk_data": str(tmp_path / "nltk"),
              "proxy": True, "full_attack": "top_k"}
    # attacks sample dev here (no validation slice): the sample this random teacher is known to get all wrong
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, attack=attack,
                                               data={"validation_size": 0}))
    with pytest.raises(ProxySetError, match="misclassified 6 of them.*attack.num_examples"):
        prepare_inputs(config, torch.device("cpu"))
