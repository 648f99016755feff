"""Statistics of a run: genome features, the run's ranking, op/shape tables and correlations,
on synthetic stores (records written directly) whose right answers are known."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rosearch.config import SearchSpaceConfig
from rosearch.results.stats import (
    RunDirError, StatsError, architecture_frame, compute_stats, feature_correlations, genome_features, op_statistics,
    shape_effects,
)
from rosearch.records.store import CandidateRecord, ResultStore
from rosearch.search_space.genome import CellSpec, Genome
from rosearch.search_space.sampling import sample_genome

SPACE = SearchSpaceConfig(hidden_sizes=(32, 64), embedding_sizes=(16, 32), num_layers=(1, 2, 3), nodes_per_cell=5,
                          max_edges=7, attention_heads=(2, 4), kernel_sizes=(3, 5), ffn_ratios=(1, 2),
                          activations=("gelu", "relu"))


def record(genome: Genome, *, fitness: float, metrics: dict, generation: int = 0, status: str = "ok",
           finished_at: float = 0.0, objectives: tuple[float, ...] | None = None, error: str | None = None) -> CandidateRecord:
    return CandidateRecord(
        genome_hash=genome.hash(), genome_json=genome.to_json(), generation=generation, parents=(), status=status,
        metrics=metrics if status == "ok" else {}, fitness=fitness if status == "ok" else None,
        objectives=objectives or ((fitness,) if status == "ok" else (-1e9,)), error=error, attempts=1, seconds=1.0,
        worker="test:1:cpu", finished_at=finished_at,
    )


def distinct_genomes(n: int, seed: int = 0) -> list[Genome]:
    rng = random.Random(seed)
    genomes: dict[str, Genome] = {}
    while len(genomes) < n:
        genome = sample_genome(rng, SPACE)
        genomes.setdefault(genome.hash(), genome)
    return list(genomes.values())


def write_run(run_dir: Path, *, n: int = 12, robustness: str = "proxy", failed: int = 2, mode: str = "weighted") -> list[CandidateRecord]:
    """A finished-looking run: ``n`` ok candidates (fitness decreasing with index) plus ``failed`` failures.

    robustness: "proxy" (every candidate), "attack_all" (robust_accuracy everywhere), "attack_top"
    (robust_accuracy for the best 3 only, no proxy), "none".
    """
    genomes = distinct_genomes(n + failed)
    records = []
    for i, genome in enumerate(genomes[:n]):
        params = 1_000_000 + 37_000 * ((i * 7) % n)  # a shuffled order, all distinct
        metrics = {"dev_accuracy": 0.9 - 0.01 * i, "params": params, "flops": 10 * params, "latency_ms_b1": 1.0 + i,
                   "latency_ms_b32": 5.0 + i, "train_seconds": 2.0}
        robust = 0.2 + params / 1e8  # strictly increasing with params
        if robustness == "proxy":
            metrics["proxy_robust_accuracy"] = robust
        if robustness == "attack_all" or (robustness == "attack_top" and i < 3):
            metrics["robust_accuracy"] = robust
        objectives = (metrics["dev_accuracy"], float(params)) if mode == "nsga2" else None
        # finish order differs from rank order, so ranking is really done by fitness
        records.append(record(genome, fitness=1.0 - 0.02 * i, metrics=metrics, generation=i % 3,
                              finished_at=float((i * 5) % n), objectives=objectives))
    for genome in genomes[n:]:
        records.append(record(genome, fitness=0.0, metrics={}, status="failed", error="RuntimeError: boom"))
    with ResultStore(run_dir / "results.sqlite") as store:
        store.write_run_config({"evolution": {"mode": mode}, "run": {"name": run_dir.name}}, "fp", resume=False)
        for r in records:
            store.record_candidate(r)
    return records


def test_genome_features_of_a_known_genome() -> None:
    cell_a = CellSpec(  # input -> attn, input -> conv, attn -> conv, attn -> output, conv -> output, input -> output
        [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], ["input", "attn_h2", "conv_k5_relu", "output"])
    cell_b = CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "sepconv_k3_gelu", "output"])
    f = genome_features(Genome(32, 16, (cell_a, cell_b)))
    assert (f["hidden_size"], f["embedding_size"], f["num_layers"]) == (32, 16, 2)
    assert f["op_nodes"] == 3 and f["op_nodes_per_cell"] == 1.5
    assert f["edges_per_cell"] == (6 + 2) / 2
    assert f["max_in_degree"] == 3 and f["max_out_degree"] == 3  # output of cell_a; input of cell_a
    assert f["cell_depth"] == (3 + 2) / 2 and f["skip_cells"] == 0.5
    assert f["n_attn"] == 1 and f["n_conv"] == 1 and f["n_sepconv"] == 1 and f["n_ffn"] == 0
    assert f["attention_share"] == pytest.approx(1 / 3) and f["convolution_share"] == pytest.approx(2 / 3)
    assert f["kernel_mean"] == 4.0 and f["kernel_max"] == 5 and f["n_kernel_3"] == 1 and f["n_kernel_5"] == 1
    assert f["heads_mean"] == 2.0 and f["n_act_relu"] == 1 and f["n_act_gelu"] == 1 and f["n_act_tanh"] == 0
    assert f["op_labels"] == ("attn_h2", "conv_k5_relu", "sepconv_k3_gelu")
    assert f["op_families"] == ("attn", "conv", "sepconv")


def test_frame_ranks_by_fitness_and_counts_only_finished(tmp_path: Path) -> None:
    records = write_run(tmp_path / "run", n=12, failed=2)
    frame = architecture_frame(tmp_path / "run")
    ok = [r for r in records if r.status == "ok"]
    assert len(frame) == len(ok) == 12
    assert list(frame["rank"]) == list(range(1, 13))
    assert list(frame["genome_hash"]) == [r.genome_hash for r in sorted(ok, key=lambda r: -r.fitness)]
    assert frame["fitness"].is_monotonic_decreasing
    assert set(frame["robustness_key"]) == {"proxy_robust_accuracy"}
    by_hash = {r.genome_hash: r for r in ok}
    for row in frame.itertuples():
        assert row.robustness == by_hash[row.genome_hash].metrics["proxy_robust_accuracy"]
        assert row.accuracy == by_hash[row.genome_hash].metrics["dev_accuracy"]
    kernel_columns = [c for c in frame.columns if c.startswith("n_kernel_")]
    assert kernel_columns and (frame[kernel_columns].sum(axis=1) <= frame["op_nodes"]).all()
    # the same frame from the store object and from the results file itself
    with ResultStore(tmp_path / "run" / "results.sqlite", read_only=True) as store:
        pd.testing.assert_frame_equal(architecture_frame(store), frame)
    pd.testing.assert_frame_equal(architecture_frame(tmp_path / "run" / "results.sqlite"), frame)


def test_nsga2_runs_rank_lexicographically_on_signed_objectives(tmp_path: Path) -> None:
    records = write_run(tmp_path / "run", n=8, failed=0, mode="nsga2")
    frame = architecture_frame(tmp_path / "run")
    expected = sorted(records, key=lambda r: (r.objectives[0], -r.objectives[1]), reverse=True)
    assert list(frame["genome_hash"]) == [r.genome_hash for r in expected]


@pytest.mark.parametrize(("robustness", "key", "n_robust"), [
    ("attack_all", "robust_accuracy", 10), ("attack_top", "robust_accuracy", 3), ("none", None, 0),
])
def test_one_robustness_figure_per_run(tmp_path: Path, robustness: str, key: str | None, n_robust: int) -> None:
    write_run(tmp_path / "run", n=10, robustness=robustness)
    report = compute_stats(tmp_path / "run", top_k=3)
    assert report.robustness_key == key
    assert int(report.frame["robustness"].notna().sum()) == n_robust


def test_op_statistics_are_consistent_with_the_frame(tmp_path: Path) -> None:
    write_run(tmp_path / "run", n=12)
    frame = architecture_frame(tmp_path / "run")
    k = 4
    table = op_statistics(frame, top_k=k)
    expected_columns = {"level", "op", "n_with", "n_without", "top_k_with", "top_k_frac", "all_frac", "top_k_node_share",
                        "all_node_share", "mean_accuracy_with", "mean_accuracy_without", "mean_robustness_with",
                        "mean_robustness_without", "mean_fitness_with", "mean_fitness_without", "enrichment"}
    assert expected_columns <= set(table.columns)
    assert set(table["level"]) == {"family", "label"}
    assert set(table.loc[table["level"] == "label", "op"]) == {op for ops in frame["op_labels"] for op in ops}
    assert ((table["n_with"] + table["n_without"]) == len(frame)).all()
    assert (table["top_k_with"] <= table["n_with"].clip(upper=k)).all()
    assert (table["top_k_frac"] == table["top_k_with"] / k).all()
    for level in ("family", "label"):
        assert table.loc[table["level"] == level, "all_node_share"].sum() == pytest.approx(1.0)
        assert table.loc[table["level"] == level, "top_k_node_share"].sum() == pytest.approx(1.0)
    # one row recomputed by hand
    row = table[table["level"] == "family"].iloc[0]
    has = frame["op_families"].map(lambda fams: row["op"] in fams)
    assert row["n_with"] == has.sum()
    assert row["top_k_with"] == (has & (frame["rank"] <= k)).sum()
    assert row["mean_robustness_with"] == pytest.approx(frame.loc[has, "robustness"].mean())
    if (~has).any():
        assert row["mean_accuracy_without"] == pytest.approx(frame.loc[~has, "accuracy"].mean())
    with pytest.raises(StatsError, match="top_k"):
        op_statistics(frame, top_k=0)


def test_correlations_find_a_monotone_feature(tmp_path: Path) -> None:
    write_run(tmp_path / "run", n=12)
    frame = architecture_frame(tmp_path / "run")
    table = feature_correlations(frame)
    assert list(table.columns) == ["feature", "n_accuracy", "rho_accuracy", "p_accuracy", "n_robustness",
                                   "rho_robustness", "p_robustness"]
    params = table.set_index("feature").loc["params"]
    assert params["rho_robustness"] == pytest.approx(1.0)  # robustness was made increasing in params
    assert params["n_robustness"] == params["n_accuracy"] == len(frame)
    latency = table.set_index("feature").loc["latency_ms_b1"]
    assert latency["rho_accuracy"] == pytest.approx(-1.0)  # accuracy falls as latency rises
    assert table.iloc[0]["rho_robustness"] == pytest.approx(1.0)  # sorted by |rho| with robustness
    constant = [f for f in table["feature"] if frame[f].nunique() == 1]
    assert all(math.isnan(v) for v in table.set_index("feature").loc[constant, "rho_accuracy"])


def test_shape_effects_count_every_candidate_once_per_dimension(tmp_path: Path) -> None:
    write_run(tmp_path / "run", n=12)
    frame = architecture_frame(tmp_path / "run")
    shapes = shape_effects(frame)
    for dimension in ("hidden_size", "embedding_size", "num_layers"):
        part = shapes[shapes["dimension"] == dimension]
        assert part["n"].sum() == len(frame)
        assert set(part["value"]) == set(frame[dimension])
        for row in part.itertuples():
            group = frame[frame[dimension] == row.value]
            assert row.mean_accuracy == pytest.approx(group["accuracy"].mean())
            assert row.best_rank == group["rank"].min()


def test_run_without_robustness_is_analysed_on_accuracy(tmp_path: Path) -> None:
    write_run(tmp_path / "run", n=8, robustness="none")
    report = compute_stats(tmp_path / "run", top_k=3)
    assert report.robustness_key is None
    assert report.op_stats["mean_robustness_with"].isna().all()
    assert report.correlations["rho_robustness"].isna().all()
    assert report.correlations["rho_accuracy"].notna().any()
    assert report.shapes["mean_robustness"].isna().all()


def test_write_csv_round_trips(tmp_path: Path) -> None:
    write_run(tmp_path / "run", n=10)
    report = compute_stats(tmp_path / "run", top_k=20)  # more than the run has: all of them
    assert report.top_k == 10 and len(report.top) == 10
    paths = report.write_csv(tmp_path / "csv")
    assert sorted(p.name for p in paths) == ["architectures.csv", "attack_figures.csv", "feature_correlations.csv",
                                             "op_statistics.csv", "shape_effects.csv"]  # the run has robustness figures
    figures = pd.read_csv(tmp_path / "csv" / "attack_figures.csv")
    assert figures.loc[figures["used"], "figure"].tolist() == [report.robustness_key]
    architectures = pd.read_csv(tmp_path / "csv" / "architectures.csv")
    assert len(architectures) == 10
    assert architectures["op_labels"].str.split(" ").map(len).tolist() == report.frame["op_nodes"].tolist()
    assert json.loads(architectures["objectives"][0]) == report.frame["objectives"][0]
    assert len(pd.read_csv(tmp_path / "csv" / "op_statistics.csv")) == len(report.op_stats)


def test_bad_run_directories_are_named(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="results.sqlite"):
        architecture_frame(tmp_path / "nowhere")
    with ResultStore(tmp_path / "empty" / "results.sqlite"):
        pass
    with pytest.raises(RunDirError, match="no finished candidate"):
        compute_stats(tmp_path / "empty")


# ---------------------------------------------------------------- intervals and the noise floor


def _repeat(genome: Genome, seed: int, accuracy: float, robust: float) -> CandidateRecord:
    metrics = {"dev_accuracy": accuracy, "proxy_robust_accuracy": robust, "noise_source": "seed = distillation"}
    return record(genome, fitness=accuracy, metrics=metrics, generation=-1)


def test_stats_without_repeats_say_no_noise_floor_measured(tmp_path: Path) -> None:
    from rosearch.results.noise import NO_FLOOR

    write_run(tmp_path / "run", n=12)
    report = compute_stats(tmp_path / "run", top_k=3, resamples=200)
    assert not report.noise.sd and NO_FLOOR in report.noise.describe()
    for table in (report.op_stats, report.shapes):
        assert set(table["accuracy_vs_noise"]) <= {NO_FLOOR, "no effect"} and NO_FLOOR in set(table["accuracy_vs_noise"])
        assert (table["effect_accuracy_low"] <= table["effect_accuracy"] + 1e-12).all()
        assert (table["effect_accuracy"] <= table["effect_accuracy_high"] + 1e-12).all()
    assert {"rho_robustness_low", "rho_robustness_high", "delta_robustness", "robustness_vs_noise"} <= set(
        report.correlations.columns)
    from rosearch.results.report import render_report

    html = render_report(tmp_path / "run", top_k=3)
    assert NO_FLOOR in html and "acc vs noise" in html and "bootstrap" in html


def test_noise_floor_is_the_pooled_seed_sd_of_the_stored_repeats(tmp_path: Path) -> None:
    from rosearch.results.noise import ABOVE, INSIDE

    write_run(tmp_path / "run", n=12)
    a, b = distinct_genomes(2, seed=9)
    with ResultStore(tmp_path / "run" / "results.sqlite") as store:
        for i, (seed, acc, rob) in enumerate([(3, 0.5, 0.20), (4, 0.6, 0.20), (5, 0.7, 0.20)]):
            store.record_repeat(_repeat(a, seed, acc, rob), seed=seed, repeat=i)
        for i, (seed, acc, rob) in enumerate([(3, 0.8, 0.3), (4, 0.8, 0.5)]):
            store.record_repeat(_repeat(b, seed, acc, rob), seed=seed, repeat=i)
    report = compute_stats(tmp_path / "run", top_k=3, resamples=200)
    # accuracy: a has var 0.01 on 2 dof, b var 0 on 1 dof -> sqrt(0.02 / 3); robustness: sqrt(0.02 / 3) too
    assert report.noise.sd["accuracy"] == pytest.approx(math.sqrt(0.02 / 3))
    assert report.noise.sd["robustness"] == pytest.approx(math.sqrt(0.02 / 3))
    assert report.noise.keys == {"accuracy": "dev_accuracy", "robustness": "proxy_robust_accuracy"}
    assert report.noise.genomes == 2 and report.noise.evaluations == 5
    assert "distillation" in report.noise.describe()
    floor = report.noise.sd["accuracy"]
    for table in (report.op_stats, report.shapes):
        for row in table.to_dict("records"):
            low, high = row["effect_accuracy_low"], row["effect_accuracy_high"]
            if row["effect_accuracy"] != row["effect_accuracy"]:  # NaN: one group empty
                continue
            expected = ABOVE if low > floor or high < -floor else INSIDE
            assert row["accuracy_vs_noise"] == expected
    assert len(report.frame) == 12  # repeats are not candidates
    from rosearch.results.report import render_report

    html = render_report(tmp_path / "run", top_k=3)
    assert "noise floor: accuracy (dev_accuracy) sd 0.0816" in html and ("above noise" in html or "inside noise" in html)


def test_bootstrap_intervals_are_seeded_and_cover_a_known_difference() -> None:
    from rosearch.results.noise import Bootstrap

    rng = np.random.default_rng(0)
    mask = np.arange(200) < 100
    values = np.where(mask, 0.7, 0.5) + rng.normal(0, 0.01, 200)
    low, high = Bootstrap(200, 500, seed=1).difference(values, mask)
    assert low < 0.2 < high and high - low < 0.02
    assert (low, high) == Bootstrap(200, 500, seed=1).difference(values, mask)
    x = np.arange(50, dtype=float)
    r_low, r_high = Bootstrap(50, 300, seed=1).spearman(x, x + rng.normal(0, 1, 50))
    assert 0.9 < r_low <= r_high <= 1.0
