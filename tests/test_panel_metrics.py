"""The panel's figures from per-recipe reports, the proxy-vs-real agreement, and the printed summary."""

from __future__ import annotations

import math

import pytest

from rosearch.evaluate.robustness import panel_metrics, recipe_metrics
from rosearch.results.agreement import proxy_real_agreement
from rosearch.results.summary_view import summary_lines, summary_table


def report(accuracy: float, success: float, queries: float, seconds: float) -> dict[str, float]:
    return {"robust_accuracy": accuracy, "attack_success_rate": success, "attack_queries": queries,
            "attack_seconds": seconds, "perturbed_word_pct": 10.0, "attack_skipped": 1.0, "attack_successful": 6.0,
            "attack_failed": 3.0,
            "clean_accuracy_attacked_sample": 0.9, "attack_examples": 10.0}


def test_panel_is_the_mean_of_its_recipes_and_waits_for_all_of_them():
    flat = recipe_metrics({"deepwordbug": report(0.2, 0.7, 30, 4.0), "pwws": report(0.4, 0.5, 90, 20.0)})
    assert flat["attack.pwws.accuracy_under_attack"] == 0.4 and flat["attack.deepwordbug.seconds"] == 4.0
    panel = panel_metrics(flat, ("deepwordbug", "pwws"))
    assert panel["robust_accuracy"] == pytest.approx(0.3) and panel["attack_success_rate"] == pytest.approx(0.6)
    assert panel["attack_queries"] == pytest.approx(60) and panel["attack_seconds"] == pytest.approx(24.0)
    assert panel_metrics(flat, ("deepwordbug", "pruthi")) == {}  # multi-fidelity: not every recipe ran yet
    single = panel_metrics(flat, ("pwws",))  # one recipe: exactly its figures
    assert single["robust_accuracy"] == 0.4 and single["attack_queries"] == 90
    assert single["attack_successful"] + single["attack_failed"] + single["attack_skipped"] == 10
    assert "attack_successful" not in panel  # counts of two recipes do not add up to one sample


def test_min_aggregate_is_the_worst_attack_and_leaves_the_other_figures_alone():
    flat = recipe_metrics({"deepwordbug": report(0.55, 0.4, 30, 4.0), "pwws": report(0.05, 0.9, 90, 20.0)})
    worst = panel_metrics(flat, ("deepwordbug", "pwws"), "min")
    mean = panel_metrics(flat, ("deepwordbug", "pwws"))
    assert worst["robust_accuracy"] == 0.05 and mean["robust_accuracy"] == pytest.approx(0.30)
    assert {k: v for k, v in worst.items() if k != "robust_accuracy"} == {k: v for k, v in mean.items() if k != "robust_accuracy"}
    with pytest.raises(ValueError, match="panel_aggregate"):
        panel_metrics(flat, ("pwws",), "median")


def test_panel_aggregate_is_validated_and_part_of_the_results_fingerprint():
    from rosearch.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="attack.panel_aggregate"):
        config_from_dict({"attack": {"panel_aggregate": "median"}})
    default, worst = config_from_dict({}), config_from_dict({"attack": {"panel_aggregate": "min"}})
    assert default.attack.panel_aggregate == "mean"
    assert worst.results_fingerprint() != default.results_fingerprint()  # min selects differently: a new protocol


def test_proxy_real_agreement_by_hand():
    rows = [{"proxy_robust_accuracy": p, "robust_accuracy": r} for p, r in ((0.1, 0.3), (0.2, 0.1), (0.3, 0.2), (0.4, 0.4))]
    # ranks 1 2 3 4 vs 3 1 2 4: d^2 = 4 + 1 + 1 + 0 = 6, rho = 1 - 6 * 6 / (4 * 15) = 0.4
    result = proxy_real_agreement(rows + [{"proxy_robust_accuracy": 0.5}, {"robust_accuracy": math.nan}])
    assert result["n"] == 4 and result["rho"] == pytest.approx(0.4)
    assert proxy_real_agreement(rows[:2]) is None  # fewer than 3 pairs: no correlation to report


class _Summary:
    run_dir, evaluated, failed, reused, wall_seconds = "runs/x", 2, 0, 0, 60.0
    teacher_dev_accuracy, selection_split, attack_panel = 0.9, "validation", ["deepwordbug", "pwws"]
    attack_aggregate = "mean"
    split_stats = {"val_examples": 1000, "val_majority_rate": 0.55, "dev_examples": 872, "dev_majority_rate": 0.509}
    proxy_vs_real = {"rho": -0.26, "p": 0.53, "n": 8}
    teacher_attack = None
    top = [{"hash": "a" * 16, "generation": 0, "H": 128, "E": 64, "L": 2, "params": 1e6, "flops": 1e7,
            "val_accuracy": 0.8, "dev_accuracy": 0.79, "attack.deepwordbug.accuracy_under_attack": 0.1,
            "attack.pwws.accuracy_under_attack": 0.3, "robust_accuracy": 0.2, "objectives": [0.95]}]


