"""Analytic cost of a genome: parameters and forward FLOPs, without building a model.

The search filters and scores many genomes by size before training any of them, so these are
closed-form counts that mirror :mod:`rosearch.student.modeling` and
:mod:`rosearch.student.ops` exactly (the tests check parameter counts against built
models, and FLOPs against ``torch.utils.flop_counter``).

What :func:`count_flops` counts: 2 x the multiply-accumulates of every matrix product and
convolution (the embedding projection, every linear layer and convolution of every operation,
the pooler and classifier), plus the two attention matmuls (scores ``QK^T`` and ``AV``: 2 x T² x H
each). It ignores bias additions, activations, softmax, LayerNorm, residual sums, masking,
pooling operations and embedding lookups: elementwise work that is small next to the
matmuls. That is the same convention as ``torch.utils.flop_counter.FlopCounterMode`` (which
counts ``mm/addmm/bmm/baddbmm/convolution`` and fused attention kernels, without bias terms).
"""

from __future__ import annotations

from rosearch.search_space.families import FAMILIES
from rosearch.search_space.genome import Genome
from rosearch.search_space.labels import check_op_fits, parse_op


def op_parameter_count(label: str, hidden_size: int) -> int:
    """Trainable parameters of ``build_op(label, hidden_size)`` (each family's formula, see its module)."""
    spec = parse_op(label)
    check_op_fits(spec, hidden_size, label)
    return FAMILIES[spec.family].params(spec, hidden_size)


def op_flops(label: str, hidden_size: int, seq_len: int) -> int:
    """Forward FLOPs of ``build_op(label, hidden_size)`` on one sequence of ``seq_len`` tokens."""
    spec = parse_op(label)
    check_op_fits(spec, hidden_size, label)
    return FAMILIES[spec.family].flops(spec, hidden_size, seq_len)


def count_parameters(
    genome: Genome,
    *,
    vocab_size: int,
    num_labels: int,
    max_position_embeddings: int = 512,
    type_vocab_size: int = 2,
) -> int:
    """Exactly ``sum(p.numel() for p in model.parameters())`` of the
    ``StudentForSequenceClassification`` built from these values."""
    _check_positive(vocab_size=vocab_size, num_labels=num_labels, max_position_embeddings=max_position_embeddings,
                    type_vocab_size=type_vocab_size)
    H, E = genome.hidden_size, genome.embedding_size
    embeddings = vocab_size * E + (E * H + H) + max_position_embeddings * H + type_vocab_size * H + 2 * H
    layers = sum(
        sum(op_parameter_count(label, H) for label in cell.ops[1:-1]) + 2 * H  # ops + LayerNorm
        for cell in genome.cells
    )
    head = (H * H + H) + (H * num_labels + num_labels)  # pooler dense + classifier
    return embeddings + layers + head


def count_flops(genome: Genome, *, seq_len: int, num_labels: int) -> int:
    """Forward FLOPs for one example of ``seq_len`` tokens (see the module docstring for what counts)."""
    _check_positive(seq_len=seq_len, num_labels=num_labels)
    H, E, T = genome.hidden_size, genome.embedding_size, seq_len
    embeddings = 2 * T * E * H  # the E -> H projection; lookups are free
    layers = sum(op_flops(label, H, T) for cell in genome.cells for label in cell.ops[1:-1])
    head = 2 * H * H + 2 * H * num_labels  # pooler dense + classifier, on the pooled vector
    return embeddings + layers + head


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
