"""ResultStore: round trips through a real SQLite file, resume rules, non-finite floats, and a
``kill -9`` of a writer process that must not lose committed candidates."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rosearch.results import (
    CandidateRecord,
    ConfigMismatchError,
    ResultStore,
    ResultStoreError,
    RunExistsError,
    SchemaVersionError,
)
from rosearch.results.store import SCHEMA_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"run": {"name": "r", "seed": 0}, "evolution": {"population_size": 8, "mutation": {"rate": 0.5}}}


def make_record(key: str, *, finished_at: float = 100.0, status: str = "ok", **overrides) -> CandidateRecord:
    fields = dict(
        genome_hash=key, genome_json=json.dumps({"hidden_size": 32, "cells": []}), generation=0,
        parents=(), status=status,
        metrics={"dev_accuracy": 0.75, "params": 12_345, "flops": 67_890, "latency_ms_b1": 1.5} if status == "ok"
        else {},
        fitness=0.5 if status == "ok" else None, objectives=(0.5,) if status == "ok" else (-1e9,),
        error=None if status == "ok" else "RuntimeError: boom", attempts=1, seconds=2.5, worker="host:1:cpu",
        finished_at=finished_at,
    )
    fields.update(overrides)
    return CandidateRecord(**fields)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "results.sqlite"


def test_empty_store_answers_none_and_empty(path: Path) -> None:
    with ResultStore(path) as store:
        assert store.run_config() is None
        assert store.load_checkpoint() is None
        assert store.candidate("nope") is None
        assert store.candidates() == []
        assert store.generations() == []
        frame = store.candidates_frame()
        assert len(frame) == 0 and "genome_hash" in frame.columns and "metrics" not in frame.columns
        assert store.metadata()["schema_version"] == str(SCHEMA_VERSION)


def test_candidates_round_trip_across_reopen(path: Path) -> None:
    ok = make_record("a" * 16, finished_at=200.0, parents=("p1", "p2"), generation=3,
                     metrics={"dev_accuracy": 0.8, "params": 1000, "nested": {"x": 1, "y": [1.5, 2]}})
    failed = make_record("b" * 16, finished_at=100.0, status="failed", attempts=3)
    with ResultStore(path) as store:
        store.record_candidate(ok)
        store.record_candidate(failed)
    with ResultStore(path) as store:
        assert store.candidate(ok.genome_hash) == ok
        assert store.candidate(failed.genome_hash) == failed
        assert store.candidates() == [failed, ok]  # by finish time
        assert isinstance(store.candidate(ok.genome_hash).parents, tuple)


def test_retried_candidate_replaces_its_failure(path: Path) -> None:
    with ResultStore(path) as store:
        store.record_candidate(make_record("c" * 16, status="failed"))
        store.record_candidate(make_record("c" * 16, attempts=2, finished_at=300.0))
        records = store.candidates()
    assert len(records) == 1 and records[0].status == "ok" and records[0].attempts == 2


def test_writes_are_committed_without_close(path: Path) -> None:
    writer = ResultStore(path)
    writer.record_candidate(make_record("d" * 16))
    writer.record_generation(0, ["d" * 16], {"best": 0.5})
    writer.save_checkpoint({"generation": 0})
    # Another connection (the writer is still open, never closed explicitly) sees everything.
    reader = ResultStore(path, read_only=True)
    assert [r.genome_hash for r in reader.candidates()] == ["d" * 16]
    assert reader.generations()[0]["population"] == ["d" * 16]
    assert reader.load_checkpoint() == {"generation": 0}
    # Readers see new commits while the run goes on.
    writer.record_candidate(make_record("e" * 16, finished_at=101.0))
    assert len(reader.candidates()) == 2
    with pytest.raises(ResultStoreError, match="read_only"):
        reader.record_candidate(make_record("f" * 16))
    reader.close()
    del writer  # dropped without close()
    with ResultStore(path) as store:
        assert len(store.candidates()) == 2


def test_rollback_journal_and_full_sync_and_schema_objects(path: Path) -> None:
    with ResultStore(path) as store:
        store.record_candidate(make_record("a" * 16, metrics={"dev_accuracy": 0.9, "params": 10.0, "flops": 7}))
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # commits land in the file itself
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert not path.with_name(path.name + "-wal").exists() and not path.with_name(path.name + "-journal").exists()
    conn = sqlite3.connect(path)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"meta", "candidates", "generations", "checkpoint", "candidates_generation", "candidates_fitness"} <= names
    row = conn.execute("SELECT dev_accuracy, params, typeof(params), flops, robust_accuracy FROM candidates").fetchone()
    assert row == (0.9, 10, "integer", 7, None)
    with pytest.raises(sqlite3.IntegrityError):  # the CHECK guards the file too, not only the dataclass
        conn.execute("UPDATE candidates SET status = 'maybe'")
    conn.close()


def test_run_config_first_write_and_resume_rules(path: Path) -> None:
    with ResultStore(path) as store:
        store.write_run_config(CONFIG, "fp1", resume=False)
        assert store.run_config() == CONFIG
        assert store.metadata()["config_fingerprint"] == "fp1"
    with ResultStore(path) as store:
        with pytest.raises(RunExistsError, match="pass --resume to continue it or choose another run.name"):
            store.write_run_config(CONFIG, "fp1", resume=False)
        store.write_run_config(CONFIG, "fp1", resume=True)  # same config: fine
        changed = {"run": {"name": "r", "seed": 0}, "evolution": {"population_size": 16, "mutation": {}}}
        with pytest.raises(ConfigMismatchError) as info:
            store.write_run_config(changed, "fp2", resume=True)
        message = str(info.value)
        assert "evolution.population_size: 8 → 16" in message
        assert "evolution.mutation.rate: 0.5 → '<absent>'" in message
        assert "run.seed" not in message
        assert [d[0] for d in info.value.differences] == ["evolution.mutation.rate", "evolution.population_size"]
        assert store.run_config() == CONFIG  # unchanged by the refused resume


def test_resume_on_fresh_store_writes_config(path: Path) -> None:
    with ResultStore(path) as store:
        store.write_run_config(CONFIG, "fp1", resume=True)
        assert store.run_config() == CONFIG


def test_generations_recorded_and_replaced(path: Path) -> None:
    with ResultStore(path) as store:
        store.record_generation(1, ["b", "c"], {"best": 0.7, "median": float("nan")})
        store.record_generation(0, ["a"], {"best": 0.5})
        store.record_generation(1, ["b", "d"], {"best": 0.8})  # a resumed run redoes generation 1
    with ResultStore(path) as store:
        gens = store.generations()
    assert [g["generation"] for g in gens] == [0, 1]
    assert gens[1]["population"] == ["b", "d"] and gens[1]["stats"] == {"best": 0.8}
    assert set(gens[0]) == {"generation", "population", "stats", "created_at"}


def test_checkpoint_replace_and_load(path: Path) -> None:
    state1 = {"generation": 0, "rng": [3, [1, 2, 3], None], "population": [{"fitness": [float("-inf")]}]}
    state2 = {"generation": 1, "phase": "evaluate", "seen": ["a", "b"]}
    with ResultStore(path) as store:
        store.save_checkpoint(state1)
        loaded = store.load_checkpoint()
        assert loaded["population"][0]["fitness"] == [float("-inf")] and loaded["rng"] == [3, [1, 2, 3], None]
        store.save_checkpoint(state2)
    with ResultStore(path) as store:
        assert store.load_checkpoint() == state2
        assert store._conn.execute("SELECT COUNT(*) FROM checkpoint").fetchone()[0] == 1


def test_non_finite_floats_round_trip_as_standard_json(path: Path) -> None:
    metrics = {"dev_accuracy": float("nan"), "params": 10, "up": float("inf"), "down": float("-inf"),
               "np": np.float32(0.25), "npi": np.int64(7), "deep": {"v": [float("nan"), 1.0]}}
    record = make_record("n" * 16, metrics=metrics, fitness=float("inf"), objectives=(float("nan"), float("-inf")))
    with ResultStore(path) as store:
        store.record_candidate(record)
    with ResultStore(path) as store:
        back = store.candidate(record.genome_hash)
    assert math.isnan(back.metrics["dev_accuracy"]) and math.isnan(back.metrics["deep"]["v"][0])
    assert back.metrics["up"] == float("inf") and back.metrics["down"] == float("-inf")
    assert back.metrics["np"] == 0.25 and back.metrics["npi"] == 7 and type(back.metrics["npi"]) is int
    assert math.isnan(back.objectives[0]) and back.objectives[1] == float("-inf")
    assert back.fitness == float("inf")
    conn = sqlite3.connect(path)
    raw_metrics, raw_objectives, promoted = conn.execute(
        "SELECT metrics, objectives, dev_accuracy FROM candidates").fetchone()
    conn.close()

    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    json.loads(raw_metrics, parse_constant=reject)  # strict JSON: no NaN/Infinity tokens on disk
    json.loads(raw_objectives, parse_constant=reject)
    assert promoted is None  # NaN in a REAL column is SQL NULL


def test_nan_fitness_reads_back_as_none(path: Path) -> None:
    with ResultStore(path) as store:
        store.record_candidate(make_record("m" * 16, fitness=float("nan")))
        assert store.candidate("m" * 16).fitness is None


def test_bad_records_are_refused(path: Path) -> None:
    with pytest.raises(ResultStoreError, match="status 'done'"):
        make_record("x" * 16, status="done")
    with ResultStore(path) as store:
        with pytest.raises(ResultStoreError, match=r"metrics\.model = <object"):
            store.record_candidate(make_record("x" * 16, metrics={"model": object()}))
        with pytest.raises(ResultStoreError, match="string keys"):
            store.record_candidate(make_record("x" * 16, metrics={1: 0.5}))
        assert store.candidates() == []  # nothing half-written


def test_candidates_frame_columns_and_rows(path: Path) -> None:
    with ResultStore(path) as store:
        store.record_candidate(make_record("late" * 4, finished_at=300.0, parents=("p",),
                                           metrics={"dev_accuracy": 0.9, "seconds": 4.0,
                                                    "lat": {"b1": 1.0, "b32": 9.0}}))
        store.record_candidate(make_record("early" * 3, finished_at=100.0, metrics={"dev_accuracy": 0.6, "params": 5}))
        store.record_candidate(make_record("fail" * 4, finished_at=200.0, status="failed"))
        frame = store.candidates_frame()
    assert list(frame["genome_hash"]) == ["early" * 3, "fail" * 4, "late" * 4]
    assert len(frame) == 3
    for column in ("genome_hash", "genome_json", "generation", "parents", "status", "fitness", "objectives",
                   "error", "attempts", "seconds", "worker", "finished_at",
                   "dev_accuracy", "params", "metric_seconds", "lat.b1", "lat.b32"):
        assert column in frame.columns, column
    assert "metrics" not in frame.columns
    late = frame.iloc[2]
    assert late["parents"] == ["p"] and late["seconds"] == 2.5 and late["metric_seconds"] == 4.0
    assert late["lat.b32"] == 9.0 and math.isnan(late["params"])
    assert frame["dev_accuracy"].iloc[0] == 0.6 and math.isnan(frame["dev_accuracy"].iloc[1])
    assert frame["status"].tolist() == ["ok", "failed", "ok"]


def test_schema_version_mismatch_is_a_clear_error(path: Path) -> None:
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match=f"schema version 99, this rosearch reads version {SCHEMA_VERSION}"):
        ResultStore(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.execute("UPDATE meta SET value = '0.1.0' WHERE key = 'rosearch_version'")
    conn.commit()
    conn.close()
    # a run of the previous schema: which rosearch wrote it, and what to do
    with pytest.raises(SchemaVersionError, match=r"schema version 1,.*written by rosearch 0\.1\.0.*run the search again"):
        ResultStore(path)
    with pytest.raises(SchemaVersionError):
        ResultStore(path, read_only=True)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match="no meta table"):
        ResultStore(other)
    conn = sqlite3.connect(other)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # refused file left untouched
    conn.close()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(SchemaVersionError, match="not a SQLite results file"):
        ResultStore(garbage)
    with pytest.raises(FileNotFoundError, match="missing.sqlite"):
        ResultStore(tmp_path / "missing.sqlite", read_only=True)


def test_closed_store_refuses_use(path: Path) -> None:
    store = ResultStore(path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(ResultStoreError, match="closed"):
        store.candidates()


def test_committed_candidates_survive_kill_9(path: Path) -> None:
    code = textwrap.dedent(f"""
        import os, signal
        from rosearch.results.store import CandidateRecord, ResultStore
        store = ResultStore({str(path)!r})
        for i in range(3):
            store.record_candidate(CandidateRecord(
                genome_hash=f"h{{i}}", genome_json="{{}}", generation=0, parents=(), status="ok",
                metrics={{"dev_accuracy": i / 10}}, fitness=float(i), objectives=(float(i),), error=None,
                attempts=1, seconds=0.1, worker="w", finished_at=float(i)))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with ResultStore(path) as store:
        records = store.candidates()
    assert [r.genome_hash for r in records] == ["h0", "h1", "h2"]
    assert [r.metrics["dev_accuracy"] for r in records] == [0.0, 0.1, 0.2]


def test_replace_with_bad_status_is_refused() -> None:
    record = make_record("z" * 16)
    with pytest.raises(ResultStoreError):
        replace(record, status="unknown")


def test_a_run_written_in_wal_mode_is_switched_to_the_rollback_journal_on_its_next_write(path: Path) -> None:
    with ResultStore(path) as store:
        store.record_candidate(make_record("a" * 16))
    with sqlite3.connect(path) as conn:  # as an older rosearch left it
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    with ResultStore(path) as store:
        store.record_candidate(make_record("b" * 16))
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    copy = path.with_name("copy.sqlite")
    copy.write_bytes(path.read_bytes())  # the file alone
    with ResultStore(copy, read_only=True) as store:
        assert [r.genome_hash for r in store.candidates()] == ["a" * 16, "b" * 16]
