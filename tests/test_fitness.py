"""Fitness values: the weighted RoSearch sum, NSGA-II objective vectors, failures."""

from __future__ import annotations

import pytest

from rosearch.config import ConfigError, config_from_dict
from rosearch.evaluate.fitness import WORST, MissingMetricError, fitness_spec

TEACHER = {"params": 20_000_000, "flops": 1_000_000_000}
# selection reads the validation slice; dev (reported only) differs on purpose so a mix-up shows
METRICS = {"val_accuracy": 0.85, "dev_accuracy": 0.99, "params": 5_000_000, "flops": 100_000_000, "robust_accuracy": 0.40}


def test_weighted_sum_by_hand():
    spec = fitness_spec(config_from_dict({"fitness": {"accuracy_weight": 1.0, "efficiency_weight": 0.2}}), teacher_cost=TEACHER)
    assert spec.names == ("fitness",) and spec.weights == (1.0,)
    assert spec.values(METRICS) == pytest.approx((0.85 + 0.2 * (1 - 5 / 20),))
    bigger = dict(METRICS, params=40_000_000)  # costlier than the teacher: efficiency clamps at 0
    assert spec.values(bigger) == pytest.approx((0.85,))


def test_robustness_enters_only_when_measured():
    fitness = {"robustness_weight": 0.5, "efficiency_weight": 0.0}
    off = config_from_dict({"fitness": fitness})
    assert fitness_spec(off, teacher_cost=TEACHER).values(METRICS) == pytest.approx((0.85,))
    full = config_from_dict({"fitness": fitness, "attack": {"enabled": True, "full_attack": "all"}})
    spec = fitness_spec(full, teacher_cost=TEACHER)
    assert spec.robustness_key == "robust_accuracy"
    assert spec.values(METRICS) == pytest.approx((0.85 + 0.5 * 0.40,))
    with pytest.raises(MissingMetricError, match="robust_accuracy"):
        spec.values({"val_accuracy": 0.8, "params": 1})


def test_proxy_robustness_is_the_one_figure_every_candidate_is_compared_on():
    attack = {"enabled": True, "proxy": True, "full_attack": "top_k"}
    config = config_from_dict({"fitness": {"robustness_weight": 0.5, "efficiency_weight": 0.0}, "attack": attack})
    spec = fitness_spec(config, teacher_cost=TEACHER)
    assert spec.robustness_key == "proxy_robust_accuracy"
    screened = METRICS | {"proxy_robust_accuracy": 0.3}  # also fully attacked: the proxy still decides selection
    assert spec.values(screened) == pytest.approx((0.85 + 0.5 * 0.3,))
    with pytest.raises(MissingMetricError, match="proxy_robust_accuracy"):
        spec.values(METRICS)


def test_nsga2_objectives_and_worst():
    plain = {"evolution": {"mode": "nsga2"}, "fitness": {"efficiency_metric": "flops"}}
    config = config_from_dict(plain | {"attack": {"enabled": True, "full_attack": "all"}})
    spec = fitness_spec(config, teacher_cost=TEACHER)
    assert spec.names == ("accuracy", "robustness", "flops") and spec.weights == (1.0, 1.0, -1.0)
    assert spec.values(METRICS) == (0.85, 0.40, 100_000_000.0)
    assert spec.worst() == (WORST, WORST, -WORST)  # worse than anything on every objective
    assert fitness_spec(config_from_dict(plain), teacher_cost=TEACHER).values(METRICS) == (0.85, 100_000_000.0)


def test_missing_metric_names_it():
    spec = fitness_spec(config_from_dict({}), teacher_cost=TEACHER)
    with pytest.raises(MissingMetricError, match="val_accuracy"):
        spec.values({"params": 3})


def test_old_runs_select_on_dev_and_new_ones_on_the_validation_slice():
    legacy = fitness_spec(config_from_dict({"data": {"validation_size": 0}, "fitness": {"efficiency_weight": 0.0}}),
                          teacher_cost=TEACHER)
    assert legacy.accuracy_key == "dev_accuracy" and legacy.values(METRICS) == pytest.approx((0.99,))
    new = fitness_spec(config_from_dict({"fitness": {"efficiency_weight": 0.0}}), teacher_cost=TEACHER)
    assert new.accuracy_key == "val_accuracy" and new.values(METRICS) == pytest.approx((0.85,))


def test_panel_is_the_default_figure_and_multi_fidelity_compares_on_its_first_recipe():
    fitness = {"robustness_weight": 0.5, "efficiency_weight": 0.0}
    panel = fitness_spec(config_from_dict({"fitness": fitness, "attack": {"enabled": True}}), teacher_cost=TEACHER)
    assert panel.robustness_key == "robust_accuracy"  # the panel's mean, on every candidate by default
    multi = config_from_dict({"fitness": fitness, "attack": {"enabled": True, "full_attack": "multi_fidelity",
                                                             "recipes": ["deepwordbug", "pwws"]}})
    spec = fitness_spec(multi, teacher_cost=TEACHER)
    assert spec.robustness_key == "attack.deepwordbug.accuracy_under_attack"
    cheap = METRICS | {"attack.deepwordbug.accuracy_under_attack": 0.2}  # the full panel's mean (0.40) is ignored
    assert spec.values(cheap) == pytest.approx((0.85 + 0.5 * 0.2,))


def test_accuracy_floor_ranks_every_candidate_below_it_after_those_above_it():
    config = config_from_dict({"fitness": {"robustness_weight": 1.0, "efficiency_weight": 0.1, "accuracy_floor": 0.84},
                               "attack": {"enabled": True, "full_attack": "all"}})
    spec = fitness_spec(config, teacher_cost=TEACHER)
    above = dict(METRICS, val_accuracy=0.84, robust_accuracy=0.0, params=20_000_000)  # on the floor, no robustness
    below = dict(METRICS, val_accuracy=0.83, robust_accuracy=1.0, params=1)  # 1 point under it, perfectly robust
    further = dict(below, val_accuracy=0.70)
    assert spec.values(above) == pytest.approx((0.84,))  # at the floor: the plain weighted sum
    assert spec.values(below) == pytest.approx((0.83 + 1.0 + 0.1 * (1 - 1 / 20_000_000) - 2.1 - 0.01,))
    assert spec.values(further)[0] < spec.values(below)[0] < 0 <= spec.values(above)[0]
    unbounded = fitness_spec(config_from_dict({"fitness": {"robustness_weight": 1.0, "efficiency_weight": 0.1},
                                               "attack": {"enabled": True, "full_attack": "all"}}), teacher_cost=TEACHER)
    assert unbounded.values(below)[0] > unbounded.values(above)[0]  # without the floor robustness buys the rank


@pytest.mark.parametrize("fitness, evolution, match", [
    ({"accuracy_floor": 1.5}, {}, "fitness.accuracy_floor.*must be an accuracy"),
    ({"accuracy_floor": 0}, {}, "fitness.accuracy_floor.*must be an accuracy"),
    ({"accuracy_floor": 0.8}, {"mode": "nsga2"}, "fitness.accuracy_floor.*weighted"),
])
def test_accuracy_floor_is_validated(fitness, evolution, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"fitness": fitness, "evolution": evolution})
