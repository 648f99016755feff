"""The fault drill: every fault a hostile new user found, tried on tiny models and data.

Each test adds its rows to the session's fault table (``fault_table`` in conftest.py): the case, the
exit code, and what was lost — measured by fingerprinting the files that must survive before and
after. The run-directory faults add theirs from tests/test_run_safety.py, so
``pytest -s tests/test_fault_drill.py tests/test_run_safety.py`` prints the whole table
(``ROSEARCH_FAULT_TABLE=PATH`` also writes it; bench/README.md quotes it).
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rosearch.cli import main
from rosearch.config import ConfigError, config_from_dict, load_config
from rosearch.records.store import ResultStore
from rosearch.files.rundir import LOCK_FILE
from rosearch.search import run_search
from test_run_safety import ENV, REPO, nothing_prepared, write_config
from test_search import tiny_search_dict


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_sst2_dir, tiny_teacher_dir) -> SimpleNamespace:
    """A finished one-generation tiny run and its best student, exported (seconds)."""
    base = tmp_path_factory.mktemp("drill")
    data = tiny_search_dict(base, tiny_sst2_dir, tiny_teacher_dir, evolution={"generations": 1})
    config = config_from_dict(data)
    run_search(config)
    assert main(["export", str(config.run.run_dir), "--top", "1", "--out", str(base / "export")]) == 0
    return SimpleNamespace(base=base, run=config.run.run_dir, export=next((base / "export").iterdir()))


def fresh(tmp_path: Path, sst2_dir: Path, teacher_dir: Path, **sections) -> Path:
    """A config file of a new tiny run under ``tmp_path`` (its cache too: see ``nothing_prepared``)."""
    return write_config(tmp_path, tiny_search_dict(tmp_path, sst2_dir, teacher_dir, **sections))


# ------------------------------------------------------------------ 1. outputs: never over what is not ours


def test_report_never_overwrites_what_it_did_not_write(finished, tmp_path, fault_table, capsys):
    run = finished.run
    with fault_table.watch("`report RUN --out RUN/results.sqlite` (the run's own store)", [run]) as w:
        w.rc = main(["report", str(run), "--out", str(run / "results.sqlite")])
    err = capsys.readouterr().err
    assert w.rc == 2 and not w.lost and "a run's results store" in err and "fix:" in err and "Traceback" not in err
    user = tmp_path / "notes.html"
    user.write_text("<!DOCTYPE html><html><title>my notes</title></html>")
    with fault_table.watch("`report --out` onto a user's HTML file", [user]) as w:
        w.rc = main(["report", str(run), "--out", str(user)])
    assert w.rc == 2 and not w.lost and "not an HTML report rosearch wrote" in capsys.readouterr().err
    own = tmp_path / "report.html"  # an earlier report (its generator tag) is replaced
    own.write_text('<!DOCTYPE html>\n<html><head><meta name="generator" content="rosearch report"></head></html>')
    with fault_table.watch("`report --out` over its own earlier report", [run]) as w:
        w.rc = main(["report", str(run), "--out", str(own)])
    assert w.rc == 0 and not w.lost and '<meta name="generator" content="rosearch report">' in own.read_text()


def test_stats_export_snapshot_attack_refuse_outputs_that_are_not_theirs(finished, tmp_path, fault_table, capsys):
    run = finished.run
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    (tmp_path / "a-file").write_text("not a directory")
    cases = [
        ("`stats RUN --out RUN`", ["stats", str(run), "--out", str(run)], "not part of the statistics tables"),
        ("`export RUN --out RUN`", ["export", str(run), "--out", str(run)], "not part of the student folders"),
        ("`export --out` a user's folder", ["export", str(run), "--out", str(user)], "'thesis.tex'"),
        ("`snapshot RUN RUN/results.sqlite`", ["snapshot", str(run), str(run / "results.sqlite")], "already exists"),
        ("`attack --out` onto a file", ["attack", "--model", str(finished.export), "--out", str(tmp_path / "a-file")],
         "not a directory"),
    ]
    for case, argv, message in cases:
        with fault_table.watch(case, [run, user, tmp_path / "a-file", finished.export]) as w:
            w.rc = main(argv)
        err = capsys.readouterr().err
        assert w.rc == 2 and not w.lost, (case, err)
        assert message in err and "Traceback" not in err, (case, err)
    fault_table.add("`predict`: writes only to stdout (no `--out`)", "n/a")


def test_a_search_never_writes_into_a_directory_that_is_not_a_run(finished, tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                                    fault_table, capsys):
    model = tmp_path / "D" / "model"
    shutil.copytree(finished.export, model)  # an exported model where the run would go
    cfg = fresh(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    with fault_table.watch("search into an exported model's folder (`run.name=model`)", [model]) as w:
        w.rc = main(["search", "--config", str(cfg), "--set", f"run.output_dir={model.parent}", "--set", "run.name=model"])
    err = capsys.readouterr().err
    assert w.rc == 2 and not w.lost and "is not a rosearch run" in err and "'config.json'" in err and "fix:" in err
    assert nothing_prepared(tmp_path) and not (model / "results.sqlite").exists()


def test_a_zero_byte_store_is_refused_on_resume(finished, tmp_path, tiny_sst2_dir, tiny_teacher_dir, fault_table,
                                                 capsys):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished.run / "candidates", run / "candidates")
    (run / "results.sqlite").write_bytes(b"")
    cfg = fresh(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    with fault_table.watch("`search --resume` on a zero-byte results.sqlite", [run]) as w:
        w.rc = main(["search", "--config", str(cfg), "--resume"])
    err = capsys.readouterr().err
    assert w.rc == 2 and not w.lost and "is empty (0 bytes)" in err and "rosearch snapshot" in err
    assert nothing_prepared(tmp_path) and (run / "results.sqlite").stat().st_size == 0


# ------------------------------------------------------------------ 3. no hang: Ray addresses, signals


@pytest.fixture
def web_server():
    """An HTTP server on a free local port: it accepts TCP, but it is not Ray."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_address_that_is_not_ray_fails_in_seconds_before_preparation(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                                         web_server, fault_table, capsys):
    cfg = fresh(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    silent = socket.socket()  # accepts (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        for case, address, timeout, message in [
            ("`workers.address` = a web server", web_server, 30, "it answered"),
            ("`workers.address` = a port that accepts and stays silent (`connect_timeout_s=1`)",
             f"127.0.0.1:{silent.getsockname()[1]}", 1, "within workers.connect_timeout_s=1 s"),
        ]:
            start = time.perf_counter()
            with fault_table.watch(case, [tmp_path]) as w:
                w.rc = main(["search", "--config", str(cfg), "--set", "workers.backend=ray", "--set",
                             f"workers.address={address}", "--set", f"workers.connect_timeout_s={timeout}"])
            err = capsys.readouterr().err
            assert w.rc == 2 and "is not a Ray cluster" in err and message in err and "fix:" in err, err
            assert time.perf_counter() - start < 10 and nothing_prepared(tmp_path)
    finally:
        silent.close()


