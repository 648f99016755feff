"""The ablation: paired statistics by hand, one-gene neighbours, repeats in the store, and `rosearch ablate` end to end."""

from __future__ import annotations

import csv
import json
import math
import random
import time

import pytest

from rosearch.commands.ablate import AblationInputError, repeat_seeds, resample_evaluation, run_ablation, run_repeat_task
from rosearch.config import SearchSpaceConfig, config_from_dict
from rosearch.records.store import CandidateRecord, ResultStore
from rosearch.results.ablation import CHANGES, TOO_FEW, WITHIN_NOISE, paired_effect, paired_figures, sample_sd
from rosearch.search_space.genome import CellSpec, Genome
from rosearch.search_space.neighbours import (
    MAX_OP_VALUES, AblationGeneError, check_in_space, one_gene_neighbours, op_values, parse_genes,
)
from rosearch.search_space.sampling import sample_genome

from test_search import tiny_search_dict


# ---------------------------------------------------------------- paired statistics


def test_paired_effect_on_a_hand_checkable_case():
    effect = paired_effect([0.5, 0.6, 0.7], [0.6, 0.6, 0.9])  # d = [0.1, 0, 0.2]
    assert effect.n == 3
    assert effect.mean == pytest.approx(0.1)
    assert effect.sd == pytest.approx(0.1)
    assert effect.half_width == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)  # 0.2484
    assert effect.half_width == pytest.approx(0.2484, abs=1e-4)
    assert (effect.low, effect.high) == pytest.approx((0.1 - 0.248414, 0.1 + 0.248414), abs=1e-5)
    assert effect.verdict == WITHIN_NOISE  # the interval holds 0


def test_paired_effect_says_changes_when_the_interval_excludes_zero():
    effect = paired_effect([0.5, 0.6, 0.7], [0.60, 0.71, 0.79])
    assert effect.low > 0 and effect.verdict == CHANGES
    worse = paired_effect([0.5, 0.6, 0.7], [0.40, 0.49, 0.61])
    assert worse.high < 0 and worse.verdict == CHANGES


def test_paired_effect_needs_two_seeds_and_equal_lengths():
    assert paired_effect([0.5], [0.6]).verdict == TOO_FEW
    assert math.isnan(paired_effect([0.5], [0.6]).low)
    with pytest.raises(ValueError, match="one value per seed"):
        paired_effect([0.5, 0.6], [0.6])


def test_pairing_is_by_seed_and_skips_missing_figures():
    base = {3: 0.5, 4: 0.6, 5: 0.7}
    variant = {5: 0.9, 3: 0.6, 6: 0.1, 4: math.nan}
    assert paired_figures(base, variant) == ([0.5, 0.7], [0.6, 0.9])


def test_sample_sd_is_the_ddof_1_sd():
    assert sample_sd([0.5, 0.6, 0.7]) == pytest.approx(0.1)
    assert math.isnan(sample_sd([0.5]))


# ---------------------------------------------------------------- neighbours


def _space(**changes) -> SearchSpaceConfig:
    values = dict(hidden_sizes=(32, 64), embedding_sizes=(16, 24), num_layers=(1, 2, 3), nodes_per_cell=4,
                  max_edges=5, op_families=("conv", "ffn", "identity"), attention_heads=(2,), kernel_sizes=(3,),
                  ffn_ratios=(1, 2), activations=("gelu", "relu"), defense_choices=("word_recognition",),
                  training_choices=("adv_train",))
    return SearchSpaceConfig(**(values | changes))


def _base() -> Genome:
    cell = CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv_k3_gelu", "output"])
    return Genome(32, 16, (cell, cell))


