"""Evolutionary search over genomes: variation operators, the generational DEAP loop, and the
asynchronous strategies (aging evolution, random search)."""

from rosearch.evolution.loop import (
    EvaluateProposals,
    EvaluationResultError,
    EvolutionResult,
    Individual,
    ResumeStateError,
    evolve,
)
from rosearch.evolution.steady_state import ASYNC_STRATEGIES, CandidatePool, evaluation_budget, evolve_async
from rosearch.evolution.operators import (
    Proposal,
    SearchSpaceExhaustedError,
    crossover,
    make_offspring,
    mutate,
)

__all__ = [
    "ASYNC_STRATEGIES",
    "CandidatePool",
    "evaluation_budget",
    "evolve_async",
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