def test_ray_init_is_bounded_by_connect_timeout_and_keeps_the_sigterm_handler(monkeypatch):
    import rosearch.workers.ray_backend as rb

    started = threading.Event()

    def hanging_init(**kwargs):  # what ray.init does against a GCS that never lets the driver in
        started.set()
        time.sleep(20)

    monkeypatch.setattr(rb, "_probe", lambda address, timeout: None)
    monkeypatch.setattr(rb.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(rb.ray, "init", hanging_init)
    mine = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    handler = lambda signum, frame: None  # noqa: E731
    signal.signal(signal.SIGTERM, handler)
    try:
        start = time.perf_counter()
        with pytest.raises(rb.BackendSetupError, match=r"no Ray session after workers.connect_timeout_s=0.5 s"):
            rb._connect("10.0.0.5:6379", 0.5)
        assert started.is_set() and time.perf_counter() - start < 5
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, mine)


def test_connect_timeout_is_a_validated_config_field():
    assert load_config(None).workers.connect_timeout_s == 30.0
    assert load_config(None, ["workers.connect_timeout_s=2.5"]).workers.connect_timeout_s == 2.5
    for bad in ("0", "-1", "1e9", "soon"):
        with pytest.raises(ConfigError, match="workers.connect_timeout_s"):
            load_config(None, [f"workers.connect_timeout_s={bad}"])


