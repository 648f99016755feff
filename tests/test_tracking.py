"""run.report_to: a tiny search's config, candidates and best-so-far curve read back with MLflow's client and
TensorBoard's event reader; exported students as MLflow artifacts; a failing tracker only warns."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from rosearch.config import ConfigError, config_from_dict
from rosearch.records.store import ResultStore
from rosearch.search import run_search
from rosearch.records.tracking import MlflowTracker, TrackingError, Trackers, check_trackers, flat_params, numeric_metrics
from test_search import tiny_search_dict


def test_helpers_flatten_config_and_keep_finite_numbers():
    assert flat_params({"run": {"name": "x", "report_to": ["mlflow"]}, "data": {"dev_share": 0.1}}) == {
        "run.name": "x", "run.report_to": '["mlflow"]', "data.dev_share": "0.1"}
    assert numeric_metrics({"a": 1, "b": float("nan"), "c": "x", "d": True, "rungs": {"6": {"acc": 0.5}}}) == {
        "a": 1.0, "rungs.6.acc": 0.5}


def test_unknown_or_missing_tracker_is_refused_before_any_work(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    with pytest.raises(ConfigError, match=r"run\.report_to\[0\].*unknown tracker 'comet'"):
        config_from_dict({"run": {"report_to": ["comet"]}})
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(TrackingError, match=r"'wandb' package is not installed \(fix: pip install wandb"):
        check_trackers(["wandb"])
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, run={"report_to": ["wandb"]})
    with pytest.raises(TrackingError):
        run_search(config_from_dict(data))
    assert not (tmp_path / "runs" / "tiny").exists()


def test_search_records_read_back_with_mlflow_and_tensorboard(tmp_path, tiny_sst2_dir, tiny_teacher_dir, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in to its file store (rosearch sets it too)
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rosearch.cli import main

    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, run={"report_to": ["mlflow", "tensorboard"]})
    config = config_from_dict(data)
    summary = run_search(config)
    run_dir = config.run.run_dir
    store = ResultStore(run_dir / "results.sqlite")
    records = sorted(store.candidates(), key=lambda r: r.finished_at)
    store.close()
    assert len(records) == summary.evaluated == 8

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("rosearch")
    state = json.loads((run_dir / "tracking.json").read_text())
    parent = client.get_run(state["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tiny"
    assert parent.data.params["distill.max_steps"] == "6" and parent.data.params["data.task"] == "sst2"  # the config
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_hash = {run.data.tags["rosearch.genome_hash"]: run for run in children}
    assert set(by_hash) == {r.genome_hash for r in records}  # one record per candidate
    for record in records:
        child = by_hash[record.genome_hash]
        assert child.data.params["hidden_size"] == "32" and child.data.params["budget"] == "6"
        assert child.data.params["worker"] == record.worker and child.data.params["status"] == "ok"
        for key in ("val_accuracy", "dev_accuracy", "params", "latency_ms_b1"):  # every metric, as stored
            assert child.data.metrics[key] == pytest.approx(record.metrics[key])
    curve = client.get_metric_history(parent.info.run_id, "search/best_so_far")
    fitness = [r.fitness for r in records]
    expected = [max(fitness[:i + 1]) for i in range(len(fitness))]
    assert [m.step for m in sorted(curve, key=lambda m: m.step)] == list(range(1, 9))
    assert [m.value for m in sorted(curve, key=lambda m: m.step)] == pytest.approx(expected)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "search")} >= {"search/summary.json"}

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    best = events.Scalars("search/best_so_far")
    assert [e.step for e in best] == list(range(1, 9)) and [e.value for e in best] == pytest.approx(expected)
    accuracy = events.Scalars("candidate/val_accuracy")
    assert [e.value for e in accuracy] == pytest.approx([r.metrics["val_accuracy"] for r in records])
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| distill.max_steps | 6 |" in config_text
    genomes = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("candidate/genome/text_summary")]
    assert [g.split()[0] for g in genomes] == [r.genome_hash[:12] for r in records]
    assert all("hidden_size 32" in g and "budget 6" in g for g in genomes)

    # exported students are kept with the search's MLflow run
    assert main(["export", str(run_dir), "--top", "1", "--out", str(tmp_path / "export")]) == 0
    folder = next((tmp_path / "export").iterdir())
    kept = {a.path for a in client.list_artifacts(parent.info.run_id, f"students/{folder.name}")}
    assert f"students/{folder.name}/model.safetensors" in kept and f"students/{folder.name}/config.json" in kept


def test_a_failing_tracker_is_a_warning_not_a_lost_run(tmp_path, tiny_sst2_dir, tiny_teacher_dir, monkeypatch, caplog):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    calls = []

    def broken(self, step, record, best):
        calls.append(step)
        raise OSError("disk full")

    monkeypatch.setattr(MlflowTracker, "candidate", broken)
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, run={"report_to": ["mlflow", "tensorboard"]},
                            evolution={"generations": 1})
    with caplog.at_level(logging.WARNING, logger="rosearch.records.tracking"):
        summary = run_search(config_from_dict(data))
    assert summary.evaluated == 4 and summary.failed == 0
    assert calls == [1]  # turned off after its first failure
    warnings = [r.getMessage() for r in caplog.records if r.name == "rosearch.records.tracking"]
    assert len(warnings) == 1 and "mlflow failed to record a candidate (OSError: disk full)" in warnings[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "runs" / "tiny" / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("search/best_so_far")) == 4  # the other tracker went on


def test_resumed_tracking_continues_the_curve(tmp_path):
    """A resumed run's stored candidates set the step and best so far (no tracker needed to check it)."""

    class Record:
        def __init__(self, status, value):
            self.status, self.objectives = status, (value,)

    trackers = Trackers([], Path(tmp_path))
    for record in (Record("ok", 0.5), Record("failed", -math.inf), Record("ok", 0.7), Record("ok", 0.6)):
        trackers._advance(record)
    assert trackers.step == 4 and trackers.best == 0.7
