"""Turn a candidate's metrics into the values that selection compares.

Weighted mode (RoSearch): one scalar,
    fitness = w_acc * accuracy + w_rob * robustness + w_eff * efficiency,
with efficiency = 1 - min(cost / reference, 1) in [0, 1] (cost = params, FLOPs or latency;
reference = the teacher's value unless configured), so all three terms share a 0..1 scale. With
``fitness.accuracy_floor``, a candidate below the floor loses (w_acc + w_rob + w_eff) + its
shortfall: it ranks after every candidate at or above the floor (whose fitness is >= 0), and nearer
the floor ranks higher among those below it (Deb's feasibility rule).
Multi-objective mode (NSGA-II): the vector (accuracy, [robustness,] cost) with weights
(+1, [+1,] -1): no weights to tune, the whole Pareto front is kept.
Robustness enters when the run measures it (``attack.enabled``). Every candidate must be
compared on the same robustness figure, so the run picks one key for all: the mean accuracy under
the panel's attacks (``robust_accuracy``) when the panel runs on every candidate
(``attack.full_attack=all``, the default, or no proxy); the panel's first recipe
(``attack.<recipe>.accuracy_under_attack``) with ``multi_fidelity``; else the accuracy on the
teacher's adversarial proxy set (``proxy_robust_accuracy``). A run without robustness ignores its
weight. Accuracy is likewise one key: ``val_accuracy`` (the validation slice) when the run has
one, ``dev_accuracy`` when it has none (``data.validation_size=0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from rosearch.config import AttackConfig, Config, DataConfig, attack_panel
from rosearch.evaluate.robustness import recipe_key

COST_KEYS = {"params": "params", "flops": "flops", "latency": "latency_ms_b1"}
WORST = -1e9  # fitness of a failed candidate: below any real value, finite so DEAP can sort it


class MissingMetricError(KeyError):
    """A metric the fitness needs was not produced by the evaluation."""


@dataclass(frozen=True)
class FitnessSpec:
    """What selection optimises, fixed for a run."""

    mode: str  # "weighted" | "nsga2"
    names: tuple[str, ...]
    weights: tuple[float, ...]
    use_robustness: bool
    robustness_key: str
    cost_key: str
    reference_cost: float
    accuracy_weight: float
    robustness_weight: float
    efficiency_weight: float
    accuracy_key: str = "dev_accuracy"
    accuracy_floor: float | None = None

    def values(self, metrics: Mapping[str, Any]) -> tuple[float, ...]:
        """Selection values of a finished candidate (see the module docstring)."""
        accuracy = _metric(metrics, self.accuracy_key)
        cost = _metric(metrics, self.cost_key)
        robustness = robustness_of(metrics, self.robustness_key) if self.use_robustness else 0.0
        if self.mode == "nsga2":
            return (accuracy, robustness, cost) if self.use_robustness else (accuracy, cost)
        efficiency = 1.0 - min(cost / self.reference_cost, 1.0)
        total = self.accuracy_weight * accuracy + self.efficiency_weight * efficiency
        if self.use_robustness:
            total += self.robustness_weight * robustness
        if self.accuracy_floor is not None and accuracy < self.accuracy_floor:
            total -= self.accuracy_weight + self.robustness_weight + self.efficiency_weight + (self.accuracy_floor - accuracy)
        return (total,)

    def worst(self) -> tuple[float, ...]:
        """Values of a failed candidate: worse than any finished one on every objective."""
        return tuple(WORST if w > 0 else -WORST for w in self.weights)


def robustness_of(metrics: Mapping[str, Any], key: str) -> float:
    """The robustness figure ``key`` of a finished candidate (see the module docstring)."""
    value = metrics.get(key)
    if value is None or math.isnan(float(value)):
        raise MissingMetricError(f"robustness is in the fitness but the candidate has no {key!r}; it reported {sorted(metrics)}")
    return float(value)


def robustness_key(attack: AttackConfig) -> str:
    """The metric every candidate of a run with this ``attack`` section is compared on for robustness."""
    if attack.full_attack == "multi_fidelity":
        return recipe_key(attack_panel(attack)[0])
    return "robust_accuracy" if attack.full_attack == "all" or not attack.proxy else "proxy_robust_accuracy"


def accuracy_key(data: DataConfig) -> str:
    """The accuracy every candidate of a run with this ``data`` section is selected on: the validation slice,
    or dev without one."""
    return "val_accuracy" if data.validation_size > 0 else "dev_accuracy"


def _metric(metrics: Mapping[str, Any], key: str) -> float:
    if metrics.get(key) is None:
        raise MissingMetricError(f"fitness needs metric {key!r}; the candidate reported {sorted(metrics)}")
    return float(metrics[key])


def fitness_spec(config: Config, *, teacher_cost: Mapping[str, float]) -> FitnessSpec:
    """The run's fitness; ``teacher_cost`` gives the reference cost per metric key.

    Takes the whole config because a fitness is decided across sections: the weights and cost metric
    of ``fitness``, the objectives of ``evolution.mode``, whether and on what ``attack`` measures
    robustness, and whether ``data`` carves a validation slice to select on."""
    fit = config.fitness
    cost_key = COST_KEYS[fit.efficiency_metric]
    use_robustness = config.attack.enabled and fit.robustness_weight > 0
    if config.evolution.mode == "nsga2":
        names = ("accuracy", "robustness", cost_key) if use_robustness else ("accuracy", cost_key)
        weights = (1.0, 1.0, -1.0) if use_robustness else (1.0, -1.0)
    else:
        names, weights = ("fitness",), (1.0,)
    reference = float(teacher_cost.get(cost_key) or 0.0)
    if config.evolution.mode == "weighted" and fit.efficiency_weight > 0 and reference <= 0:
        raise ValueError(
            f"fitness.efficiency_metric={fit.efficiency_metric!r} needs a reference cost, but none is known for the teacher "
            "(fix: use efficiency_metric params or flops, or set fitness.efficiency_weight=0)"
        )
    return FitnessSpec(
        mode=config.evolution.mode, names=names, weights=weights, use_robustness=use_robustness,
        robustness_key=robustness_key(config.attack), cost_key=cost_key, reference_cost=reference or 1.0,
        accuracy_weight=fit.accuracy_weight, robustness_weight=fit.robustness_weight,
        efficiency_weight=fit.efficiency_weight, accuracy_key=accuracy_key(config.data),
        accuracy_floor=fit.accuracy_floor,
    )