def _stored(db: Path) -> dict[str, dict]:
    with ResultStore(db, read_only=True) as store:
        return {r.genome_hash: r.metrics for r in store.candidates()}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _new_hashes(db: Path, before: set[str]) -> int:
    """How many candidates the store holds that ``before`` did not (0 while it cannot be read)."""
    try:
        return len(set(_stored(db)) - before)
    except Exception:  # not created yet, or mid-write: look again
        return 0


def _interrupt(cfg: Path, db: Path, signum: int, at_least: int, resume: bool, before: set[str]) -> tuple[int, str, float]:
    """Start a search in a child process, send ``signum`` once it has stored ``at_least`` candidates
    that were not in ``before`` (so the signal lands in the search loop, not while a resumed run is
    still starting up); return its exit code, stderr and the seconds from the signal to its exit."""
    argv = [sys.executable, "-m", "rosearch.cli", "search", "--config", str(cfg)] + (["--resume"] if resume else [])
    # a user's terminal delivers Ctrl-C: an earlier test in this process (Ray) may leave SIGINT ignored, and an
    # ignored signal is inherited through exec, so the child starts with Python's default handler restored
    proc = subprocess.Popen(argv, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 240
    while _new_hashes(db, before) < at_least and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    sent = time.perf_counter()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.perf_counter() - sent


def test_sigterm_and_ctrl_c_end_a_search_in_seconds_and_resume_loses_nothing(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                                             fault_table, capsys):
    # candidates of a second or two: the resumed run is still searching when the poll sees its first new one
    cfg = fresh(tmp_path, tiny_sst2_dir, tiny_teacher_dir, distill={"max_steps": 300})
    run = tmp_path / "runs" / "tiny"
    db = run / "results.sqlite"
    for case, signum, at_least, resume in [("SIGTERM during a search", signal.SIGTERM, 2, False),
                                           ("Ctrl-C (SIGINT) during `search --resume`", signal.SIGINT, 1, True)]:
        before = _stored(db) if db.exists() else {}
        rc, err, seconds = _interrupt(cfg, db, signum, at_least, resume, set(before))
        after = _stored(db)
        lost = [h for h, metrics in before.items() if after.get(h) != metrics]
        fault_table.add(case, rc, f"**{len(lost)} candidates**" if lost else "nothing")
        assert rc == 128 + signum, err[-2000:]
        assert "interrupted — resume with --resume" in err and "Traceback" not in err, err[-2000:]
        assert seconds < 15 and not lost and len(after) >= at_least
        assert (run / LOCK_FILE).read_text() == ""  # released: the next driver finds no holder
    finished = _stored(db)
    with fault_table.watch("`search --resume` after both interruptions", []) as w:
        w.rc = main(["search", "--config", str(cfg), "--resume"])
    assert w.rc == 0, capsys.readouterr().err[-2000:]
    final = _stored(db)
    assert all(final[h] == metrics for h, metrics in finished.items())  # nothing re-trained or lost
    with ResultStore(db, read_only=True) as store:
        assert store.load_checkpoint()["planned"] == [] and len(store.generations()) == 2


# ------------------------------------------------------------------ 4, 8. predict and attack on bad input


def test_predict_answers_every_good_line_and_reports_each_bad_one(finished, tmp_path, monkeypatch, fault_table, capsys):
    raw = b"good film \xff\xfe bad\nnormal line\n\ncaf\xc3\xa9 fine\n"
    source = tmp_path / "in.txt"
    source.write_bytes(raw)
    for case, argv in [("`predict` with non-UTF-8 bytes on stdin", []),
                       ("`predict --file` with a non-UTF-8 line", ["--file", str(source)])]:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
        with fault_table.watch(case, [finished.export]) as w:
            w.rc = main(["predict", "--model", str(finished.export), *argv])
        out, err = capsys.readouterr()
        rows = [json.loads(line) for line in out.splitlines()]
        assert w.rc == 2 and "Traceback" not in err and "not UTF-8 text (line 1)" in err
        assert rows[0]["line"] == 1 and "not UTF-8" in rows[0]["error"]
        assert [r.get("text") for r in rows[1:]] == ["normal line", "café fine"]
        assert all("label" in r for r in rows[1:])


def test_predict_and_attack_name_a_mistyped_config_field(tiny_teacher_dir, tmp_path, fault_table, capsys):
    model = tmp_path / "model"  # a plain BERT classifier: torch's layer constructors got the string
    shutil.copytree(tiny_teacher_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"hidden_size": "32"}))
    for case, argv in [("`predict` on a config.json with a string size", ["predict", "--model", str(model), "x"]),
                       ("`attack` on the same", ["attack", "--model", str(model)])]:
        with fault_table.watch(case, [model]) as w:
            w.rc = main(argv)
        err = capsys.readouterr().err
        assert w.rc == 2 and "field 'hidden_size' must be a positive integer, got '32'" in err and "Traceback" not in err


