"""bench/search_wall.py times the search's own task function (no copy of it that could drift)."""

from __future__ import annotations

import importlib
import time

import rosearch.search as rosearch_search
from conftest import REPO_ROOT
from rosearch.workers import CandidateTask, TaskResult


def test_the_timed_task_runs_the_real_one_and_times_its_steps(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    bench = importlib.import_module("search_wall")
    calls = []

    def slow_latency(*args, **kwargs):
        time.sleep(0.02)
        return {"latency_ms_b1": 1.0}

    def fake_task(task, shared):  # stands in for run_candidate_task; calls the steps through the module
        calls.append(task.kind)
        metrics = dict(rosearch_search.measure_latency()) if task.kind == "train" else {"robust_accuracy": 0.5}
        return TaskResult(metrics, artifacts={"model.safetensors": b"w"} if task.kind == "train" else {})

    original_latency = rosearch_search.measure_latency
    monkeypatch.setattr(rosearch_search, "measure_latency", slow_latency)
    monkeypatch.setattr(rosearch_search, "run_candidate_task", fake_task)
    train = bench.timed_candidate_task(CandidateTask("h" * 16, "{}", seed=1, generation=0), shared=None)
    attack = bench.timed_candidate_task(CandidateTask("h" * 16, "{}", seed=1, generation=0, kind="attack"), shared=None)
    assert calls == ["train", "attack"] and callable(rosearch_search.proxy_metrics)  # the other timed step
    assert train.artifacts == {"model.safetensors": b"w"} and train.metrics["latency_ms_b1"] == 1.0
    assert train.metrics["bench_latency_seconds"] >= 0.02 and train.metrics["bench_proxy_seconds"] == 0.0
    assert train.metrics["bench_start"] <= train.metrics["bench_end"]
    assert attack.metrics["robust_accuracy"] == 0.5 and "bench_attack_pid" in attack.metrics
    assert rosearch_search.measure_latency is slow_latency  # the timer is undone after the task
    monkeypatch.undo()
    assert rosearch_search.measure_latency is original_latency