def test_neighbours_change_one_gene_each_with_values_of_the_space():
    space = _space()
    base = _base()
    found = one_gene_neighbours(base, space)
    by_gene = {}
    for n in found:
        by_gene.setdefault(n.gene, []).append(n)
        assert n.genome is not None and n.genome.hash() != base.hash()
    assert [n.genome.cells[0].ops[1] for n in by_gene["op"]] == ["conv_k3_relu", "ffn_r1_gelu", "ffn_r1_relu",
                                                                  "ffn_r2_gelu", "ffn_r2_relu", "identity"]
    assert all(n.genome.cells[1] == base.cells[1] for n in by_gene["op"])  # only layer 0 node 1 changes
    assert [n.genome.hidden_size for n in by_gene["hidden"]] == [64]
    assert [n.genome.embedding_size for n in by_gene["embedding"]] == [24]
    assert sorted(n.genome.num_layers for n in by_gene["depth"]) == [1, 3]
    assert [n.genome.defenses for n in by_gene["defense"]] == [("word_recognition",)]
    assert [n.genome.training for n in by_gene["training"]] == [("adv_train",)]
    for n in found:  # everything but the changed gene is the base's
        g = n.genome
        same = {"hidden": g.hidden_size == 32, "embedding": g.embedding_size == 16, "depth": g.num_layers == 2,
                "op": g.cells[0] == base.cells[0] or g.num_layers != 2,
                "defense": not g.defenses, "training": not g.training}
        assert all(ok for gene, ok in same.items() if gene != n.gene), n.change


def test_neighbours_of_selected_genes_only_and_toggled_off():
    space = _space()
    base = Genome(32, 16, _base().cells, ("word_recognition",), ("adv_train",))
    found = one_gene_neighbours(base, space, ("defense", "training"))
    assert [(n.gene, n.genome.defenses, n.genome.training) for n in found] == [
        ("defense", (), ("adv_train",)), ("training", ("word_recognition",), ())]


def test_neighbours_over_the_budget_are_listed_as_skipped():
    space = _space(param_budget=10_000)
    counts = {32: 9_000, 64: 20_000}
    found = one_gene_neighbours(_base(), space, ("hidden", "embedding"),
                                param_count=lambda g: counts[g.hidden_size])
    skipped = [n for n in found if n.genome is None]
    assert [(n.gene, n.change) for n in skipped] == [("hidden", "hidden_size 32 -> 64")]
    assert "exceed search_space.param_budget=10,000" in skipped[0].skipped
    assert [n.gene for n in found if n.genome is not None] == ["embedding"]


def test_neighbours_stay_inside_the_space_at_its_edges():
    space = _space(hidden_sizes=(32,), num_layers=(1, 2))
    found = one_gene_neighbours(_base(), space, ("hidden", "depth"))  # base: H=32 (the only one), L=2 (the top)
    assert [(n.gene, n.change) for n in found] == [("depth", "num_layers 2 -> 1 (last layers dropped)")]
    assert found[0].genome.cells == _base().cells[:1]


def test_op_values_subset_when_the_space_has_many_labels():
    space = SearchSpaceConfig()  # the default grid: far more than MAX_OP_VALUES labels
    from rosearch.search_space import labels

    grid = labels.op_labels(space.op_families, space.attention_heads, space.kernel_sizes, space.ffn_ratios,
                            space.activations)
    chosen = op_values("conv_k5_gelu", grid)
    assert len(grid) - 1 > MAX_OP_VALUES
    assert chosen == op_values("conv_k5_gelu", grid)  # deterministic
    assert {"conv_k3_gelu", "conv_k7_gelu", "conv_k5_relu", "conv_k5_swish", "conv_k5_tanh"} <= set(chosen)
    assert "conv_k3_relu" not in chosen  # two parameters away in the same family
    families = {labels.parse_op(op).family for op in chosen}
    assert families == set(space.op_families)  # one label of each other family
    assert "sepconv_k5_gelu" in chosen and "dilconv_k5_gelu" in chosen  # the nearest of the family


