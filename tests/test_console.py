"""A calm console: workers' lines and library hints go to the run's log file (console with --verbose), no Ray
prefixes, de-duplication notices or ANSI codes in redirected output, one line per finished candidate."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
import yaml

from rosearch.runtime.logs import (
    WORKER_LOGGER,
    _ConsoleFilter,
    attach_run_log,
    detach_run_log,
    log_worker_lines,
    quiet_known_messages,
)
from test_search import REPO, tiny_search_dict

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_worker_lines_keep_their_level_and_leave_the_console_below_warning(caplog):
    with caplog.at_level(logging.INFO, logger=WORKER_LOGGER):
        log_worker_lines(123, ["12:00:01 I rosearch.attack.runner: attack: pwws on abc: 2/10 done",
                               "12:00:02 W rosearch.evaluate.candidate [attack worker 77]: odd", "Traceback (most recent"])
    records = [r for r in caplog.records if r.name == WORKER_LOGGER]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("INFO", "[worker 123] rosearch.attack.runner: attack: pwws on abc: 2/10 done"),
        ("WARNING", "[worker 123] rosearch.evaluate.candidate: odd"),
        ("INFO", "[worker 123] Traceback (most recent")]
    console = _ConsoleFilter()
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert [console.filter(r) for r in records] == [False, True, False]
        root.setLevel(logging.DEBUG)  # --verbose: the console shows them too
        assert all(console.filter(r) for r in records)
    finally:
        root.setLevel(level)


def test_library_hint_goes_to_the_run_log_not_the_console(tmp_path, caplog):
    quiet_known_messages()
    handler = attach_run_log(tmp_path / "rosearch.log")
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("transformers.modeling_utils").warning(
                "Some weights of BertForSequenceClassification were not initialized from the model checkpoint and are "
                "newly initialized: ['classifier.bias']\nYou should probably TRAIN this model on a down-stream task")
            logging.getLogger("transformers.modeling_utils").warning("Some other real problem")
    finally:
        detach_run_log(handler)
    assert [r.getMessage() for r in caplog.records if r.name == "transformers.modeling_utils"] == ["Some other real problem"]
    text = (tmp_path / "rosearch.log").read_text()
    assert "D transformers.modeling_utils: Some weights of BertForSequenceClassification" in text
    assert "You should probably TRAIN" in text and "Some other real problem" in text


def test_ray_worker_output_is_routed_to_records():
    """Ray's driver-side dispatcher: its printing handler is replaced, lines become records; the autoscaler's
    periodic status tables are dropped as Ray drops them, the raylet's reports are warnings."""
    pytest.importorskip("ray")
    from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

    from rosearch.workers.ray_backend import _forward_worker_output, route_worker_output

    route_worker_output()
    names = [name for name, _ in dispatcher.handlers]
    assert "ray_print_logs" not in names and names.count("rosearch_worker_output") == 1
    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append((record.levelname, record.getMessage()))

    catch = Catch()
    log = logging.getLogger(WORKER_LOGGER)
    log.addHandler(catch)
    level = log.level
    log.setLevel(logging.DEBUG)
    try:
        _forward_worker_output({"pid": 9, "ip": "10.0.0.2", "localhost": "10.0.0.1", "is_err": True,
                                "lines": ["12:00:01 E rosearch.search: boom"]})
        _forward_worker_output({"pid": "autoscaler", "lines": ["======== Autoscaler status ========", "Node status"]})
        _forward_worker_output({"pid": "raylet", "lines": ["Task was killed due to the node running low on memory."]})
    finally:
        log.removeHandler(catch)
        log.setLevel(level)
    assert seen == [("ERROR", "[worker 9 on 10.0.0.2] rosearch.search: boom"),
                    ("WARNING", "[ray raylet] Task was killed due to the node running low on memory.")]


def test_search_console_is_calm_and_the_run_log_keeps_the_rest(tmp_path, tiny_sst2_dir, tiny_tokenizer):
    """A real search on local Ray from a backbone (a new head, the hint) with attacks in the workers, output
    redirected: no ANSI code, no Ray prefix or notice, no library hint; one line per finished candidate."""
    pytest.importorskip("ray")
    from transformers import BertConfig, BertModel

    backbone = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(backbone)
    tiny_tokenizer.save_pretrained(backbone)
    data = tiny_search_dict(
        tmp_path, tiny_sst2_dir, backbone, workers={"backend": "ray", "num_cpus_per_candidate": 1},
        teacher={"finetuned": False, "epochs": 4, "learning_rate": 2e-3, "batch_size": 16},
        evolution={"generations": 1, "population_size": 2},
        attack={"enabled": True, "recipes": ["deepwordbug"], "num_examples": 6, "model_batch_size": 32,
                "nltk_data": str(tmp_path / "nltk"), "full_attack": "all"},
        fitness={"robustness_weight": 0.5})
    config_file = tmp_path / "search.yaml"
    config_file.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k not in ("ROSEARCH_LOG_LEVEL", "NO_COLOR")} | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "rosearch.cli", "search", "--config", str(config_file)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert not ANSI.search(out)
    for noise in ("(pid=", "(_attempt", "repeated", "RAY_DEDUP_LOGS", "You should probably TRAIN", "Some weights of",
                  "done, 0 successful"):
        assert noise not in out, noise
    assert len(re.findall(r"gen 0 candidate \d/2 [0-9a-f]{12}: acc", out)) == 2  # one line per finished candidate
    log = (tmp_path / "runs" / "tiny" / "rosearch.log").read_text()
    assert re.search(r"I rosearch\.worker: \[worker \d+\] rosearch\.attack\.runner: attack: deepwordbug on [0-9a-f]{12}: "
                     r"\d+/6 done", log)
    assert "You should probably TRAIN" in log and "gen 0 candidate 2/2" in log
