"""Analytic parameter and FLOP counts against built models and torch's FLOP counter."""

from __future__ import annotations

import random

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from rosearch.search_space.cost import count_flops, count_parameters, op_flops, op_parameter_count
from rosearch.search_space.genome import CellSpec, Genome
from rosearch.search_space.labels import OP_FAMILIES, op_labels
from rosearch.student.configuration import StudentConfig
from rosearch.student.modeling import StudentForSequenceClassification
from rosearch.student.ops import OpBuildError, build_op
from rosearch.search_space.sampling import sample_cell

ALL_LABELS = op_labels(OP_FAMILIES)


def _model(genome: Genome, **kwargs) -> StudentForSequenceClassification:
    config = StudentConfig(genome=genome.to_dict(), **kwargs)
    return StudentForSequenceClassification(config).eval()


@pytest.mark.parametrize("label", ALL_LABELS)
def test_op_parameter_count_matches_module(label: str) -> None:
    assert op_parameter_count(label, 32) == sum(p.numel() for p in build_op(label, 32).parameters())


@pytest.mark.parametrize("label", ALL_LABELS)
def test_op_flops_match_the_flop_counter_on_the_module(label: str) -> None:
    """Every label's FLOPs formula (its family's) against torch's counter on the built module (SDPA on its
    MATH backend, whose two bmm's the counter sees; see test_count_flops_matches_flop_counter)."""
    hidden, seq_len = 32, 9
    module = build_op(label, hidden).eval()
    x = torch.randn(1, seq_len, hidden, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, seq_len, dtype=torch.long)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(x, mask)
    assert counter.get_total_flops() == op_flops(label, hidden, seq_len)


def test_count_parameters_equals_built_model_on_random_genomes() -> None:
    rng = random.Random(0)
    seen: set[str] = set()
    for _ in range(12):
        hidden = rng.choice([16, 32])
        genome = Genome(
            hidden, rng.choice([8, 16, 24]),
            tuple(sample_cell(rng, rng.randint(3, 7), ALL_LABELS, 14) for _ in range(rng.randint(1, 3))),
        )
        seen |= {label.split("_")[0] for label in genome.op_labels_used()}
        kwargs = dict(vocab_size=rng.randint(20, 80), num_labels=rng.randint(1, 4),
                      max_position_embeddings=rng.choice([16, 64]), type_vocab_size=rng.choice([1, 2, 3]))
        model = _model(genome, **kwargs)
        assert count_parameters(genome, **kwargs) == sum(p.numel() for p in model.parameters())
    assert seen == set(OP_FAMILIES)  # every family was exercised


def test_count_flops_matches_flop_counter() -> None:
    """FlopCounterMode counts mm/addmm/bmm/convolution (2 x MACs, no bias terms) and fused
    attention kernels; it has no rule for the CPU flash-attention kernel, so SDPA runs on its
    MATH backend here, whose two bmm's it counts. Elementwise work is ignored by both."""
    cell_a = CellSpec(
        [[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1],
         [0, 0, 0, 0, 0, 0]],
        ["input", "attn_h4", "conv_k3_gelu", "ffn_r2_swish", "dilconv_k5_relu", "output"],
    )
    cell_b = CellSpec(
        [[0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1],
         [0, 0, 0, 0, 0, 0]],
        ["input", "glu_k7", "sepconv_k3_tanh", "maxpool_k3", "attn_h8", "output"],
    )
    genome = Genome(32, 16, (cell_a, cell_b))
    model = _model(genome, vocab_size=50, max_position_embeddings=32, num_labels=3)
    batch, seq_len = 2, 12
    ids = torch.randint(0, 50, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(ids)
    measured = counter.get_total_flops() / batch
    assert measured == pytest.approx(count_flops(genome, seq_len=seq_len, num_labels=3), rel=1e-6)


def test_flops_scale_as_expected() -> None:
    assert op_flops("identity", 32, 10) == 0 and op_flops("avgpool_k3", 32, 10) == 0
    # attention: linear in T for projections, quadratic for scores/values
    assert op_flops("attn_h2", 32, 20) - 2 * op_flops("attn_h2", 32, 10) == 4 * (20**2 - 2 * 10**2) * 32
    assert op_flops("attn_h2", 32, 10) == op_flops("attn_h8", 32, 10)
    assert op_flops("conv_k5_relu", 32, 10) == 5 * op_flops("conv_k1_relu", 32, 10)


def test_bad_inputs_raise() -> None:
    genome = Genome(32, 16, (CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "identity", "output"]),))
    with pytest.raises(ValueError, match="seq_len must be a positive integer, got 0"):
        count_flops(genome, seq_len=0, num_labels=2)
    with pytest.raises(ValueError, match="vocab_size"):
        count_parameters(genome, vocab_size=-1, num_labels=2)
    with pytest.raises(OpBuildError, match="not divisible by 8 heads"):
        op_parameter_count("attn_h8", 36)