def test_parse_genes_and_space_checks_refuse_with_the_field():
    assert parse_genes("op, depth") == ("op", "depth")
    assert parse_genes("all") == parse_genes(None)
    assert parse_genes("none") == ()
    with pytest.raises(AblationGeneError, match="--genes: unknown gene.*'width'"):
        parse_genes("op,width")
    with pytest.raises(AblationGeneError, match="hidden_size=48 is not in search_space.hidden_sizes"):
        check_in_space(Genome(48, 16, _base().cells), _space())
    with pytest.raises(AblationGeneError, match="training_choices"):
        check_in_space(Genome(32, 16, _base().cells, (), ("rift",)), _space())


def test_neighbours_of_random_genomes_are_valid_and_differ():
    space = _space()
    rng = random.Random(0)
    for _ in range(20):
        genome = sample_genome(rng, space)
        for n in one_gene_neighbours(genome, space):
            assert n.genome is None or n.genome.hash() != genome.hash()


# ---------------------------------------------------------------- repeats in the store


def _record(genome: Genome, acc: float) -> CandidateRecord:
    return CandidateRecord(genome.hash(), genome.to_json(), -1, (), "ok", {"dev_accuracy": acc}, acc, (acc,), None, 1,
                           1.0, "test", time.time())


def test_repeats_are_stored_per_seed_and_kept_apart_from_candidates(tmp_path):
    path = tmp_path / "results.sqlite"
    genome = _base()
    with ResultStore(path) as store:
        assert store.repeats() == []
        for repeat, (seed, acc) in enumerate([(3, 0.5), (4, 0.6), (5, 0.7)]):
            store.record_repeat(_record(genome, acc), seed=seed, repeat=repeat)
        store.record_repeat(_record(genome, 0.65), seed=4, repeat=1)  # the same seed again replaces it
        store.record_candidate(_record(genome, 0.9))
    with ResultStore(path, read_only=True) as store:
        repeats = store.repeats(genome.hash())
        assert [(r.seed, r.repeat, r.record.metrics["dev_accuracy"]) for r in repeats] == [
            (3, 0, 0.5), (4, 1, 0.65), (5, 2, 0.7)]
        assert len(store.candidates()) == 1 and store.candidates()[0].metrics["dev_accuracy"] == 0.9
        assert store.repeats("0" * 32) == []


def test_a_store_written_before_repeats_existed_reads_none(tmp_path):
    import sqlite3

    path = tmp_path / "results.sqlite"
    ResultStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE repeats")
    with ResultStore(path, read_only=True) as store:
        assert store.repeats() == []
    with ResultStore(path) as store:  # and the first repeat creates the table
        store.record_repeat(_record(_base(), 0.5), seed=1, repeat=0)
        assert len(store.repeats()) == 1


# ---------------------------------------------------------------- end to end


def _ablate_dict(tmp_path, sst2_dir, teacher_dir) -> dict:
    return tiny_search_dict(tmp_path, sst2_dir, teacher_dir,
                            search_space={"embedding_sizes": [16, 24], "num_layers": [1, 2]},
                            distill={"max_steps": 4})


