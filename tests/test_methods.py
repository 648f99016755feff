"""Robust KD methods: config checks, the extended teacher cache, layer_kd / rift / augment inside the
trainer, and the plain path staying bit-identical."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import encode_texts, make_sentence
from transformers import BertForSequenceClassification

from rosearch.config import (
    AttackConfig,
    AugmentConfig,
    ConfigError,
    DistillConfig,
    LayerKDConfig,
    RiftConfig,
    config_from_dict,
)
from rosearch.distill.layer_kd import StudentAttentionProbe, head_mean_attention
from rosearch.distill.methods import (
    METHODS,
    MethodInputs,
    MethodInputsError,
    prepare_method_inputs,
    teacher_cache_request,
)
from rosearch.distill.teacher_cache import (
    TeacherOutputs,
    compute_teacher_outputs,
    load_or_compute_teacher_outputs,
)
from rosearch.distill.trainer import distill
from rosearch.search_space.genome import CellSpec, Genome
from rosearch.student.configuration import StudentConfig
from rosearch.student.modeling import StudentForSequenceClassification
from rosearch.student.ops import SelfAttention

pytestmark = pytest.mark.usefixtures("single_thread")

ATTN_FFN = CellSpec(((0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 0, 0, 0)), ("input", "attn_h2", "ffn_r2_gelu", "output"))
CONV = CellSpec(((0, 1, 0), (0, 0, 1), (0, 0, 0)), ("input", "conv_k3_gelu", "output"))
CFG = DistillConfig(max_steps=8, batch_size=16, learning_rate=2e-3, warmup_ratio=0.0)


def make_student(vocab_size: int, seed: int = 0, cells=(ATTN_FFN, CONV, ATTN_FFN)) -> StudentForSequenceClassification:
    """A searched student of 3 layers with attention in layers 1 and 3 (hidden 32)."""
    torch.manual_seed(seed)
    config = StudentConfig(genome=Genome(32, 16, tuple(cells)).to_dict(), vocab_size=vocab_size,
                           max_position_embeddings=64, num_labels=2)
    return StudentForSequenceClassification(config)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def toy(tiny_tokenizer):
    rng = random.Random(1)
    labels = [i % 2 for i in range(96)]
    return encode_texts(tiny_tokenizer, [make_sentence(rng, y) for y in labels], labels, "toy-methods")


@pytest.fixture(scope="module")
def teacher_model(tiny_teacher_dir):
    return BertForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()


@pytest.fixture(scope="module")
def rich_outputs(teacher_model, toy) -> TeacherOutputs:
    """Real teacher outputs with hidden states, attention and features (computed in RAM)."""
    return compute_teacher_outputs(teacher_model, toy, layers=(1, 2), attention_layers=(1, 2), features=True,
                                   batch_size=16, device="cpu")


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_config_rejects_unknown_method_naming_field_and_known_names():
    with pytest.raises(ConfigError, match=r"distill\.methods\[1\].*'mixup'.*known: augment, mate_kd, layer_kd, rift"):
        config_from_dict({"distill": {"methods": ["rift", "mixup"]}})


@pytest.mark.parametrize("distill, field", [
    ({"methods": ["rift", "rift"]}, r"distill\.methods\[1\]"),
    ({"methods": ["layer_kd"], "hidden_loss_weight": 1.0, "teacher": {"cache_hidden_layers": [1]}},
     r"distill\.hidden_loss_weight.*layer_kd\.weight"),
    ({"methods": ["layer_kd"], "layer_kd": {"weight": 0.0, "attention_weight": 0.0}}, r"distill\.layer_kd\.weight"),
    ({"methods": ["augment"]}, r"distill\.augment\.recipes.*attack\.neighbors_path"),
    ({"augment": {"recipes": ["wordnet", "backtranslate"]}}, r"distill\.augment\.recipes\[1\].*known: wordnet"),
    ({"methods": ["augment"], "augment": {"recipes": ["char"], "fraction": 0.1}, "batch_size": 4},
     r"distill\.augment\.fraction"),
    ({"augment": {"fraction": 1.0}}, r"distill\.augment\.fraction"),
    ({"mate_kd": {"mask_prob": 0.0}}, r"distill\.mate_kd\.mask_prob"),
    ({"mate_kd": {"generator_every": 0}}, r"distill\.mate_kd\.generator_every"),
    ({"rift": {"temperature": 0.0}}, r"distill\.rift\.temperature"),
    ({"adv_finetune": {"steps": 0}}, r"distill\.adv_finetune\.steps"),
    ({"adv_finetune": {"recipe": "nope"}}, r"distill\.adv_finetune\.recipe.*deepwordbug"),
])
def test_config_rejects_bad_method_knobs(distill, field):
    distill = dict(distill)
    teacher = distill.pop("teacher", {})
    with pytest.raises(ConfigError, match=field):
        config_from_dict({"distill": distill, "teacher": teacher})


def test_config_accepts_every_method(tmp_path):
    table = tmp_path / "neighbors.json"
    table.write_text(json.dumps({"good": ["fine"]}))
    config = config_from_dict({
        "distill": {"methods": list(METHODS), "adv_finetune": {"recipe": "deepwordbug"}},
        "attack": {"neighbors_path": str(table)},
    })
    assert config.distill.methods == tuple(METHODS)
    assert set(METHODS) == {"augment", "mate_kd", "layer_kd", "rift", "adv_finetune", "adv_train", "ascc"}


def test_teacher_cache_request_follows_the_methods():
    plain = config_from_dict({})
    assert teacher_cache_request(plain, 6).kwargs() == {"layers": (), "attention_layers": (), "features": False}
    layer = config_from_dict({"distill": {"methods": ["layer_kd", "rift"]}, "search_space": {"num_layers": [2, 4]}})
    request = teacher_cache_request(layer, 6)
    assert request.layers == (2, 3, 5, 6)  # where a 4-layer student maps onto 6 teacher layers
    assert request.attention_layers == (2, 3, 5, 6)
    assert request.features
    explicit = config_from_dict({"distill": {"methods": ["layer_kd"], "layer_kd": {"attention_weight": 0.0}},
                                 "teacher": {"cache_hidden_layers": [0, 3, 6]}})
    assert teacher_cache_request(explicit, 6).kwargs() == {"layers": (0, 3, 6), "attention_layers": (), "features": False}


def test_prepare_method_inputs_is_none_without_once_per_run_work(toy):
    config = config_from_dict({"distill": {"methods": ["layer_kd", "rift"]}})
    assert prepare_method_inputs(config, teacher_dir="unused", train_examples=[], train=toy, device="cpu") is None


# --------------------------------------------------------------------------------------------
# Teacher cache: attention and features
# --------------------------------------------------------------------------------------------


def test_cached_attention_and_features_match_a_direct_forward(teacher_model, toy, rich_outputs):
    i = 5
    n = int(toy.lengths[i])
    ids = torch.as_tensor(toy.input_ids[toy.offsets[i]:toy.offsets[i + 1]], dtype=torch.long)[None]
    assert ids.shape[1] == n
    with torch.no_grad():
        out = teacher_model(input_ids=ids, output_attentions=True, output_hidden_states=True)
    for layer in (1, 2):
        expected = out.attentions[layer - 1][0].mean(dim=0)  # [n, n]
        got = rich_outputs.attention_batch(layer, toy, [i])[0]
        torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)
    torch.testing.assert_close(rich_outputs.features_batch([i])[0], out.hidden_states[-1][0].mean(dim=0), atol=1e-5, rtol=0)
    batch = rich_outputs.attention_batch(2, toy, [i, 0, 1])
    widths = toy.lengths[[i, 0, 1]]
    assert batch.shape == (3, widths.max(), widths.max())
    for row, w in enumerate(widths):
        assert torch.allclose(batch[row, :w, :w].sum(-1), torch.ones(w), atol=5e-3)
        assert batch[row, w:].abs().sum() == 0 and batch[row, :, w:].abs().sum() == 0


def test_cache_adds_attention_and_features_once_and_loads_exactly_the_request(teacher_model, tiny_teacher_dir, toy, tmp_path):
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        @property
        def config(self):
            return self.inner.config

        def forward(self, **kwargs):
            calls.append(1)
            return self.inner(**kwargs)

    model = Counting(teacher_model)
    common = dict(batch_size=32, device="cpu", cache_dir=tmp_path)
    plain = load_or_compute_teacher_outputs(model, tiny_teacher_dir, toy, layers=(1,), **common)
    assert plain.attention == {} and plain.features is None
    passes = len(calls)
    # an older-style cache (no attention/features in meta) is extended once, with the union of products
    meta_file = next((tmp_path / "teacher_outputs").iterdir()) / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["attention_layers"] == [] and meta["features"] is False
    for key in ("attention_layers", "features"):
        meta.pop(key)
    meta_file.write_text(json.dumps(meta))
    rich = load_or_compute_teacher_outputs(model, tiny_teacher_dir, toy, layers=(), attention_layers=(2,),
                                           features=True, **common)
    assert len(calls) == 2 * passes
    assert rich.layers == () and rich.attention_layers == (2,) and rich.features is not None
    again = load_or_compute_teacher_outputs(model, tiny_teacher_dir, toy, layers=(1,), attention_layers=(2,), **common)
    assert len(calls) == 2 * passes  # hit: hidden layer 1 survived the recompute
    assert again.layers == (1,) and again.features is None
    with pytest.raises(ValueError, match="attention in layers 1 to 2"):
        load_or_compute_teacher_outputs(model, tiny_teacher_dir, toy, layers=(), attention_layers=(0,), **common)


# --------------------------------------------------------------------------------------------
# layer_kd's student attention probe
# --------------------------------------------------------------------------------------------


def test_probe_probabilities_are_what_the_op_attends_with():
    torch.manual_seed(0)
    op = SelfAttention(8, heads=1).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    probs = head_mean_attention(op, x, mask)  # one head: the head mean is the head
    values = op.qkv(x.masked_fill(~mask.bool()[..., None], 0.0)).split(8, dim=2)[2]
    expected = op.proj(probs @ values).masked_fill(~mask.bool()[..., None], 0.0)
    torch.testing.assert_close(op(x, mask), expected, atol=1e-5, rtol=0)
    assert probs[0, :, 3:].abs().max() == 0  # padded keys get nothing


def test_probe_finds_attention_layers_and_records_only_when_asked(tiny_tokenizer, toy):
    student = make_student(tiny_tokenizer.vocab_size).eval()
    probe = StudentAttentionProbe(student)
    assert probe.layer_numbers == (1, 3)
    ids = torch.as_tensor(toy.input_ids[: toy.offsets[1]], dtype=torch.long)[None]
    student(input_ids=ids)
    with pytest.raises(RuntimeError, match="recording"):
        probe.probabilities()
    with probe.recording():
        student(input_ids=ids)
    probs = probe.probabilities()
    assert set(probs) == {1, 3} and probs[1].shape == (1, ids.shape[1], ids.shape[1])
    assert all(h is None for op_list in probe.ops.values() for op in op_list for h in op._forward_hooks.values())


# --------------------------------------------------------------------------------------------
# Methods inside the trainer
# --------------------------------------------------------------------------------------------


def _attention_kl(student, teacher, split, indices) -> float:
    from rosearch.data.batching import collate
    from rosearch.distill.losses import attention_kl_loss

    probe = StudentAttentionProbe(student)
    batch = collate(split, indices)
    student.eval()
    with torch.no_grad(), probe.recording():
        student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    probs = probe.probabilities()
    pairs = ((1, 1), (3, 2))
    return float(np.mean([attention_kl_loss(probs[s], teacher.attention_batch(t, split, indices), batch["attention_mask"])
                          for s, t in pairs]))


def test_layer_kd_trains_hidden_and_attention_terms(tiny_tokenizer, toy, rich_outputs, caplog):
    student = make_student(tiny_tokenizer.vocab_size)
    before = weights(student)
    kl_before = _attention_kl(student, rich_outputs, toy, list(range(32)))
    cfg = replace(CFG, methods=("layer_kd",), max_steps=30, layer_kd=LayerKDConfig(weight=1.0, attention_weight=20.0))
    with caplog.at_level("INFO", logger="rosearch.distill"):
        result = distill(student, toy, rich_outputs, cfg, seed=0, device="cpu", log_every=10)
    assert any("(1, 1), (3, 2)" in r.getMessage() for r in caplog.records)  # attention layers 1, 3 -> teacher 1, 2
    assert all(np.isfinite(loss) for _, loss in result.loss_history)
    assert changed(before, student) and set(student.state_dict()) == set(before)
    assert _attention_kl(student, rich_outputs, toy, list(range(32))) < 0.7 * kl_before


def test_rift_trains_with_cached_features(tiny_tokenizer, toy, rich_outputs):
    student = make_student(tiny_tokenizer.vocab_size)
    before = weights(student)
    plain = distill(make_student(tiny_tokenizer.vocab_size), toy, rich_outputs, CFG, seed=0, device="cpu", log_every=4)
    result = distill(student, toy, rich_outputs, replace(CFG, methods=("rift",), rift=RiftConfig(weight=1.0)), seed=0,
                     device="cpu", log_every=4)
    assert all(np.isfinite(loss) for _, loss in result.loss_history)
    assert changed(before, student) and set(student.state_dict()) == set(before)
    assert result.loss_history[0][1] > plain.loss_history[0][1]  # the InfoNCE term is in the loss


def test_methods_need_their_teacher_outputs(tiny_tokenizer, toy, rich_outputs):
    bare = TeacherOutputs(logits=rich_outputs.logits, hidden={}, layers=(), hidden_size=32, key="bare")
    with pytest.raises(ValueError, match="features=True"):
        distill(make_student(tiny_tokenizer.vocab_size), toy, bare, replace(CFG, methods=("rift",)), seed=0, device="cpu")
    with pytest.raises(ValueError, match="attention term.*teacher_cache_request"):
        distill(make_student(tiny_tokenizer.vocab_size), toy, bare,
                replace(CFG, methods=("layer_kd",), layer_kd=LayerKDConfig(weight=0.0)), seed=0, device="cpu")
    with pytest.raises(ValueError, match="hidden-state term.*teacher_cache_request"):
        distill(make_student(tiny_tokenizer.vocab_size), toy, bare,
                replace(CFG, methods=("layer_kd",), layer_kd=LayerKDConfig(attention_weight=0.0)), seed=0, device="cpu")


def _augment_inputs(tiny_tokenizer, toy, n: int = 40) -> MethodInputs:
    rng = random.Random(9)
    labels = [i % 2 for i in range(n)]
    split = encode_texts(tiny_tokenizer, [make_sentence(rng, y) for y in labels], labels, "toy-augmented")
    logits = np.where(np.eye(2, dtype=bool)[split.labels], 3.0, -3.0).astype(np.float32)
    return MethodInputs(
        methods=("augment",), teacher_dir="unused", tokenizer_files={}, cache_dir="unused", max_length=64,
        text_columns=("sentence",), attack=AttackConfig(), augmented=split,
        augmented_outputs=TeacherOutputs(logits=logits, hidden={}, layers=(), hidden_size=32, key="aug"),
        augmented_sources=tuple(range(n)),
    )


def test_augment_draws_a_share_of_every_batch(tiny_tokenizer, toy, rich_outputs):
    inputs = _augment_inputs(tiny_tokenizer, toy)
    student = make_student(tiny_tokenizer.vocab_size)
    before = weights(student)
    cfg = replace(CFG, methods=("augment",), augment=AugmentConfig(fraction=0.25))
    result = distill(student, toy, rich_outputs, cfg, seed=0, device="cpu", log_every=4, method_inputs=inputs)
    assert result.method_stats["augment_examples_seen"] == 8 * 4  # 4 of every 16
    assert result.examples_per_second * result.train_seconds == pytest.approx(8 * 12)  # the clean 12
    assert changed(before, student)
    with pytest.raises(MethodInputsError, match="needs method inputs"):
        distill(make_student(tiny_tokenizer.vocab_size), toy, rich_outputs, cfg, seed=0, device="cpu")
    with pytest.raises(MethodInputsError, match="prepared for"):
        distill(make_student(tiny_tokenizer.vocab_size), toy, rich_outputs, replace(cfg, methods=("adv_finetune",)),
                seed=0, device="cpu", method_inputs=inputs)


def test_no_methods_is_bit_identical_whatever_the_method_knobs(tiny_tokenizer, toy, rich_outputs):
    """methods=() ignores method inputs and the knobs of methods that are off: same weights, same losses."""
    inputs = _augment_inputs(tiny_tokenizer, toy)
    base = make_student(tiny_tokenizer.vocab_size)
    runs = []
    for cfg, extra in (
        (CFG, None),
        (CFG, inputs),
        (replace(CFG, augment=AugmentConfig(fraction=0.75), rift=RiftConfig(weight=3.0),
                 layer_kd=LayerKDConfig(weight=2.0, attention_weight=5.0)), inputs),
    ):
        student = copy.deepcopy(base)
        result = distill(student, toy, rich_outputs, cfg, seed=4, device="cpu", log_every=2, method_inputs=extra)
        runs.append((weights(student), result.loss_history, result.method_stats))
    for other in runs[1:]:
        assert all(torch.equal(runs[0][0][k], other[0][k]) for k in runs[0][0])
        assert other[1] == runs[0][1] and other[2] == {}