def test_a_pickle_only_model_dir_is_named_as_such(finished, tmp_path, fault_table, capsys):
    import torch

    from rosearch.student.modeling import register_auto_classes
    from transformers import AutoModelForSequenceClassification

    register_auto_classes()
    model = tmp_path / "pickled"
    shutil.copytree(finished.export, model)
    torch.save(AutoModelForSequenceClassification.from_pretrained(model), model / "pytorch_model.bin")  # the whole object
    (model / "model.safetensors").unlink()
    with fault_table.watch("`predict` on a folder with only a pickled `pytorch_model.bin`", [model]) as w:
        w.rc = main(["predict", "--model", str(model), "x"])
    err = capsys.readouterr().err
    assert w.rc == 2 and "only pytorch_model.bin, a pickle" in err and "save_pretrained" in err
    assert "TF 2.0" not in err


def test_attack_n_above_the_split_says_so(finished, tmp_path, fault_table, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [caplog.handler])  # not an earlier command's (its capture is closed)
    data = tmp_path / "SST-2"
    data.mkdir()
    (data / "dev.tsv").write_text("sentence\tlabel\ngood film \t1\nbad film \t0\ngreat fun \t1\n")
    (data / "train.tsv").write_text((data / "dev.tsv").read_text())
    with caplog.at_level(logging.WARNING, logger="rosearch"), \
            fault_table.watch("`attack --n 10` on a 3-example dev split (warns, attacks all 3)", [finished.export]) as w:
        w.rc = main(["attack", "--model", str(finished.export), "--data-dir", str(data), "--n", "10", "--recipe",
                     "deepwordbug", "--query-budget", "20", "--out", str(tmp_path / "attacks"), "--device", "cpu"])
    assert w.rc == 0 and "--n / attack.num_examples=10 is more than the 3 examples" in caplog.text


# ------------------------------------------------------------------ 6, 8. config values


def test_exponent_floats_are_numbers_in_files_and_overrides(tmp_path, fault_table):
    path = tmp_path / "c.yaml"
    path.write_text("distill:\n  learning_rate: 1e-3\nfitness:\n  accuracy_weight: 1.0e0\n")
    config = load_config(path, ["fitness.efficiency_weight=2E-2", "data.max_length=64"])
    assert config.distill.learning_rate == 1e-3 and config.fitness.accuracy_weight == 1.0
    assert config.fitness.efficiency_weight == 0.02 and config.data.max_length == 64
    assert load_config(None, ["distill.learning_rate=1.0e6"]).distill.learning_rate == 1e6
    fault_table.add("`1e-3` / `1.0e6` in a file and in `--set`", "0 (accepted)")


@pytest.mark.parametrize("name", ["two\nlines", "`rm -rf`", "<b>bold", "tab\there", "bell\a"])
def test_run_names_with_control_characters_or_markup_are_refused(name):
    with pytest.raises(ConfigError, match="run.name.*control characters"):
        config_from_dict({"run": {"name": name}})


