"""The training gene: robust-training methods the search switches on or off per candidate."""

from __future__ import annotations

import json
import random

import pytest
from test_search import check_store, tiny_search_dict

from rosearch.config import ConfigError, SearchSpaceConfig, config_from_dict, methods_used
from rosearch.distill.methods import teacher_cache_request
from rosearch.evolution.operators import crossover, mutate
from rosearch.search_space.genome import CellSpec, Genome, InvalidGenomeError
from rosearch.search_space.sampling import sample_genome

CELL = CellSpec(((0, 1, 0), (0, 0, 1), (0, 0, 0)), ("input", "ffn_r1_gelu", "output"))
SPACE = SearchSpaceConfig(hidden_sizes=(32,), embedding_sizes=(16,), num_layers=(1, 2), nodes_per_cell=4,
                          max_edges=5, attention_heads=(2, 4), kernel_sizes=(3,), ffn_ratios=(1, 2),
                          activations=("gelu", "relu"))


def test_genome_training_keeps_old_hashes_is_sorted_and_round_trips():
    plain = Genome(32, 16, (CELL,))
    trained = Genome(32, 16, (CELL,), (), ("rift", "adv_train"))
    both = Genome(32, 16, (CELL,), ("word_recognition",), ("adv_train",))
    assert trained.training == ("adv_train", "rift")
    assert "training" not in plain.to_dict() and trained.to_dict()["training"] == ["adv_train", "rift"]
    assert len({plain.hash(), trained.hash(), both.hash(), Genome(32, 16, (CELL,), ("word_recognition",)).hash()}) == 4
    assert trained.architecture().hash() == plain.hash() == both.architecture().hash()
    assert Genome.from_json(trained.to_json()) == trained and Genome.from_json(both.to_json()) == both
    assert Genome(32, 16, (CELL,), (), ("rift", "adv_train")).hash() == Genome(32, 16, (CELL,), (), ("adv_train", "rift")).hash()
    # a genome written without the gene (the key left out) reads back with the same hash
    old = {"hidden_size": 32, "embedding_size": 16, "cells": [CELL.to_dict()]}
    assert Genome.from_dict(old).hash() == plain.hash()
    for bad in ("adv_train", ["adv_train", "adv_train"], ["not a name"]):
        with pytest.raises(InvalidGenomeError, match="genome training"):
            Genome(32, 16, (CELL,), (), bad)


def test_sampling_mutation_and_crossover_explore_the_training_gene():
    import dataclasses

    space = dataclasses.replace(SPACE, training_choices=("adv_train", "rift"))
    rng = random.Random(0)
    sampled = [sample_genome(rng, space) for _ in range(40)]
    assert {g.training for g in sampled} == {(), ("adv_train",), ("rift",), ("adv_train", "rift")}
    # without choices, sampling draws exactly what it draws for a genome without the gene
    assert [sample_genome(random.Random(5), SPACE) for _ in range(3)] == \
        [dataclasses.replace(g, training=()) for g in [sample_genome(random.Random(5), SPACE) for _ in range(3)]]
    toggled = 0
    for seed in range(60):
        parent = sampled[seed % len(sampled)]
        child = mutate(parent, random.Random(seed), space)
        assert set(child.training) <= {"adv_train", "rift"}
        if child.training != parent.training:
            toggled += 1
            assert child.architecture() == parent.architecture()  # one mutation: the gene alone
            assert len(set(child.training) ^ set(parent.training)) == 1
    assert toggled > 0
    a, b = Genome(32, 16, (CELL,), (), ("adv_train", "rift")), Genome(32, 16, (CELL,), (), ())
    children = {crossover(a, b, random.Random(seed), space)[0].training for seed in range(30)}
    assert len(children) > 1 and all(set(t) <= {"adv_train", "rift"} for t in children)
    for seed in range(10):  # each method stays with exactly one of the two children
        c1, c2 = crossover(a, b, random.Random(seed), space)
        assert sorted(c1.training + c2.training) == ["adv_train", "rift"]


def test_training_choices_are_validated_and_part_of_the_results_fingerprint(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    def make(**sections):
        return config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, **sections))

    plain = make()
    assert plain.search_space.training_choices == () and methods_used(plain) == ()
    chosen = make(search_space={"training_choices": ["rift"]}, distill={"methods": ["layer_kd"]})
    assert methods_used(chosen) == ("layer_kd", "rift") and chosen.results_fingerprint() != plain.results_fingerprint()
    assert teacher_cache_request(chosen, 2).features  # rift's teacher features are cached for the whole run
    for sections, field_name in (
        ({"search_space": {"training_choices": ["typo"]}}, "search_space.training_choices[0]"),
        ({"search_space": {"training_choices": ["rift", "rift"]}}, "search_space.training_choices[1]"),
        ({"search_space": {"training_choices": ["rift"]}, "distill": {"methods": ["rift"]}},
         "search_space.training_choices[0]"),
    ):
        with pytest.raises(ConfigError, match=field_name.replace("[", r"\[").replace("]", r"\]")):
            make(**sections)


def test_a_tiny_search_explores_the_training_gene_and_stats_report_it(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    from rosearch.results.stats import compute_stats
    from rosearch.search import run_search

    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, run={"seed": 0},
                                               search_space={"training_choices": ["rift"]}))
    summary = run_search(config)
    assert summary.failed == 0
    records = check_store(config.run.run_dir, expect_ok=summary.evaluated)
    genomes = {r.genome_hash: Genome.from_json(r.genome_json) for r in records}
    assert {g.training for g in genomes.values()} == {(), ("rift",)}  # seed 0 samples both in generation 0
    for r in records:  # what each candidate trained with is recorded with it
        assert r.metrics.get("distill_methods", []) == list(genomes[r.genome_hash].training)
    report = compute_stats(config.run.run_dir, top_k=2)
    assert set(report.frame["training_rift"]) == {0, 1}
    (row,) = report.op_stats[report.op_stats["level"] == "training"].to_dict("records")
    assert row["op"] == "rift" and row["n_with"] == report.frame["training_rift"].sum()


def test_a_genome_file_with_an_unprepared_training_method_is_refused(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    from rosearch.prepare.preflight import GenomeFileError, check_genome

    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    genome = Genome(32, 16, (CELL,), (), ("adv_train",))
    with pytest.raises(GenomeFileError, match="search_space.training_choices"):
        check_genome(genome, config, None, "genome.json")
    chosen = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                               search_space={"training_choices": ["adv_train"]}))
    assert check_genome(genome, chosen, None, "genome.json") is None
    assert json.loads(genome.to_json())["training"] == ["adv_train"]
