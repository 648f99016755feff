"""Deployable students: ONNX round trip (every op family), int8 on a toy task, `rosearch predict`
on text / file / stdin and both backends, the plain transformers pipeline, clear errors for
missing or damaged folders, and the routing of known library noise to DEBUG."""

from __future__ import annotations

import io
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_sentence

from rosearch.cli import main
from rosearch.deploy.onnx import (
    INT8_FILE, LOGITS_ATOL, ONNX_FILE, OnnxExportError, encode, open_session, session_logits, write_onnx_variants,
)
from rosearch.deploy.predict import PredictError, Predictor
from rosearch.runtime.logs import quiet_known_messages, route_nltk_downloads
from rosearch.search_space.genome import CellSpec, Genome
from rosearch.student.configuration import StudentConfig
from rosearch.student.modeling import StudentForSequenceClassification, register_auto_classes
from rosearch.student.ops import MaxPool

EVERY_FAMILY = ("attn_h2", "conv_k3_gelu", "sepconv_k5_relu", "dilconv_k3_swish", "glu_k3", "ffn_r2_tanh",
                "maxpool_k3", "avgpool_k5", "identity")
INT8_MAX_ACCURACY_DROP = 0.05  # the stated bound on the toy task (60 dev texts: at most 3 flips)
TEXTS = ["the film was good and witty", "a dull , boring plot", "it is the movie", "superb",
         "the story was very dull and the acting was poor and the ending was weak overall"]


def every_family_genome() -> Genome:
    """Two layers of one cell that chains every op family, with a skip edge and a branch."""
    n = len(EVERY_FAMILY) + 2
    matrix = [[1 if j == i + 1 else 0 for j in range(n)] for i in range(n)]
    matrix[0][n - 1] = matrix[2][5] = 1
    cell = CellSpec(matrix, ["input", *EVERY_FAMILY, "output"])
    return Genome(32, 16, (cell, cell))


def student(tokenizer, genome: Genome, seed: int = 0) -> StudentForSequenceClassification:
    torch.manual_seed(seed)
    config = StudentConfig(genome=genome.to_dict(), vocab_size=tokenizer.vocab_size, max_position_embeddings=64,
                           num_labels=2, id2label={0: "negative", 1: "positive"},
                           label2id={"negative": 0, "positive": 1})
    return StudentForSequenceClassification(config).eval()


def toy_split(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    return [make_sentence(rng, label) for label in labels], labels


def train(model: StudentForSequenceClassification, tokenizer, steps: int = 60) -> StudentForSequenceClassification:
    """A few Adam steps on the toy task (its labels are decided by sentiment words)."""
    texts, labels = toy_split(256, seed=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(texts), (32,), generator=generator).tolist()
        batch = tokenizer([texts[i] for i in index], padding=True, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor([labels[i] for i in index])).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory, tiny_tokenizer, single_thread) -> Path:
    """A trained all-op-family student saved with its tokenizer, plus its ONNX and int8 graphs."""
    folder = tmp_path_factory.mktemp("deploy") / "student"
    model = train(student(tiny_tokenizer, every_family_genome()), tiny_tokenizer)
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    texts, labels = toy_split(60, seed=2)
    report = write_onnx_variants(model, folder, tiny_tokenizer, texts, labels, int8=True)
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_maxpool_equals_max_pool1d() -> None:
    """The 2-D formulation (exportable with a symbolic length) is exactly max_pool1d."""
    x = torch.randn(3, 11, 8)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 7:] = False
    expected = F.max_pool1d(x.masked_fill(~mask[..., None], -float("inf")).transpose(1, 2), 3, stride=1, padding=1)
    expected = expected.transpose(1, 2).masked_fill(~mask[..., None], 0.0)
    assert torch.equal(MaxPool(3)(x, mask), expected)


