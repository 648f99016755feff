"""The HF-style student: forward, padding invariance, save/load, PCA embedding init, config errors."""

from __future__ import annotations

import random

import pytest
import torch

from rosearch.search_space.genome import CellSpec, Genome
from rosearch.search_space.labels import OP_FAMILIES, op_labels
from rosearch.student.configuration import StudentConfig, StudentConfigError
from rosearch.student.modeling import (
    StudentForSequenceClassification,
    StudentModel,
    init_embedding_from_teacher,
    register_auto_classes,
)
from rosearch.search_space.sampling import sample_cell

VOCAB = 60
ALL_LABELS = op_labels(OP_FAMILIES)


def random_genome(seed: int, layers: int = 3, hidden: int = 32, embedding: int = 16) -> Genome:
    rng = random.Random(seed)
    return Genome(hidden, embedding, tuple(sample_cell(rng, 6, ALL_LABELS, 12) for _ in range(layers)))


def build(genome: Genome, seed: int = 0, **overrides) -> StudentForSequenceClassification:
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=VOCAB, max_position_embeddings=32, num_labels=3) | overrides
    return StudentForSequenceClassification(StudentConfig(genome=genome.to_dict(), **kwargs)).eval()


def right_padded(lengths: list[int], extra: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequences with fixed real tokens (seed 0) padded to max(lengths)+extra with random garbage."""
    real = torch.Generator().manual_seed(0)
    junk = torch.Generator().manual_seed(seed)
    T = max(lengths) + extra
    ids = torch.randint(1, VOCAB, (len(lengths), T), generator=junk)  # garbage ids in pads
    types = torch.randint(0, 2, (len(lengths), T), generator=junk)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, VOCAB, (n,), generator=real)
        types[b, :n] = torch.arange(n) >= n // 2
        mask[b, :n] = 1
    return ids, types, mask


def test_forward_shapes_loss_and_hidden_states() -> None:
    genome = random_genome(0)
    model = build(genome)
    ids, types, mask = right_padded([7, 4], extra=1, seed=1)
    labels = torch.tensor([0, 2])
    out = model(ids, attention_mask=mask, token_type_ids=types, labels=labels, output_hidden_states=True)
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert len(out.hidden_states) == genome.num_layers + 1
    assert all(h.shape == (2, 8, 32) for h in out.hidden_states)
    assert model(ids, attention_mask=mask).hidden_states is None
    loss, logits = model(ids, attention_mask=mask, labels=labels, return_dict=False)
    torch.testing.assert_close(logits, model(ids, attention_mask=mask).logits)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_logits_do_not_depend_on_padding(seed: int, pooling: str) -> None:
    model = build(random_genome(seed), pooling=pooling)
    with torch.no_grad():
        ids, types, mask = right_padded([9, 5, 3], extra=0, seed=10 + seed)
        ids_p, types_p, mask_p = right_padded([9, 5, 3], extra=5, seed=20 + seed)
        torch.testing.assert_close(ids_p[mask_p.bool()], ids[mask.bool()])  # the same real tokens
        logits = model(ids, attention_mask=mask, token_type_ids=types).logits
        logits_p = model(ids_p, attention_mask=mask_p, token_type_ids=types_p).logits
        single = model(ids[1:2, :5], token_type_ids=types[1:2, :5]).logits  # no padding at all
    torch.testing.assert_close(logits_p, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, logits[1:2], atol=1e-5, rtol=1e-5)


def test_save_and_load_round_trip(tmp_path) -> None:
    model = build(random_genome(5), pooling="cls")
    ids, types, mask = right_padded([6, 3], extra=2, seed=3)
    logits = model(ids, attention_mask=mask, token_type_ids=types).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = StudentForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.genome == model.config.genome and loaded.config.pooling == "cls"
    assert torch.equal(loaded(ids, attention_mask=mask, token_type_ids=types).logits, logits)

    register_auto_classes()
    register_auto_classes()  # idempotent
    from transformers import AutoConfig, AutoModelForSequenceClassification

    assert isinstance(AutoConfig.from_pretrained(tmp_path), StudentConfig)
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(auto(ids, attention_mask=mask, token_type_ids=types).logits, logits)


def test_a_few_steps_of_training_reduce_the_loss() -> None:
    model = build(random_genome(6, layers=2), hidden_dropout_prob=0.0).train()
    ids, types, mask = right_padded([8, 6, 5, 4], extra=0, seed=4)
    labels = torch.tensor([0, 1, 2, 1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = model(ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
        first = loss.item() if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.5 * first


def test_weight_init_and_embedding_accessors() -> None:
    model = build(random_genome(7))
    weight = model.get_input_embeddings().weight
    assert weight.shape == (VOCAB, 16)
    assert abs(weight.std().item() - 0.02) < 0.005
    assert torch.all(weight[0] == 0)  # padding row
    new = torch.nn.Embedding(VOCAB, 16)
    model.set_input_embeddings(new)
    assert model.student.embeddings.word_embeddings is new
    assert isinstance(model.student, StudentModel)


def test_pca_embedding_init_is_deterministic_and_spans_top_components() -> None:
    model = build(random_genome(8))
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(VOCAB, 24, generator=g) @ torch.diag(torch.linspace(4.0, 0.1, 24))
    init_embedding_from_teacher(model, teacher)
    first = model.get_input_embeddings().weight.detach().clone()
    init_embedding_from_teacher(model, teacher)
    assert torch.equal(first, model.get_input_embeddings().weight)
    assert first.shape == (VOCAB, 16)
    assert abs(first.std().item() - model.config.initializer_range) < 1e-4
    # each column is (up to scale) the teacher's coordinate on one of its top principal directions
    centred = (teacher - teacher.mean(0)).double()
    U, S, _ = torch.linalg.svd(centred, full_matrices=False)
    reference = U[:, :16] * S[:16]
    cosine = torch.nn.functional.cosine_similarity(first.double().T, reference.T, dim=1).abs()
    assert torch.all(cosine > 0.999)


def test_pca_embedding_init_rejects_wrong_shapes() -> None:
    model = build(random_genome(9))
    with pytest.raises(ValueError, match="61 rows but the student vocabulary has 60"):
        init_embedding_from_teacher(model, torch.randn(61, 24))
    with pytest.raises(ValueError, match="E=16 exceeds the teacher embedding width D=8"):
        init_embedding_from_teacher(model, torch.randn(VOCAB, 8))


def test_config_errors_name_the_value() -> None:
    with pytest.raises(StudentConfigError, match="no genome"):
        StudentForSequenceClassification(StudentConfig())
    with pytest.raises(StudentConfigError, match="genome is invalid"):
        StudentConfig(genome={"hidden_size": 32})
    with pytest.raises(StudentConfigError, match="pooling='max'"):
        StudentConfig(genome=random_genome(0).to_dict(), pooling="max")
    with pytest.raises(StudentConfigError, match="hidden_size=64"):
        StudentConfig(genome=random_genome(0).to_dict(), hidden_size=64)
    model = build(random_genome(0))
    with pytest.raises(ValueError, match="sequence length 40 exceeds max_position_embeddings=32"):
        model(torch.ones(1, 40, dtype=torch.long))


def test_config_stores_pruned_genome_and_derived_sizes() -> None:
    dead = CellSpec([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], ["input", "ffn_r1_relu", "glu_k3", "output"])
    config = StudentConfig(genome=Genome(32, 8, (dead,)).to_dict())
    assert config.genome_obj.cells[0].ops == ("input", "ffn_r1_relu", "output")
    assert (config.hidden_size, config.embedding_size, config.num_hidden_layers) == (32, 8, 1)
    assert StudentConfig().hidden_size is None
