"""Mutation, crossover and offspring drawing: always valid, inside the space grid, deterministic, unseen."""

from __future__ import annotations

import dataclasses
import random

import pytest

from rosearch.config import SearchSpaceConfig
from rosearch.evolution.operators import (
    MUTATIONS,
    Proposal,
    SearchSpaceExhaustedError,
    crossover,
    make_offspring,
    mutate,
)
from rosearch.search_space import labels
from rosearch.search_space.genome import Genome
from rosearch.search_space.sampling import sample_genome

# H=36 is not divisible by 8 heads, so changing H exercises the attention-head repair
SPACE = SearchSpaceConfig(hidden_sizes=(32, 36), embedding_sizes=(8, 16), num_layers=(1, 2, 4),
                          nodes_per_cell=5, max_edges=6, op_families=("attn", "conv", "ffn", "identity"),
                          attention_heads=(2, 4, 8), kernel_sizes=(3, 5), ffn_ratios=(2,), activations=("gelu", "relu"))
GRID = set(labels.op_labels(SPACE.op_families, SPACE.attention_heads, SPACE.kernel_sizes, SPACE.ffn_ratios,
                            SPACE.activations))


def fake_param_count(genome: Genome) -> int:
    """A stand-in for cost.count_parameters: grows with E, H, depth and cell size."""
    return 100 * genome.embedding_size + sum(genome.hidden_size * cell.num_nodes for cell in genome.cells)


class Member:
    """A population member as make_offspring sees it (the loop's Individual has more)."""

    def __init__(self, genome: Genome) -> None:
        self.genome = genome


def random_parents(population, k, rng):
    return [rng.choice(population) for _ in range(k)]


def assert_in_space(genome: Genome, space: SearchSpaceConfig = SPACE) -> None:
    assert Genome.from_json(genome.to_json()) == genome  # re-validates from scratch
    assert genome.hidden_size in space.hidden_sizes
    assert genome.embedding_size in space.embedding_sizes
    assert genome.num_layers in space.num_layers
    for cell in genome.cells:
        assert 3 <= cell.num_nodes <= space.nodes_per_cell
        assert cell.num_edges <= space.max_edges
        for op in cell.ops[1:-1]:
            assert op in GRID
            assert genome.hidden_size % (labels.parse_op(op).heads or 1) == 0
    if space.param_budget is not None:
        assert fake_param_count(genome) <= space.param_budget


def mutation_walk(seed: int, steps: int, space: SearchSpaceConfig = SPACE, param_count=None) -> list[Genome]:
    rng = random.Random(seed)
    genome = sample_genome(rng, space, param_count=param_count)
    walk = [genome]
    for _ in range(steps):
        genome = mutate(genome, rng, space, param_count=param_count)
        walk.append(genome)
    return walk


def test_200_mutations_are_valid_distinct_from_their_parent_and_cover_every_gene():
    walk = mutation_walk(seed=0, steps=200)
    for parent, child in zip(walk, walk[1:]):
        assert_in_space(child)
        assert child.hash() != parent.hash()
    # every kind of change happened somewhere along the walk
    assert {g.hidden_size for g in walk} == set(SPACE.hidden_sizes)
    assert {g.embedding_size for g in walk} == set(SPACE.embedding_sizes)
    assert {g.num_layers for g in walk} == set(SPACE.num_layers)
    node_counts = {cell.num_nodes for g in walk for cell in g.cells}
    assert {3, SPACE.nodes_per_cell} <= node_counts  # cells shrink (pruning) and grow back (add_node)
    edge_counts = {cell.num_edges for g in walk for cell in g.cells}
    assert len(edge_counts) >= 3
    assert len({g.hash() for g in walk}) > 150
    assert len(MUTATIONS) == 7