def test_onnx_round_trip_of_every_op_family(tiny_tokenizer, tmp_path: Path, single_thread) -> None:
    model = student(tiny_tokenizer, every_family_genome(), seed=3)
    report = write_onnx_variants(model, tmp_path, tiny_tokenizer, TEXTS, None, int8=False)
    assert report["max_abs_logit_diff"] <= LOGITS_ATOL and report["check_texts"] == len(TEXTS)
    assert (tmp_path / ONNX_FILE).is_file() and not (tmp_path / INT8_FILE).exists()
    session = open_session(tmp_path / ONNX_FILE)
    # other batch sizes and lengths than the check's (dynamic axes), with padding, batch 1 included
    for texts in (TEXTS[:1], TEXTS[2:4], [t + " and good" * k for k, t in enumerate(TEXTS * 3)]):
        inputs = encode(tiny_tokenizer, texts, 64)
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
        np.testing.assert_allclose(session_logits(session, inputs), expected, rtol=0, atol=LOGITS_ATOL)


def test_onnx_check_raises_past_its_tolerance(tiny_tokenizer, tmp_path: Path, single_thread) -> None:
    model = student(tiny_tokenizer, Genome(32, 16, (CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]],
                                                              ["input", "ffn_r1_gelu", "output"]),)))
    with pytest.raises(OnnxExportError, match="differ from PyTorch"):
        write_onnx_variants(model, tmp_path, tiny_tokenizer, TEXTS, None, int8=False, atol=-1.0)  # unmeetable


def test_int8_stays_within_its_stated_accuracy_change(trained_folder: Path) -> None:
    report = json.loads((trained_folder / "report.json").read_text())
    assert report["dev_accuracy_torch"] >= 0.9  # the toy task is learnt, so the comparison means something
    assert report["dev_accuracy_onnx"] == report["dev_accuracy_torch"]
    int8 = report["int8"]
    assert (trained_folder / INT8_FILE).is_file() and int8["size_mb"] < report["size_mb"]
    assert abs(int8["dev_accuracy_change"]) <= INT8_MAX_ACCURACY_DROP
    assert int8["dev_accuracy_change"] == pytest.approx(int8["dev_accuracy"] - report["dev_accuracy_onnx"])


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_predict_on_text_file_and_stdin(trained_folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["predict", "--model", str(trained_folder), *TEXTS[:2]]) == 0
    from_args = _jsonl(capsys.readouterr().out)
    assert [r["text"] for r in from_args] == TEXTS[:2]
    assert [r["label"] for r in from_args] == ["positive", "negative"]
    assert all(set(r["probabilities"]) == {"negative", "positive"} and
               sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5) for r in from_args)
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
    assert main(["predict", "--model", str(trained_folder), "--file", str(file), "--batch-size", "2"]) == 0
    from_file = _jsonl(capsys.readouterr().out)
    assert [r["text"] for r in from_file] == TEXTS  # input order, blank lines skipped, despite length batching
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(TEXTS) + "\n"))
    assert main(["predict", "--model", str(trained_folder), "--backend", "onnx"]) == 0
    from_stdin = _jsonl(capsys.readouterr().out)
    assert [r["label"] for r in from_stdin] == [r["label"] for r in from_file]
    for a, b in zip(from_stdin, from_file):  # ONNX Runtime vs PyTorch: the same probabilities
        assert a["probabilities"]["positive"] == pytest.approx(b["probabilities"]["positive"], abs=1e-5)


def test_predict_backends_agree_and_apply_a_defense(trained_folder: Path, tmp_path: Path) -> None:
    from rosearch.defense.pipeline import Defense, DefenseResources

    torch_side = Predictor(trained_folder, "torch").logits(TEXTS)
    np.testing.assert_allclose(Predictor(trained_folder, "onnx").logits(TEXTS), torch_side, rtol=0, atol=LOGITS_ATOL)
    int8 = Predictor(trained_folder, "onnx-int8").predict(TEXTS)
    assert [r["label"] for r in int8][:2] == ["positive", "negative"]
    # a defended copy (word recognition over the toy lexicon): both backends see the repaired text
    defended = tmp_path / "defended"
    defended.mkdir()
    for path in trained_folder.iterdir():
        (defended / path.name).write_bytes(path.read_bytes())
    counts = {w: 5 for t in toy_split(100, seed=4)[0] for w in t.split()}
    Defense(["word_recognition"], DefenseResources(counts=counts)).save(defended)
    misspelt = ["the film was goood and wity", "a dulll , borring plot"]
    for backend in ("torch", "onnx"):
        np.testing.assert_allclose(Predictor(defended, backend).logits(misspelt), torch_side[:2], rtol=0, atol=LOGITS_ATOL)


