"""Robustness of one candidate: cheap proxy accuracy, and the full TextAttack attack.

The proxy is the accuracy on the teacher's successful adversarial examples (built once per run
by :mod:`rosearch.attack.proxy`): one forward pass, so every candidate gets it. The full attack
queries the student hundreds of times per example, so the search runs it only on the candidates
``attack.full_attack`` selects. Both run inside a worker from the run's shared inputs alone.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from rosearch.config import Config
from rosearch.data import get_task
from rosearch.evaluate.accuracy import accuracy
from rosearch.search_inputs import SearchInputs
from rosearch.tokenizer_files import materialize_tokenizer

logger = logging.getLogger(__name__)


def proxy_metrics(model: torch.nn.Module, inputs: SearchInputs, config: Config, *, device: torch.device | str,
                  defenses: tuple[str, ...] = ()) -> dict[str, Any]:
    """``proxy_robust_accuracy`` on the run's adversarial proxy set (empty when the run has none),
    as a student carrying ``defenses`` sees it."""
    inputs = inputs.for_defenses(defenses)
    if inputs.proxy is None:
        return {}
    if len(inputs.proxy) == 0:  # the teacher resisted every attack: no adversarial example to score on
        return {"proxy_robust_accuracy": float("nan"), "proxy_examples": 0}
    value = accuracy(model, inputs.proxy, batch_size=config.distill.eval_batch_size, device=device)
    return {"proxy_robust_accuracy": value, "proxy_examples": len(inputs.proxy)}


def full_attack_metrics(
    model: torch.nn.Module, inputs: SearchInputs, config: Config, *, device: torch.device | str, name: str,
    defenses: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Attack ``model`` behind its input ``defenses`` with ``attack.recipe`` on the run's seeded dev
    sample (black-box: every query passes the defense); flat metrics for the store."""
    from rosearch.attack.runner import attack_model

    tokenizer = materialize_tokenizer(inputs.tokenizer_files)
    report = attack_model(
        model, tokenizer, inputs.attack_examples, config.attack, cache_dir=config.run.cache_dir, model_name=name,
        max_length=config.data.max_length, device=device, text_columns=get_task(config.data.task).text_columns,
        defense=inputs.defense(defenses),
    )
    return report.metrics()
