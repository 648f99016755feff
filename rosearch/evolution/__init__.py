"""Evolutionary search over genomes: variation operators and the generational DEAP loop."""

from rosearch.evolution.loop import (
    EvaluateProposals,
    EvaluationResultError,
    EvolutionResult,
    Individual,
    ResumeStateError,
    evolve,
)
from rosearch.evolution.operators import (
    Proposal,
    SearchSpaceExhaustedError,
    crossover,
    make_offspring,
    mutate,
)

__all__ = [
    "EvaluateProposals",
    "EvaluationResultError",
    "EvolutionResult",
    "Individual",
    "Proposal",
    "ResumeStateError",
    "SearchSpaceExhaustedError",
    "crossover",
    "evolve",
    "make_offspring",
    "mutate",
]
