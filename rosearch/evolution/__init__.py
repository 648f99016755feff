"""Evolutionary search over genomes: variation operators, the generational DEAP loop, and the
asynchronous strategies (aging evolution, random search, successive halving)."""

from rosearch.evolution.loop import (
    EvaluateProposals,
    EvaluationResultError,
    EvolutionResult,
    Individual,
    ResumeStateError,
    evolve,
)
from rosearch.evolution.steady_state import (
    ASYNC_STRATEGIES,
    CandidatePool,
    evaluation_budget,
    evolve_async,
    step_budget,
)
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
    "step_budget",
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