def test_ablate_end_to_end_resumes_without_evaluating_again(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    config = config_from_dict(_ablate_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    cell = CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "ffn_r1_gelu", "output"])
    base = Genome(32, 16, (cell,))
    genome_file = tmp_path / "base.json"
    genome_file.write_text(base.to_json())
    calls = []

    def counting(task, shared):
        calls.append((task.genome_hash, task.seed))
        return run_repeat_task(task, shared)

    result = run_ablation(config, str(genome_file), 2, ("depth", "embedding"), task_fn=counting)
    assert result.evaluated == 6 and result.reused == 0 and result.failed == 0  # 3 genomes x 2 seeds
    assert sorted({seed for _, seed in calls}) == repeat_seeds(3, 2) == [3, 4]
    run_dir = config.run.run_dir
    with ResultStore(run_dir / "results.sqlite", read_only=True) as store:
        repeats = store.repeats()
        assert len(repeats) == 6 and store.candidates() == []
        base_repeats = store.repeats(base.hash())
        assert [r.seed for r in base_repeats] == [3, 4]  # one genome, two rows: not deduplicated
        assert all(r.record.metrics["repeat_seed"] == r.seed for r in repeats)
        assert "distillation" in repeats[0].record.metrics["noise_source"]
    rows = list(csv.DictReader((run_dir / "ablation.csv").open()))
    assert {(r["gene"], r["metric"]) for r in rows} == {("depth", "val_accuracy"), ("embedding", "val_accuracy")}
    for row in rows:  # the table's figures are the stored ones, paired by seed
        with ResultStore(run_dir / "results.sqlite", read_only=True) as store:
            variant = {r.seed: r.record.metrics["val_accuracy"] for r in store.repeats(row["genome_hash"])}
            base_acc = {r.seed: r.record.metrics["val_accuracy"] for r in store.repeats(base.hash())}
        effect = paired_effect([base_acc[3], base_acc[4]], [variant[3], variant[4]])
        assert float(row["mean_diff"]) == pytest.approx(effect.mean)
        assert float(row["base_sd"]) == pytest.approx(sample_sd([base_acc[3], base_acc[4]]))
        assert row["verdict"] == effect.verdict
    header = json.loads((run_dir / "ablation.json").read_text())
    assert header["base"] == base.hash() and header["seeds"] == [3, 4] and len(header["rows"]) == 2

    calls.clear()  # a second call finds everything in the store
    again = run_ablation(config, base.hash()[:10], 2, ("depth", "embedding"), task_fn=counting)
    assert calls == [] and again.evaluated == 0 and again.reused == 6
    assert [r.mean_diff for r in again.rows] == [r.mean_diff for r in result.rows]

    calls.clear()  # one seed more evaluates only that seed
    third = run_ablation(config, str(genome_file), 3, ("depth", "embedding"), task_fn=counting)
    assert sorted(calls) == sorted((h, 5) for h, _ in set(calls)) and len(calls) == 3
    assert third.reused == 6 and all(r.seeds == 3 for r in third.rows)


def test_ablate_refuses_unknown_hash_and_too_few_seeds(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    config = config_from_dict(_ablate_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    with pytest.raises(AblationInputError, match="--seeds 1"):
        run_ablation(config, "abcdef", 1, ("depth",))
    with pytest.raises(AblationInputError, match="--genome 'abcdef' matches no stored genome"):
        run_ablation(config, "abcdef", 2, ("depth",))


def test_supernet_repeats_draw_the_evaluation_sample(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    """With the supernet the seed changes the sample, paired across genomes: the same seed, the same draw."""
    from rosearch.data.tasks import Example
    from rosearch.data.batching import EncodedSplit
    from rosearch.prepare.search_inputs import SearchInputs
    import dataclasses
    import numpy as np

    config = config_from_dict(_ablate_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir) | {"supernet": {"attack_examples": 3}})
    val = EncodedSplit(np.arange(10, dtype=np.int32), np.arange(11, dtype=np.int64), np.arange(10) % 2, None, 0, 2, "v")
    pool = tuple(Example(text_a=f"t{i}", text_b=None, label=i % 2) for i in range(8))
    fields = {f.name: None for f in dataclasses.fields(SearchInputs) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    inputs = SearchInputs(**fields | {"train": val, "dev": val}, val=val, attack_examples=pool)
    a, b, c = (resample_evaluation(inputs, config, seed) for seed in (3, 3, 4))
    assert a.attack_examples == b.attack_examples and len(a.attack_examples) == 3
    assert list(a.val.input_ids) == list(b.val.input_ids)
    assert a.attack_examples != c.attack_examples or list(a.val.input_ids) != list(c.val.input_ids)
    assert set(a.attack_examples) <= set(pool)
