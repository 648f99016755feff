"""Robustness of one candidate: cheap proxy accuracy, and the full TextAttack attack.

The proxy is the accuracy on the teacher's successful adversarial examples (built once per run
by :mod:`rosearch.attack.proxy`): one forward pass, so every candidate gets it. The full attack
queries the student hundreds of times per example; a search runs a panel of recipes
(``attack.recipes``) on the candidates ``attack.full_attack`` selects (by default all of them) and
stores each recipe's figures as ``attack.<recipe>.*`` beside the panel's mean. Both run inside a
worker from the run's shared inputs alone.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from rosearch.attack.runner import attack_model
from rosearch.config import AttackConfig, DataConfig, attack_panel
from rosearch.data.tasks import task_spec
from rosearch.evaluate.smoothed import example_logits
from rosearch.data.predictions import logits_accuracy
from rosearch.prepare.search_inputs import SearchInputs
from rosearch.files.tokenizer_files import materialize_tokenizer

logger = logging.getLogger(__name__)


def proxy_metrics(model: torch.nn.Module, inputs: SearchInputs, *, batch_size: int, device: torch.device | str,
                  defenses: tuple[str, ...] = ()) -> dict[str, Any]:
    """``proxy_robust_accuracy`` on the run's adversarial proxy set (empty when the run has none),
    as a student carrying ``defenses`` sees it; ``batch_size`` is ``distill.eval_batch_size``."""
    copies = inputs.copies(defenses)  # a smoothed student's proxy split holds each example's copies
    inputs = inputs.for_defenses(defenses)
    if inputs.proxy is None:
        return {}
    if len(inputs.proxy) == 0:  # the teacher resisted every attack: no adversarial example to score on
        return {"proxy_robust_accuracy": float("nan"), "proxy_examples": 0}
    logits, labels = example_logits(model, inputs.proxy, batch_size=batch_size, device=device, copies=copies)
    return {"proxy_robust_accuracy": logits_accuracy(logits, labels), "proxy_examples": len(labels)}


def full_attack_metrics(
    model: torch.nn.Module, inputs: SearchInputs, attack: AttackConfig, data: DataConfig, *, cache_dir: str,
    device: torch.device | str, name: str, recipes: tuple[str, ...] | None = None, defenses: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Attack ``model`` behind its input ``defenses`` (black-box: every query passes them) with each
    recipe of the panel on the run's seeded sample; flat metrics for the store.

    The ``attack`` section says how to attack, the ``data`` section how the texts are tokenised (task
    columns, max length); ``cache_dir`` is ``run.cache_dir``, where the attack's resources live.

    ``recipes`` defaults to the whole panel (:func:`~rosearch.config.attack_panel`); see
    :func:`panel_metrics` for the keys.
    """
    tokenizer = materialize_tokenizer(inputs.tokenizer_files)
    per_recipe: dict[str, dict[str, float]] = {}
    defense = inputs.defense(defenses)
    for recipe in recipes or attack_panel(attack):
        report = attack_model(
            model, tokenizer, inputs.attack_examples, attack, recipe=recipe, cache_dir=cache_dir,
            model_name=name, max_length=data.max_length, device=device,
            text_columns=task_spec(data).text_columns, defense=defense,
        )
        per_recipe[recipe] = report.metrics()
    return recipe_metrics(per_recipe)


RECIPE_KEYS = {  # attack report key -> the per-recipe key stored as attack.<recipe>.<key>
    "robust_accuracy": "accuracy_under_attack", "attack_success_rate": "success_rate", "attack_queries": "queries",
    "attack_seconds": "seconds", "perturbed_word_pct": "perturbed_word_pct", "attack_skipped": "skipped",
    "attack_successful": "successful", "attack_failed": "failed",
}


def recipe_key(recipe: str, key: str = "accuracy_under_attack") -> str:
    """The flat store key of one recipe's figure, e.g. ``attack.pwws.accuracy_under_attack``."""
    return f"attack.{recipe}.{key}"


def recipe_metrics(per_recipe: dict[str, dict[str, float]]) -> dict[str, float]:
    """Flat keys for each recipe's report, ``attack.<recipe>.*``."""
    out: dict[str, float] = {}
    for recipe, metrics in per_recipe.items():
        for source, target in RECIPE_KEYS.items():
            out[recipe_key(recipe, target)] = metrics[source]
        out["clean_accuracy_attacked_sample"] = metrics["clean_accuracy_attacked_sample"]  # one sample for all
        out["attack_examples"] = metrics["attack_examples"]
    return out


def panel_metrics(metrics: dict[str, Any], panel: tuple[str, ...], aggregate: str = "mean") -> dict[str, float]:
    """The panel's summary keys from its per-recipe keys; empty unless every recipe of ``panel`` is in ``metrics``.

    ``robust_accuracy`` (the fitness' figure) is the mean (``aggregate="mean"``) or the lowest
    (``"min"``) accuracy under attack over the panel; ``attack_success_rate``/``attack_queries`` are
    means, ``attack_seconds`` the sum: with one recipe they are exactly its figures (its example
    counts included).
    """
    if aggregate not in ("mean", "min"):
        raise ValueError(f"attack.panel_aggregate must be mean or min, got {aggregate!r}")
    if not panel or any(metrics.get(recipe_key(r)) is None for r in panel):
        return {}

    def mean(key: str) -> float:
        return sum(float(metrics[recipe_key(r, key)]) for r in panel) / len(panel)

    counts = {f"attack_{key}": float(metrics[recipe_key(panel[0], key)]) for key in ("successful", "failed", "skipped")
              if len(panel) == 1 and recipe_key(panel[0], key) in metrics}
    return counts | {
        "robust_accuracy": mean("accuracy_under_attack") if aggregate == "mean"
        else min(float(metrics[recipe_key(r)]) for r in panel),
        "attack_success_rate": mean("success_rate"),
        "attack_queries": mean("queries"), "perturbed_word_pct": mean("perturbed_word_pct"),
        "attack_seconds": sum(float(metrics[recipe_key(r, "seconds")]) for r in panel),
        "attack_recipes": len(panel),
    }
