"""Run directories that cannot be clobbered: one test per fault a careless or
hostile user hit, each run on tiny models and data, each checking that nothing was lost and
that the error came before any preparation."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from rosearch.cli import main
from rosearch.config import ConfigError, config_from_dict, load_config
from rosearch.records.store import CandidateRecord, ResultStore
from rosearch.files.rundir import RunLock, RunLockedError, RunPathError, contained_run_dir
from rosearch.search import SearchSummary, run_search
from test_search import tiny_search_dict

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")


def write_config(tmp_path: Path, data: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def nothing_prepared(tmp_path: Path) -> bool:
    """The tiny configs put the cache under tmp_path/cache: absent means no data or teacher work ran."""
    return not (tmp_path / "cache").exists()


def fill_store(path: Path, n: int) -> list[str]:
    """A results file with ``n`` finished candidates (several pages, so corruption can hit data)."""
    hashes = []
    with ResultStore(path) as store:
        store.write_run_config({"run": {"name": "x"}}, "fp", resume=False)
        for i in range(n):
            key = f"{i:064x}"
            store.record_candidate(CandidateRecord(
                genome_hash=key, genome_json="{}", generation=0, parents=(), status="ok",
                metrics={"dev_accuracy": 0.5, "note": "x" * 200}, fitness=0.5, objectives=(0.5,), error=None,
                attempts=1, seconds=1.0, worker="w", finished_at=float(i)))
            hashes.append(key)
    return hashes


# ------------------------------------------------------------------ run.name escapes output_dir


@pytest.mark.parametrize("name", ["..", ".", "", "  ", "a/b", "../evil", "a\\b", "nul\0byte"])
def test_run_names_that_leave_output_dir_are_refused_at_load(name):
    with pytest.raises(ConfigError, match="run.name"):
        config_from_dict({"run": {"name": name}})


def test_run_name_dotdot_from_the_command_line_writes_nothing_outside(tmp_path, tiny_sst2_dir, tiny_teacher_dir, capsys,
                                                                     fault_table):
    (tmp_path / "config.json").write_text('{"mine": true}')  # the user's file the run used to overwrite
    path = write_config(tmp_path, tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    with fault_table.watch("`run.name=..`", [tmp_path / "config.json"]) as w:
        w.rc = main(["search", "--config", str(path), "--set", "run.name=.."])
    assert w.rc == 2
    assert "run.name" in capsys.readouterr().err
    assert (tmp_path / "config.json").read_text() == '{"mine": true}'
    assert not (tmp_path / "results.sqlite").exists() and not (tmp_path / "runs").exists()


def test_a_symlinked_run_name_pointing_outside_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunPathError, match="outside run.output_dir"):
        contained_run_dir(tmp_path / "runs", "link")
    assert contained_run_dir(tmp_path / "runs", "plain") == (tmp_path / "runs" / "plain").resolve()


# ------------------------------------------------------------------ one driver per run directory


def test_second_driver_is_refused_at_once_naming_the_holder(tmp_path, tiny_sst2_dir, tiny_teacher_dir, fault_table):
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    run_dir = config.run.run_dir
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rosearch.files.rundir import RunLock; "
         "lock = RunLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)", str(run_dir)],
        env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.time()
        with pytest.raises(RunLockedError, match=rf"pid {holder.pid} on host {socket.gethostname()}"):
            run_search(config, resume=True)
        fault_table.add("a second driver on a live run ", 2)
        assert time.time() - start < 10
        assert nothing_prepared(tmp_path) and not (run_dir / "results.sqlite").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the next driver takes over and says so
    with RunLock(run_dir):
        pass


def test_stale_lock_of_a_dead_process_is_reported_and_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 1.0,
                                                "command": "rosearch search"}))
    with caplog.at_level(logging.WARNING, logger="rosearch.files.rundir"), RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert f"stale lock of pid {dead.pid} on host {socket.gethostname()}" in caplog.text and "(dead)" in caplog.text
    assert (tmp_path / ".lock").read_text() == ""  # released cleanly: no holder recorded


# ------------------------------------------------------------------ results.sqlite alone is the run


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_copy_of_results_sqlite_alone_after_kill_9_keeps_every_finished_candidate(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                                                  fault_table):
    path = write_config(tmp_path, tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    db = tmp_path / "runs" / "tiny" / "results.sqlite"
    proc = subprocess.Popen([sys.executable, str(REPO / "run_search.py"), "--config", str(path)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while (not db.exists() or _count(db) < 3) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the search finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with ResultStore(db, read_only=True) as store:  # the live file, with whatever -wal it left
        finished = {r.genome_hash: r.metrics for r in store.candidates()}
    assert len(finished) >= 3
    copy = tmp_path / "archive" / "results.sqlite"
    copy.parent.mkdir()
    shutil.copy(db, copy)  # the one file, no -wal or -shm
    with ResultStore(copy, read_only=True) as store:
        copied = {r.genome_hash: r.metrics for r in store.candidates()}
        assert copied == finished  # every commit was written into results.sqlite itself
        assert store.run_config()["run"]["name"] == "tiny"
    fault_table.add("`kill -9` of a search, then a copy of results.sqlite alone ", -9)


def test_snapshot_of_a_live_store_is_one_consistent_file(tmp_path, fault_table):
    hashes = fill_store(tmp_path / "results.sqlite", 5)
    writer = ResultStore(tmp_path / "results.sqlite")  # still open, as during a search
    try:
        assert main(["snapshot", str(tmp_path), str(tmp_path / "backup" / "copy.sqlite")]) == 0
    finally:
        writer.close()
    assert not (tmp_path / "backup" / "copy.sqlite-wal").exists()
    with ResultStore(tmp_path / "backup" / "copy.sqlite", read_only=True) as store:
        assert [r.genome_hash for r in store.candidates()] == hashes
    with fault_table.watch("`snapshot` onto an existing file ", [tmp_path]) as w:
        w.rc = main(["snapshot", str(tmp_path), str(tmp_path / "backup" / "copy.sqlite")])
    assert w.rc == 2 and not w.lost  # never overwrites


# ------------------------------------------------------------------ analysis of a read-only copy


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """Root ignores file modes; run the command as nobody so the copy is really read-only."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only copy cannot be simulated")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]


