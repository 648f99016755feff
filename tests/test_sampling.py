"""Random cells and genomes: determinism, validity, edge and parameter budgets."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from rosearch.config import SearchSpaceConfig
from rosearch.search_space import labels
from rosearch.search_space.genome import CellSpec, Genome, InvalidGenomeError
from rosearch.search_space.sampling import BudgetError, sample_cell, sample_genome

OPS = ("conv_k3_gelu", "attn_h4", "identity")
SPACE = SearchSpaceConfig(hidden_sizes=(32, 36), embedding_sizes=(8, 16), num_layers=(1, 2, 3),
                          nodes_per_cell=5, max_edges=7, op_families=("attn", "conv", "ffn", "identity"),
                          attention_heads=(2, 4, 8), kernel_sizes=(3,), ffn_ratios=(2,), activations=("gelu",))


def fake_param_count(genome: Genome) -> int:
    """A stand-in for cost.count_parameters: embedding-dominated, grows with H, E and depth."""
    return 1000 * genome.embedding_size + genome.num_layers * genome.hidden_size**2


def test_sample_cell_is_full_and_within_the_edge_budget():
    rng = random.Random(0)
    for _ in range(300):
        num_nodes = rng.randint(3, 8)
        max_edges = rng.randint(num_nodes - 1, num_nodes * (num_nodes - 1) // 2)
        spec = sample_cell(rng, num_nodes, OPS, max_edges)
        assert spec.num_nodes == num_nodes  # nothing was pruned
        assert num_nodes - 1 <= spec.num_edges <= max_edges
        assert set(spec.ops[1:-1]) <= set(OPS)


def test_sample_cell_with_the_tightest_budget_is_a_chain():
    rng = random.Random(1)
    chain = tuple(tuple(int(j == i + 1) for j in range(6)) for i in range(6))
    assert all(sample_cell(rng, 6, OPS, max_edges=5).matrix == chain for _ in range(50))


def test_sample_cell_reaches_every_full_dag_within_the_budget():
    n, max_edges = 5, 6
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    expected = set()
    for chosen in itertools.product((0, 1), repeat=len(pairs)):
        matrix = [[0] * n for _ in range(n)]
        for (i, j), bit in zip(pairs, chosen):
            matrix[i][j] = bit
        try:
            spec = CellSpec(matrix, ["input"] + ["identity"] * (n - 2) + ["output"])
        except InvalidGenomeError:
            continue
        if spec.num_nodes == n and spec.num_edges <= max_edges:
            expected.add(spec.matrix)
    rng = random.Random(2)
    seen = {sample_cell(rng, n, ["identity"], max_edges).matrix for _ in range(3000)}
    assert seen == expected and len(expected) == 45


@pytest.mark.parametrize(
    "num_nodes, ops, max_edges, fragment",
    [
        (2, OPS, 5, "num_nodes=2: a cell needs input, output and at least one operation node"),
        (5, OPS, 3, "max_edges=3 cannot connect 5 nodes \\(a chain alone needs 4\\)"),
        (5, (), 6, "op_labels is empty"),
    ],
)
def test_sample_cell_rejects_impossible_requests(num_nodes, ops, max_edges, fragment):
    with pytest.raises(ValueError, match=fragment):
        sample_cell(random.Random(0), num_nodes, ops, max_edges)


def test_sample_genome_is_deterministic_under_a_seed():
    first = [sample_genome(random.Random(7), SPACE).to_json() for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng_a, rng_b = random.Random(3), random.Random(3)
    assert [sample_genome(rng_a, SPACE) for _ in range(10)] == [sample_genome(rng_b, SPACE) for _ in range(10)]
    others = {sample_genome(random.Random(seed), SPACE).hash() for seed in range(10)}
    assert len(others) == 10


def test_sampled_genomes_are_valid_members_of_the_space():
    rng = random.Random(4)
    allowed = set(labels.op_labels(SPACE.op_families, SPACE.attention_heads, SPACE.kernel_sizes,
                                   SPACE.ffn_ratios, SPACE.activations))
    head_uses = set()
    for _ in range(100):
        g = sample_genome(rng, SPACE)
        assert Genome.from_json(g.to_json()) == g  # re-validates
        assert g.hidden_size in SPACE.hidden_sizes and g.embedding_size in SPACE.embedding_sizes
        assert g.num_layers in SPACE.num_layers
        for spec in g.cells:
            assert spec.num_nodes == SPACE.nodes_per_cell and spec.num_edges <= SPACE.max_edges
            assert set(spec.ops[1:-1]) <= allowed
            head_uses |= {(g.hidden_size, labels.parse_op(op).heads) for op in spec.ops[1:-1]} - {(g.hidden_size, None)}
    # 36 is not divisible by 8: attn_h8 only ever appears with hidden size 32
    assert head_uses == {(32, 2), (32, 4), (32, 8), (36, 2), (36, 4)}


def test_attention_labels_that_do_not_divide_the_hidden_size_are_skipped():
    space = SearchSpaceConfig(hidden_sizes=(36,), embedding_sizes=(8,), num_layers=(4,),
                              op_families=("attn",), attention_heads=(2, 8))
    rng = random.Random(5)
    used = {op for _ in range(20) for op in sample_genome(rng, space).op_labels_used()}
    assert used == {"attn_h2"}
    with pytest.raises(ValueError, match="no operation fits hidden_size=36"):
        sample_genome(rng, SearchSpaceConfig(hidden_sizes=(36,), op_families=("attn",), attention_heads=(8,)))


def test_param_budget_is_respected():
    # fake counts: E=8 costs 8_000 + L*H^2 <= 11_888 (fits); E=16 costs >= 16_000 (never fits)
    space = dataclasses.replace(SPACE, param_budget=12_000)
    rng = random.Random(6)
    genomes = [sample_genome(rng, space, param_count=fake_param_count) for _ in range(50)]
    assert all(fake_param_count(g) <= 12_000 for g in genomes)
    assert {g.embedding_size for g in genomes} == {8}
    assert {g.num_layers for g in genomes} == {1, 2, 3}  # only over-budget draws were redrawn


def test_budget_needs_a_param_count():
    space = dataclasses.replace(SPACE, param_budget=10**6)
    with pytest.raises(ValueError, match="param_budget is set, so sample_genome needs param_count="):
        sample_genome(random.Random(0), space)


def test_impossible_budget_names_the_smallest_genome_seen():
    space = dataclasses.replace(SPACE, param_budget=1_000)
    with pytest.raises(BudgetError) as info:
        sample_genome(random.Random(0), space, param_count=fake_param_count, max_tries=50)
    message = str(info.value)
    assert "param_budget=1,000 is too small: none of 50 sampled genomes fit" in message
    # the smallest member of the space: E=8, H=32, one layer = 8_000 + 1_024
    assert "the smallest had 9,024 parameters (hidden_size=32, embedding_size=8, num_layers=1)" in message
    assert issubclass(BudgetError, ValueError)