def test_cli_refusals_of_names_counts_and_missing_data(tmp_path, tiny_sst2_dir, tiny_teacher_dir, fault_table, capsys):
    cfg = fresh(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    with fault_table.watch("`run.name` with backticks", [tmp_path]) as w:
        w.rc = main(["search", "--config", str(cfg), "--set", 'run.name="a`b`"'])  # quoted: YAML reads a string
    assert w.rc == 2 and "run.name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--config", str(cfg), "--count", "-1"])
    fault_table.add("`distill --count -1`", exit_info.value.code)
    assert exit_info.value.code == 2 and "expected a positive integer" in capsys.readouterr().err
    only_dev = tmp_path / "only-dev"
    only_dev.mkdir()
    shutil.copy(tiny_sst2_dir / "dev.tsv", only_dev / "dev.tsv")
    for command in ("search", "distill", "teacher"):
        with fault_table.watch(f"`{command}` with no train.tsv", [only_dev]) as w:
            w.rc = main([command, "--config", str(cfg), "--set", f"data.data_dir={only_dev}"])
        err = capsys.readouterr().err
        assert w.rc == 2 and "missing file" in err and "train.tsv" in err
        assert nothing_prepared(tmp_path) and not (tmp_path / "runs").exists()  # no empty run directory left


# ------------------------------------------------------------------ 8. export: modes and a hand-edited store


def test_exported_files_all_get_the_same_mode(finished, fault_table):
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in finished.export.iterdir() if p.is_file()}
    fault_table.add("exported `model.safetensors` mode (was 0600)", 0, "nothing (all files 0644 under umask 022)")
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_export_refuses_a_hand_edited_non_hex_genome_hash(finished, tmp_path, fault_table, capsys):
    run = tmp_path / "edited"
    shutil.copytree(finished.run, run)
    with sqlite3.connect(run / "results.sqlite") as conn:
        conn.execute("UPDATE candidates SET genome_hash = 'zz' || substr(genome_hash, 3)")
    with fault_table.watch("`export` of a store with a non-hex genome_hash", [run]) as w:
        w.rc = main(["export", str(run), "--top", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert w.rc == 2 and "not a hexadecimal digest" in err and "this genome's hash is" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 8. memory, 5. cluster defaults


def test_search_memory_check_counts_the_candidates_running_beside_each_other(tmp_path, caplog, fault_table):
    from rosearch.prepare.preflight import check_search_memory

    config = load_config(None, ["search_space.param_budget=50000000", "workers.num_cpus_per_candidate=1"])
    each = 50_000_000 * 16  # the optimiser state alone: 0.75 GiB per candidate
    with caplog.at_level(logging.WARNING, logger="rosearch"):
        check_search_memory(config, memory_limit=2 * each, cpus=1)  # one at a time: fits
        assert not caplog.text
        check_search_memory(config, memory_limit=2 * each, cpus=8)  # eight beside each other: does not
    assert "8 candidates train at once on this machine" in caplog.text and "workers.num_cpus_per_candidate" in caplog.text
    fault_table.add("memory check of the largest students, 8 at once on local Ray", "0 (warns)")


def test_the_documented_cluster_keeps_the_dashboard_on_localhost(fault_table):
    for path in (REPO / "README.md", REPO / "configs" / "cluster" / "ray-gpu-cluster.yaml"):
        heads = [line for line in path.read_text().splitlines() if "ray start --head" in line]
        assert heads and all("--dashboard-host=127.0.0.1" in line and "0.0.0.0" not in line for line in heads), heads
    assert "ssh -L 8265:localhost:8265" in (REPO / "README.md").read_text()
    fault_table.add("documented `ray start --head` (dashboard on 127.0.0.1, SSH tunnel)", "n/a")


def test_a_dashboard_open_to_the_network_is_warned_about(caplog, fault_table):
    import ray

    from rosearch.workers.ray_backend import warn_if_dashboard_exposed

    node_ip = ray.util.get_node_ip_address()
    if node_ip.startswith("127."):
        pytest.skip("this machine has no network address")
    for bind, exposed in (("0.0.0.0", True), ("127.0.0.1", False)):
        listener = socket.socket()
        listener.bind((bind, 0))
        listener.listen()
        try:
            with caplog.at_level(logging.WARNING, logger="rosearch"):
                caplog.clear()
                port = listener.getsockname()[1]
                assert warn_if_dashboard_exposed(f"{node_ip}:6379", f"127.0.0.1:{port}") is exposed
        finally:
            listener.close()
        assert ("CVE-2023-48022" in caplog.text) is exposed
    fault_table.add("joining a cluster whose dashboard is on 0.0.0.0", "0 (warns)")
