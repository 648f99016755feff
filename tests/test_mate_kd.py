"""MATE-KD: straight-through Gumbel choice, soft embeddings, the generator and its cache, and the
method inside the trainer."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import encode_texts, make_sentence
from test_methods import CFG, changed, make_student, weights
from transformers import BertForSequenceClassification

from rosearch.config import AttackConfig, MateKDConfig
from rosearch.distill.mate_kd import (
    MateKD,
    build_generator,
    choose_positions,
    gumbel_softmax_st,
    load_or_pretrain_generator,
    soft_token_embeddings,
)
from rosearch.distill.methods import MethodInputs
from rosearch.distill.teacher_cache import compute_teacher_outputs
from rosearch.distill.trainer import distill

pytestmark = pytest.mark.usefixtures("single_thread")


def test_gumbel_straight_through_is_one_hot_forward_and_soft_backward():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    upstream = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    y = gumbel_softmax_st(logits, 0.5, torch.Generator().manual_seed(3))
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0} and torch.equal(y.detach().sum(-1), torch.ones(5))
    (y * upstream).sum().backward()
    # the same noise, by the same seed: the soft relaxation's gradient is the one that flows
    u = torch.rand((5, 7), generator=torch.Generator().manual_seed(3))
    g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    ref_logits = logits.detach().clone().requires_grad_(True)
    soft = ((ref_logits + g) / 0.5).softmax(-1)
    (soft * upstream).sum().backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)
    assert torch.equal(y.detach().argmax(-1), (logits.detach() + g).argmax(-1))


def test_soft_token_embeddings_keep_values_and_carry_gradient(tiny_teacher_dir):
    model = BertForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    positions = torch.tensor([[False, True, False, True, False]])
    vocab = model.config.vocab_size
    one_hot = torch.zeros(2, vocab)
    one_hot[0, 20] = one_hot[1, 21] = 1.0
    one_hot.requires_grad_(True)
    new_ids = ids.masked_scatter(positions, torch.tensor([20, 21]))
    with torch.no_grad():
        expected = model(input_ids=new_ids).logits
    with soft_token_embeddings(model, positions, one_hot):
        logits = model(input_ids=new_ids).logits
    torch.testing.assert_close(logits, expected)
    logits[0, 1].backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0
    assert not model.get_input_embeddings()._forward_hooks  # removed on exit


def test_choose_positions_skips_specials_and_padding():
    ids = torch.tensor([[2, 7, 8, 9, 3, 0], [2, 7, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    special = torch.tensor([0, 1, 2, 3, 4])
    chosen = choose_positions(ids, mask, 1.0, special, torch.Generator().manual_seed(0))
    assert chosen.tolist() == [[False, True, True, True, False, False], [False, True, False, False, False, False]]
    many = torch.full((200, 10), 9)
    share = choose_positions(many, torch.ones_like(many), 0.3, special, torch.Generator().manual_seed(0)).float().mean()
    assert 0.25 < share.item() < 0.35


def test_generator_copies_the_teacher_encoder_and_ties_the_decoder(tiny_teacher_dir):
    teacher = BertForSequenceClassification.from_pretrained(tiny_teacher_dir)
    generator = build_generator(teacher, num_layers=1)
    assert generator.config.num_hidden_layers == 1
    t_state = teacher.bert.state_dict()
    for key, value in generator.bert.state_dict().items():
        torch.testing.assert_close(value, t_state[key])
    assert generator.cls.predictions.decoder.weight is generator.bert.embeddings.word_embeddings.weight


@pytest.fixture(scope="module")
def toy(tiny_tokenizer):
    rng = random.Random(3)
    labels = [i % 2 for i in range(64)]
    return encode_texts(tiny_tokenizer, [make_sentence(rng, y) for y in labels], labels, "toy-mate")


@pytest.fixture(scope="module")
def generator_dir(tiny_teacher_dir, tiny_tokenizer, toy, tmp_path_factory):
    teacher = BertForSequenceClassification.from_pretrained(tiny_teacher_dir)
    cfg = replace(CFG, mate_kd=MateKDConfig(pretrain_steps=20, generator_layers=1))
    return load_or_pretrain_generator(
        teacher, str(tiny_teacher_dir), toy, cfg, special_token_ids=tiny_tokenizer.all_special_ids,
        mask_token_id=tiny_tokenizer.mask_token_id, seed=0, device="cpu", cache_dir=tmp_path_factory.mktemp("cache"),
    )


def test_generator_pretraining_is_cached(generator_dir, tiny_teacher_dir, tiny_tokenizer, toy):
    assert (generator_dir / "generator_info.json").is_file()
    stamp = (generator_dir / "generator_info.json").stat().st_mtime_ns

    class Untouchable(torch.nn.Module):  # a cache hit must not even build a generator
        config = None

    cfg = replace(CFG, mate_kd=MateKDConfig(pretrain_steps=20, generator_layers=1))
    again = load_or_pretrain_generator(
        Untouchable(), str(tiny_teacher_dir), toy, cfg, special_token_ids=tiny_tokenizer.all_special_ids,
        mask_token_id=tiny_tokenizer.mask_token_id, seed=0, device="cpu", cache_dir=generator_dir.parent.parent,
    )
    assert again == generator_dir and (again / "generator_info.json").stat().st_mtime_ns == stamp


def _inputs(tiny_teacher_dir, tiny_tokenizer, generator_dir) -> MethodInputs:
    return MethodInputs(
        methods=("mate_kd",), teacher_dir=str(tiny_teacher_dir), tokenizer_files={}, cache_dir="unused",
        max_length=64, text_columns=("sentence",), attack=AttackConfig(), generator_dir=str(generator_dir),
        special_token_ids=tuple(tiny_tokenizer.all_special_ids), mask_token_id=tiny_tokenizer.mask_token_id,
    )


def test_generator_update_moves_only_the_generator(tiny_teacher_dir, tiny_tokenizer, generator_dir, toy):
    from rosearch.data.batching import collate

    cfg = replace(CFG, methods=("mate_kd",), mate_kd=MateKDConfig(generator_lr=1e-2, mask_prob=0.5))
    mate = MateKD(_inputs(tiny_teacher_dir, tiny_tokenizer, generator_dir), cfg, 2, seed=0, device=torch.device("cpu"))
    student = make_student(tiny_tokenizer.vocab_size)
    gen_before, student_before = weights(mate.generator), weights(student)
    mate._update_generator(student, collate(toy, list(range(16))))
    assert changed(gen_before, mate.generator)
    assert not changed(student_before, student) and all(p.grad is None for p in student.parameters())
    assert student.training  # mode restored
    assert mate.stats()["mate_kd_generator_updates"] == 1 and np.isfinite(mate.divergences[0])


def test_mate_kd_trains_the_student(tiny_teacher_dir, tiny_tokenizer, generator_dir, toy):
    teacher = BertForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()
    outputs = compute_teacher_outputs(teacher, toy, layers=(), batch_size=32, device="cpu")
    student = make_student(tiny_tokenizer.vocab_size)
    before = weights(student)
    cfg = replace(CFG, methods=("mate_kd",), max_steps=6, mate_kd=MateKDConfig(generator_every=2, generator_steps=2))
    result = distill(student, toy, outputs, cfg, seed=0, device="cpu", log_every=3,
                     method_inputs=_inputs(tiny_teacher_dir, tiny_tokenizer, generator_dir))
    assert all(np.isfinite(loss) for _, loss in result.loss_history)
    assert changed(before, student) and set(student.state_dict()) == set(before)
    stats = result.method_stats
    assert stats["mate_kd_generator_updates"] == 6  # 2 updates at steps 1, 3, 5
    assert 0.0 < stats["mate_kd_changed_token_share"] <= 1.0