def test_pipeline_loads_an_export(trained_folder: Path) -> None:
    from transformers import pipeline

    register_auto_classes()
    classify = pipeline("text-classification", model=str(trained_folder), device="cpu")
    results = classify(TEXTS)
    expected = Predictor(trained_folder).predict(TEXTS)
    assert [r["label"] for r in results] == [r["label"] for r in expected]
    for got, want in zip(results, expected):
        assert got["score"] == pytest.approx(want["probabilities"][want["label"]], abs=1e-5)


def test_missing_or_damaged_folders_are_clear_errors(trained_folder: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(PredictError, match="does not exist"):
        Predictor(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictError, match="no config.json"):
        Predictor(tmp_path / "empty")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in trained_folder.iterdir():
        if path.name != INT8_FILE:
            (damaged / path.name).write_bytes(path.read_bytes())
    with pytest.raises(PredictError, match=f"no {INT8_FILE}.*--int8"):
        Predictor(damaged, "onnx-int8")
    (damaged / ONNX_FILE).write_bytes((damaged / ONNX_FILE).read_bytes()[:1000])
    with pytest.raises(PredictError, match="not a loadable ONNX graph"):
        Predictor(damaged, "onnx")
    (damaged / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PredictError, match="cannot be loaded"):
        Predictor(damaged, "torch")
    (damaged / "config.json").write_text("{ broken")
    assert main(["predict", "--model", str(damaged), "x"]) == 2
    assert "PredictError" in capsys.readouterr().err


def test_known_library_noise_goes_to_debug(caplog) -> None:
    quiet_known_messages()
    ray_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    ta_logger = logging.getLogger("textattack.shared.utils.install")
    with caplog.at_level(logging.INFO):
        ray_logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled")
        ta_logger.warning("Unknown if model of class <X> compatible with goal function <Y>.")
        ta_logger.info("Goal function <class 'UntargetedClassification'> compatible with model BertForSequenceClassification.")
        ray_logger.warning("Token authentication is enabled but no token was found")  # a real problem: stays
    shown = [r.getMessage()[:40] for r in caplog.records if r.name in (ray_logger.name, ta_logger.name)]
    assert shown == ["Token authentication is enabled but no t"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        ray_logger.warning("Token authentication is enabled for this Ray cluster.")
    assert [r.levelname for r in caplog.records if r.name == ray_logger.name] == ["DEBUG"]  # --verbose shows it


def test_nltk_download_output_goes_to_debug(caplog, capsys, monkeypatch) -> None:
    import nltk

    calls = []

    def fake_download(info_or_id, print_error_to=None, **kwargs):  # what nltk does offline
        calls.append(info_or_id)
        print(f"[nltk_data] Error loading {info_or_id}: <urlopen error refusing to connect>", file=print_error_to)
        return False

    monkeypatch.setattr(nltk, "download", fake_download)
    route_nltk_downloads()
    route_nltk_downloads()  # idempotent: wrapped once
    with caplog.at_level(logging.DEBUG, logger="nltk.downloader"):
        assert nltk.download("omw-1.4") is False
    # nothing printed by nltk itself (a stale handler of an earlier test's CLI run may complain on stderr)
    assert calls == ["omw-1.4"] and not any(line.startswith("[nltk_data]") for line in capsys.readouterr().err.splitlines())
    assert [(r.levelname, r.getMessage()[:30]) for r in caplog.records if r.name == "nltk.downloader"] == [
        ("DEBUG", "[nltk_data] Error loading omw-")]