def test_stats_report_export_work_on_a_read_only_copy(tmp_path, tiny_sst2_dir, tiny_teacher_dir, fault_table):
    base = Path(tempfile.mkdtemp(prefix="rosearch-ro-"))  # world-readable, unlike pytest's tmp_path
    try:
        os.chmod(base, 0o755)
        teacher, sst2 = base / "teacher", base / "SST-2"  # export reads the teacher and the data: the reader must see them
        shutil.copytree(tiny_teacher_dir, teacher)
        shutil.copytree(tiny_sst2_dir, sst2)
        for root, _, files in os.walk(base):
            os.chmod(root, 0o755)
            for name in files:
                os.chmod(Path(root) / name, 0o644)
        config = config_from_dict(tiny_search_dict(tmp_path, sst2, teacher, evolution={"generations": 1}))
        run_search(config)
        copy = base / "run"
        shutil.copytree(config.run.run_dir, copy)
        with sqlite3.connect(copy / "results.sqlite") as conn:  # the worst case: a run written in WAL mode (older rosearch)
            assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        for p in (copy / "results.sqlite-wal", copy / "results.sqlite-shm"):
            p.unlink(missing_ok=True)
        out = base / "out"
        out.mkdir(mode=0o777)
        os.chmod(out, 0o777)
        for root, dirs, files in os.walk(copy):
            for name in files:
                os.chmod(Path(root) / name, 0o444)
            os.chmod(root, 0o555)
        env = dict(ENV, HOME=str(out), MPLCONFIGDIR=str(out / "mpl"))
        for args in (["stats", str(copy), "--out", str(out / "stats")],
                     ["report", str(copy), "--out", str(out / "report.html")],
                     ["export", str(copy), "--top", "1", "--out", str(out / "export")]):
            done = subprocess.run(_as_unprivileged([sys.executable, "-m", "rosearch.cli", *args]), env=env, cwd=out,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (args, done.stderr[-2000:])
            fault_table.add(f"`{args[0]}` of a read-only copy of a run ", done.returncode)
        done = subprocess.run(_as_unprivileged([sys.executable, "-m", "rosearch.cli", "stats", str(copy)]), env=env,
                              cwd=out, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "pass --out DIR" in done.stderr  # nothing is written into the copy
        assert (out / "stats").is_dir() and (out / "report.html").is_file()
        assert any((out / "export").iterdir())
        assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in config.run.run_dir.iterdir()
                                                               if not p.name.startswith("results.sqlite-"))
    finally:
        for root, dirs, files in os.walk(base):
            os.chmod(root, 0o755)
        shutil.rmtree(base)


# ------------------------------------------------------------------ a damaged store, before preparation


def test_corrupted_store_is_rc_2_before_any_preparation(tmp_path, tiny_sst2_dir, tiny_teacher_dir, capsys, fault_table):
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    db = tmp_path / "runs" / "tiny" / "results.sqlite"
    db.parent.mkdir(parents=True)
    fill_store(db, 60)
    raw = bytearray(db.read_bytes())
    assert len(raw) > 3 * 4096
    raw[4096:len(raw) - 4096] = bytes(range(256)) * ((len(raw) - 8192) // 256) + bytes((len(raw) - 8192) % 256)
    db.write_bytes(bytes(raw))
    with fault_table.watch("`search --resume` on a damaged store ", [db]) as w:
        w.rc = main(["search", "--config", str(write_config(tmp_path, data)), "--resume"])
    assert w.rc == 2 and not w.lost
    err = capsys.readouterr().err
    assert str(db) in err and "damaged" in err and "rosearch snapshot" in err and "Traceback" not in err
    assert nothing_prepared(tmp_path)


# ------------------------------------------------------------------ genome files, before allocation


def _genome_file(tmp_path: Path, config, **shape) -> Path:
    import random

    from rosearch.search_space.sampling import sample_genome

    data = sample_genome(random.Random(0), config.search_space).to_dict() | shape
    path = tmp_path / "genome.json"
    path.write_text(json.dumps(data))
    return path


def test_oversized_genome_is_refused_before_allocation(tmp_path, tiny_sst2_dir, tiny_teacher_dir, capsys, fault_table):
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    data["search_space"]["hidden_sizes"] = [32, 16384]
    config = config_from_dict(data)
    genome = _genome_file(tmp_path, config, hidden_size=16384)
    cfg = str(write_config(tmp_path, data))
    start = time.time()
    assert main(["distill", "--config", cfg, "--set", "search_space.param_budget=2000000", "--genome", str(genome)]) == 2
    assert "search_space.param_budget=2,000,000" in capsys.readouterr().err
    assert main(["distill", "--config", cfg, "--genome", str(genome)]) == 2  # no budget: the memory ceiling
    err = capsys.readouterr().err
    assert "GiB" in err and "more than the" in err and "a search's candidates included" in err
    assert time.time() - start < 30 and nothing_prepared(tmp_path)
    fault_table.add("`distill --genome` over param_budget, or over the free memory ", 2)


def test_genome_outside_the_search_space_names_the_field(tmp_path, tiny_sst2_dir, tiny_teacher_dir, capsys):
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    genome = _genome_file(tmp_path, config_from_dict(data), embedding_size=24)
    assert main(["distill", "--config", str(write_config(tmp_path, data)), "--genome", str(genome)]) == 2
    err = capsys.readouterr().err
    assert "embedding width E=24 is outside search_space.embedding_sizes=[16]" in err
    assert "teacher embedding width" not in err and nothing_prepared(tmp_path)


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read"), ("{not json", "not valid JSON"), ('{"hidden_size": 32}', "not a valid genome"),
])
def test_missing_or_malformed_genome_files_are_rc_2_before_preparation(
        tmp_path, tiny_sst2_dir, tiny_teacher_dir, capsys, content, message, fault_table):
    genome = tmp_path / "g.json"
    if content is not None:
        genome.write_text(content)
    path = write_config(tmp_path, tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    assert main(["distill", "--config", str(path), "--genome", str(genome)]) == 2
    err = capsys.readouterr().err
    assert str(genome) in err and message in err and nothing_prepared(tmp_path)
    fault_table.add(f"`distill --genome` file: {message} ", 2)


# ------------------------------------------------------------------ tracebacks that are now rc 2


def test_max_length_beyond_the_teachers_positions_is_rc_2_before_preparation(tmp_path, tiny_sst2_dir, tiny_teacher_dir, capsys,
                                                                            fault_table):
    path = write_config(tmp_path, tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    assert main(["search", "--config", str(path), "--set", "data.max_length=100"]) == 2  # the tiny teacher has 64
    fault_table.add("`data.max_length` beyond the teacher's positions ", 2)
    assert "data.max_length <= 64" in capsys.readouterr().err and nothing_prepared(tmp_path)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_everywhere(value):
    for key in ("distill.learning_rate", "teacher.epochs", "fitness.efficiency_weight", "workers.timeout_s"):
        with pytest.raises(ConfigError, match=rf"{key}.*finite"):
            load_config(None, [f"{key}={value}"])


def test_config_file_errors_are_clear(tmp_path, capsys, fault_table):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    assert main(["search", "--config", str(bad)]) == 2
    fault_table.add("a Latin-1 config file ", 2)
    assert main(["search", "--set", "distill.learning_rate=.inf"]) == 2
    fault_table.add("`distill.learning_rate=.inf` ", 2)
    assert "not UTF-8" in capsys.readouterr().err
    upper = tmp_path / "run.TOML"
    upper.write_text('[run]\nname = "from-toml"\n')
    assert load_config(upper).run.name == "from-toml"


def test_unwritable_output_dir_is_rc_2_before_preparation(tmp_path, tiny_sst2_dir, tiny_teacher_dir, capsys, fault_table):
    (tmp_path / "a-file").write_text("")
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    data["run"]["output_dir"] = str(tmp_path / "a-file" / "runs")
    assert main(["search", "--config", str(write_config(tmp_path, data))]) == 2
    assert "not writable" in capsys.readouterr().err and nothing_prepared(tmp_path)
    fault_table.add("an unwritable `run.output_dir` ", 2)


def test_attack_on_a_missing_model_or_unknown_recipe_is_rc_2(tmp_path, capsys, fault_table):
    assert main(["attack", "--model", str(tmp_path / "nonexistent"), "--recipe", "bogus"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["attack", "--model", str(tmp_path / "nonexistent")]) == 2
    assert "is not a saved model directory" in capsys.readouterr().err
    fault_table.add("`attack` with a missing model or an unknown recipe ", 2)


def test_teacher_cache_errors_are_rc_2_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    import rosearch.prepare.inputs
    from rosearch.distill.teacher_cache import TeacherCacheError

    def broken(config, device):
        raise TeacherCacheError("cache file x is truncated (fix: delete it)")

    monkeypatch.setattr(rosearch.prepare.inputs, "prepare_inputs", broken)
    args = ["teacher", "--set", f"run.cache_dir={tmp_path}", "--set", "run.device=cpu"]
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err
    for debug in (["--debug", *args], [*args, "--debug"]):
        assert main(debug) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "fix: delete it" in err


# ------------------------------------------------------------------ exit codes a scheduler can trust


def test_a_search_whose_candidates_all_fail_exits_non_zero(tmp_path, tiny_sst2_dir, tiny_teacher_dir, monkeypatch, capfd,
                                                          fault_table):
    import rosearch.search

    def crash(*args, **kwargs):
        raise RuntimeError("student diverged")

    monkeypatch.setattr(rosearch.search, "evaluate_candidate", crash)
    path = write_config(tmp_path, tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                   evolution={"generations": 1}, workers={"max_retries": 0}))
    assert main(["search", "--config", str(path)]) == 3  # the CLI's logging goes to stderr
    fault_table.add("a search in which every candidate fails ", 3, "nothing (each failure is stored)")
    err = capfd.readouterr().err
    assert "every candidate failed: 4x RuntimeError: student diverged" in err
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["failed"] == 4 and summary["failure_reasons"] == {"RuntimeError: student diverged": 4}


def test_failed_share_threshold():
    summary = SearchSummary(run_dir="r", evaluated=6, failed=2, reused=0, wall_seconds=1.0, top=[],
                            teacher_dev_accuracy=0.9, timings={}, failure_reasons={"TimeoutError: t": 2})
    assert summary.failure_verdict(1.0) is None and summary.failure_verdict(0.25) is None
    assert "2 of 8 candidates (25%) failed, more than run.max_failed_share=0.2: 2x TimeoutError: t" == \
        summary.failure_verdict(0.2)
    assert SearchSummary(**(summary.__dict__ | {"failed": 0})).failure_verdict(0.0) is None
    with pytest.raises(ConfigError, match="run.max_failed_share"):
        config_from_dict({"run": {"max_failed_share": 1.5}})
