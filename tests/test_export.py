"""Export of a real tiny run's best students: stored weights, re-distillation for runs that kept
none (with an old-style config), retraining, and the reload check through the Auto API."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from test_search import tiny_search_dict
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rosearch.config import config_from_dict
from rosearch.files.outputs import OutputPathError
from rosearch.records.artifacts import load_student, read_candidate_files
from rosearch.commands.export import ExportError, export_students, load_run_config, verify_export
from rosearch.results.stats import architecture_frame
from rosearch.search import candidate_seed, run_search
from rosearch.student.modeling import register_auto_classes

TEXTS = ["the film was good and witty", "a dull , boring plot", "it is the movie"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_sst2_dir, tiny_teacher_dir, single_thread) -> Path:
    root = tmp_path_factory.mktemp("export")
    config = config_from_dict(tiny_search_dict(root, tiny_sst2_dir, tiny_teacher_dir, evolution={"generations": 1}))
    run_search(config)
    return config.run.run_dir


def _logits(model: torch.nn.Module, folder: Path) -> torch.Tensor:
    batch = AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_export_of_stored_weights_reloads_with_transformers(run_dir: Path, tmp_path: Path) -> None:
    folders = export_students(run_dir, tmp_path / "out", top=2, device="cpu")
    frame = architecture_frame(run_dir)
    assert [f.name for f in folders] == [f"rank{i}-{h[:12]}" for i, h in enumerate(frame["genome_hash"][:2], start=1)]
    register_auto_classes()
    for folder, genome_hash in zip(folders, frame["genome_hash"]):
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "genome.json", "metrics.json", "README.md"} <= names
        assert "tokenizer_config.json" in names and not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
        reloaded = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
        searched = load_student(read_candidate_files(run_dir, genome_hash))  # the weights the search measured
        assert torch.equal(_logits(reloaded, folder), _logits(searched, folder))
        assert reloaded.config.id2label == {0: "negative", 1: "positive"}
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["genome_hash"] == genome_hash and metrics["export"]["weights"] == "stored"
        assert metrics["export"]["dev_accuracy"] == metrics["search_metrics"]["dev_accuracy"]
        card = (folder / "README.md").read_text()
        config = json.loads((run_dir / "config.json").read_text())
        for fact in (genome_hash, "register_auto_classes()", run_dir.name, str(candidate_seed(config["run"]["seed"], genome_hash)),
                     f"{metrics['search_metrics']['dev_accuracy']:.4f}"):
            assert fact in card, fact
    # exporting again replaces the earlier export, never something else
    assert export_students(run_dir, tmp_path / "out", top=1, device="cpu") == folders[:1]
    (tmp_path / "other" / folders[0].name).mkdir(parents=True)  # named like a student folder, but not one
    with pytest.raises(OutputPathError, match="not part of the student folders of an earlier export"):
        export_students(run_dir, tmp_path / "other", top=1, device="cpu")  # refused before any work


def test_a_run_without_weights_is_distilled_again_to_the_same_model(run_dir: Path, tmp_path: Path) -> None:
    """A run whose candidate files are gone, moved to another folder; a stored config this rosearch
    refuses is an error that names the field and says to run the search again."""
    old = tmp_path / "archive" / "moved-run"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("candidates", "run_info.json"))
    broken = tmp_path / "archive" / "broken-run"
    shutil.copytree(old, broken)
    with sqlite3.connect(broken / "results.sqlite") as conn:
        config = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        config["attack"]["recipe"] = None
        conn.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config),))
    with pytest.raises(ExportError, match=r"attack\.recipe.*run the search again"):
        load_run_config(broken)
    folder = export_students(old, tmp_path / "out", top=1, device="cpu")[0]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["export"]["weights"] == "redistilled"
    assert metrics["export"]["dev_accuracy"] == metrics["search_metrics"]["dev_accuracy"]
    genome_hash = metrics["genome_hash"]
    register_auto_classes()
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    searched = load_student(read_candidate_files(run_dir, genome_hash))
    torch.testing.assert_close(_logits(reloaded, folder), _logits(searched, folder), rtol=0, atol=1e-6)


def test_retraining_records_both_accuracies(run_dir: Path, tmp_path: Path) -> None:
    folder = export_students(run_dir, tmp_path / "out", top=1, retrain_steps=3, device="cpu")[0]
    metrics = json.loads((folder / "metrics.json").read_text())
    export = metrics["export"]
    assert export["weights"] == "retrained" and export["retrain_steps"] == 3 and export["steps"] == 3
    assert 0.0 <= export["dev_accuracy"] <= 1.0
    assert export["search_dev_accuracy"] == metrics["search_metrics"]["dev_accuracy"]
    assert "3 steps" in (folder / "README.md").read_text()
    with pytest.raises(ExportError, match="retrain_steps"):
        export_students(run_dir, tmp_path / "bad", top=1, retrain_steps=0)


def test_verify_export_catches_a_folder_that_differs(run_dir: Path, tmp_path: Path) -> None:
    folder = export_students(run_dir, tmp_path / "out", top=1, device="cpu")[0]
    register_auto_classes()
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    assert verify_export(model, folder) == 0.0
    with torch.no_grad():
        model.classifier.bias.add_(0.01)
    with pytest.raises(ExportError, match="logits differ"):
        verify_export(model, folder)


def test_export_with_onnx_and_int8_records_the_checks(run_dir: Path, tmp_path: Path, capsys) -> None:
    from rosearch.cli import main
    from rosearch.deploy.predict import Predictor

    assert main(["export", str(run_dir), "--top", "1", "--out", str(tmp_path / "out"), "--device", "cpu", "--int8"]) == 0
    printed = capsys.readouterr().out
    assert "max |Δlogit| vs PyTorch" in printed and "int8: dev accuracy" in printed
    folder = next((tmp_path / "out").iterdir())
    onnx = json.loads((folder / "metrics.json").read_text())["onnx"]
    assert {"model.onnx", "model.int8.onnx"} <= {p.name for p in folder.iterdir()}
    assert onnx["check_texts"] == 60 and onnx["max_abs_logit_diff"] <= onnx["logit_tolerance"]  # all of the tiny dev split
    assert onnx["dev_accuracy_onnx"] == onnx["dev_accuracy_torch"] == pytest.approx(
        json.loads((folder / "metrics.json").read_text())["export"]["dev_accuracy"], abs=1 / 60)
    assert onnx["int8"]["dev_accuracy_change"] == pytest.approx(onnx["int8"]["dev_accuracy"] - onnx["dev_accuracy_onnx"])
    card = (folder / "README.md").read_text()
    assert "## ONNX Runtime" in card and f"--model {folder.name} " in card and f"{onnx['int8']['dev_accuracy_change']:+.4f}" in card
    labels = {backend: [r["label"] for r in Predictor(folder, backend).predict(TEXTS)] for backend in ("torch", "onnx")}
    assert labels["torch"] == labels["onnx"]