def test_summary_shows_val_and_dev_each_recipe_majority_rates_and_agreement():
    table = summary_table(_Summary())
    headers = [c.header for c in table.columns]
    assert {"val acc", "dev acc (reported)", "deepwordbug acc", "pwws acc", "acc under attack (mean)"} <= set(headers)
    lines = "\n".join(summary_lines(_Summary()))
    assert "validation slice 0.5500 (1000 examples)" in lines and "dev 0.5090 (872 examples)" in lines
    assert "Spearman rho -0.260 (p 0.53, n 8)" in lines
    worst = type("_WorstSummary", (_Summary,), {"attack_aggregate": "min"})
    assert "acc under attack (min)" in [c.header for c in summary_table(worst()).columns]  # says which figure it is


def test_bench_panel_costs_by_hand(monkeypatch):
    """bench/attack_panel_cost.py: measured panel seconds, multi-fidelity estimate, rank agreement."""
    from pathlib import Path
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from attack_panel_cost import panel_costs

    records = [SimpleNamespace(status="ok", generation=g, metrics={
        "attack.deepwordbug.seconds": 4.0 + i, "attack.pwws.seconds": 10.0 + i, "train_seconds": 60.0,
        "attack.deepwordbug.accuracy_under_attack": 0.1 * i, "attack.pwws.accuracy_under_attack": 0.05 * i,
        "robust_accuracy": 0.075 * i, "proxy_robust_accuracy": 0.3 - 0.01 * i}) for g in range(2) for i in range(4)]
    config = {"attack": {"recipes": ["deepwordbug", "pwws"], "num_examples": 50}}
    figures = panel_costs(records, config, {"teacher_attack": {"wall_seconds": 200.0}}, top_k=1)
    strategies = list(figures["strategies_seconds"].values())
    assert strategies[0] == 136.0  # 2 x (4+5+6+7) + 2 x (10+11+12+13)
    assert strategies[1] == pytest.approx(44.0 + 3 * 11.5)  # deepwordbug on all 8; pwws on top 1 of 2 gens + final
    assert strategies[2] == 200.0
    assert figures["attack_share_of_candidate_time"] == pytest.approx(136 / (136 + 480))
    assert figures["rank_agreement_with_panel_mean"]["teacher-proxy"]["rho"] == pytest.approx(-1.0)


def test_bench_selection_agreement_by_hand(monkeypatch):
    """bench/selection_agreement.py: pairs run candidates with held-out rows, correlates overall and per defense."""
    from pathlib import Path
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from selection_agreement import agreement, pair_students

    # six defended students whose slice figure ranks them like the held-out one, six undefended in reverse order
    records, rows = [], []
    for i in range(12):
        defended = i < 6
        slice_mean = (0.4 if defended else 0.1) + 0.01 * (i % 6)
        held = (0.5 if defended else 0.05) + (0.01 * (i % 6) if defended else -0.01 * (i % 6))
        records.append(SimpleNamespace(status="ok", genome_hash=f"h{i}", metrics={
            "robust_accuracy": slice_mean, "attack.pwws.accuracy_under_attack": slice_mean, "val_accuracy": 0.8}))
        rows.append({"kind": "export", "genome_hash": f"h{i}", "defenses": ["word_recognition"] if defended else [],
                     "mean_accuracy_under_attack": held, "clean_accuracy": 0.8,
                     "attacks": {"pwws": {"accuracy_under_attack": held}}})
    rows.append({"kind": "plain_kd", "genome_hash": "h0", "mean_accuracy_under_attack": 0.0})  # not a student row
    records.append(SimpleNamespace(status="failed", genome_hash="x", metrics={}))
    students = pair_students(records, {"protocol": {"recipes": ["pwws"]}, "rows": rows})
    assert len(students) == 12
    result = agreement(students)
    assert result["all"]["panel mean (validation slice)"]["rho"] > 0.5  # the defense alone makes it look good
    assert result["all"]["val accuracy"] is None  # constant: no correlation
    assert result["by_defenses"]["word_recognition"]["rho"]["panel mean (validation slice)"]["rho"] == pytest.approx(1.0)
    assert result["by_defenses"]["none"]["rho"]["pwws (validation slice)"]["rho"] == pytest.approx(-1.0)