def test_hidden_size_mutation_repairs_attention_heads():
    rng = random.Random(3)
    space = dataclasses.replace(SPACE, embedding_sizes=(8,), num_layers=(1,), op_families=("attn",), max_edges=4)
    genome = Genome.from_dict({"hidden_size": 32, "embedding_size": 8, "cells": [
        {"matrix": [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
         "ops": ["input", "attn_h8", "attn_h8", "output"]}]})
    to_36 = []
    for _ in range(60):
        child = mutate(genome, rng, space)
        assert_in_space(child, space)
        if child.hidden_size == 36:
            to_36.append(child)
    assert to_36, "no hidden-size mutation happened in 60 draws"
    for child in to_36:  # 8 heads do not divide 36: relabelled to 2 or 4 heads, nothing else changed
        assert all(op in ("attn_h2", "attn_h4") for op in child.cells[0].ops[1:-1])
        assert child.cells[0].matrix == genome.cells[0].matrix


def test_mutation_and_crossover_are_deterministic_under_a_seed():
    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        a, b = sample_genome(rng, SPACE), sample_genome(rng, SPACE)
        out = []
        for _ in range(30):
            a = mutate(a, rng, SPACE)
            c1, c2 = crossover(a, b, rng, SPACE)
            b = c2
            out += [a.hash(), c1.hash(), c2.hash()]
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_200_crossovers_are_valid_and_mix_the_parents_layer_by_layer():
    rng = random.Random(1)
    mixed = 0
    for _ in range(200):
        a, b = sample_genome(rng, SPACE), sample_genome(rng, SPACE)
        c1, c2 = crossover(a, b, rng, SPACE)
        for child in (c1, c2):
            assert_in_space(child)
        # each child keeps its own parent's depth; H and E are exchanged as a pair of genes
        assert (c1.num_layers, c2.num_layers) == (a.num_layers, b.num_layers)
        assert {c1.hidden_size, c2.hidden_size} == {a.hidden_size, b.hidden_size}
        assert {c1.embedding_size, c2.embedding_size} == {a.embedding_size, b.embedding_size}
        for i in range(min(a.num_layers, b.num_layers)):  # same position: the two cells are shared out
            pair = {c1.cells[i].matrix, c2.cells[i].matrix}
            assert pair == {a.cells[i].matrix, b.cells[i].matrix}
        for longer, child, other in ((a, c1, b), (b, c2, a)):  # extra layers stay with the longer parent's child
            for i in range(other.num_layers, longer.num_layers):
                assert child.cells[i].matrix == longer.cells[i].matrix  # ops may get a head repair
        mixed += c1.hash() not in (a.hash(), b.hash())
    assert mixed > 120


def test_operators_respect_the_parameter_budget():
    space = dataclasses.replace(SPACE, param_budget=1800)
    walk = mutation_walk(seed=2, steps=200, space=space, param_count=fake_param_count)
    for genome in walk:
        assert_in_space(genome, space)
    assert len({g.hash() for g in walk}) > 100  # the walk still moves under the budget
    rng = random.Random(4)
    for _ in range(100):
        a = sample_genome(rng, space, param_count=fake_param_count)
        b = sample_genome(rng, space, param_count=fake_param_count)
        for child in crossover(a, b, rng, space, param_count=fake_param_count):
            assert_in_space(child, space)
    unbudgeted = mutation_walk(seed=2, steps=200)
    assert max(fake_param_count(g) for g in unbudgeted) > 1800  # so the budget above really bit
    with pytest.raises(ValueError, match="param_count"):
        mutate(walk[0], rng, space)
    with pytest.raises(ValueError, match="param_count"):
        crossover(walk[0], walk[1], rng, space)


def test_make_offspring_never_proposes_a_seen_or_repeated_genome():
    rng = random.Random(5)
    population = [Member(sample_genome(rng, SPACE)) for _ in range(6)]
    seen = {m.genome.hash() for m in population}
    seen_before = set(seen)
    for generation in range(1, 6):
        children = make_offspring(population, 8, rng, SPACE, generation=generation, cxpb=0.5, mutpb=0.5,
                                  select_parents=random_parents, seen=seen, max_tries=50, param_count=None)
        hashes = [p.genome.hash() for p in children]
        assert len(children) == 8 and len(set(hashes)) == 8
        assert not set(hashes) & seen
        population_hashes = {m.genome.hash() for m in population}
        for p in children:
            assert isinstance(p, Proposal) and p.generation == generation
            assert len(p.parents) in (1, 2) and set(p.parents) <= population_hashes
            assert_in_space(p.genome)
        seen |= set(hashes)
        population = [Member(p.genome) for p in children]
    assert len(seen) == len(seen_before) + 5 * 8


def test_make_offspring_does_not_modify_seen():
    rng = random.Random(6)
    population = [Member(sample_genome(rng, SPACE)) for _ in range(3)]
    seen = {m.genome.hash() for m in population}
    copy = set(seen)
    make_offspring(population, 4, rng, SPACE, generation=1, cxpb=1.0, mutpb=0.0, select_parents=random_parents,
                   seen=seen, max_tries=50, param_count=None)
    assert seen == copy


def test_make_offspring_says_when_the_space_is_exhausted():
    # one layer, one 3-node chain, two possible ops: exactly two genomes exist
    tiny = SearchSpaceConfig(hidden_sizes=(32,), embedding_sizes=(8,), num_layers=(1,), nodes_per_cell=3,
                             max_edges=2, op_families=("attn", "identity"), attention_heads=(2,),
                             kernel_sizes=(3,), ffn_ratios=(1,), activations=("gelu",))
    rng = random.Random(0)
    population = [Member(sample_genome(rng, tiny))]
    seen = {population[0].genome.hash()}
    (only_other,) = make_offspring(population, 1, rng, tiny, generation=1, cxpb=0.3, mutpb=0.8,
                                   select_parents=random_parents, seen=seen, max_tries=10, param_count=None)
    assert only_other.genome.hash() not in seen
    seen.add(only_other.genome.hash())
    with pytest.raises(SearchSpaceExhaustedError, match="exhausted.*max_resample"):
        make_offspring(population, 1, rng, tiny, generation=2, cxpb=0.3, mutpb=0.8,
                       select_parents=random_parents, seen=seen, max_tries=10, param_count=None)


def test_make_offspring_rejects_bad_arguments():
    rng = random.Random(0)
    population = [Member(sample_genome(rng, SPACE))]
    kwargs = dict(generation=1, select_parents=random_parents, seen=set(), max_tries=5, param_count=None)
    with pytest.raises(ValueError, match="cxpb.*1.5"):
        make_offspring(population, 1, rng, SPACE, cxpb=1.5, mutpb=0.5, **kwargs)
    with pytest.raises(ValueError, match="non-empty population"):
        make_offspring([], 1, rng, SPACE, cxpb=0.5, mutpb=0.5, **kwargs)
