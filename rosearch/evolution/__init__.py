"""Evolutionary search over genomes: variation operators, the search strategies behind one
ask/tell interface (generational, aging evolution, random search, successive halving), their
registry, and the one driver loop that runs any of them on a pool of workers."""

from rosearch.evolution.driver import drive
from rosearch.evolution.halving import step_budget
from rosearch.evolution.operators import (
    Proposal,
    SearchSpaceExhaustedError,
    crossover,
    make_offspring,
    mutate,
)
from rosearch.evolution.registry import STRATEGIES, make_strategy
from rosearch.evolution.strategy import (
    CandidatePool,
    EvaluationResultError,
    EvolutionResult,
    Individual,
    ResumeStateError,
    Strategy,
    evaluation_budget,
)

__all__ = [
    "STRATEGIES",
    "CandidatePool",
    "EvaluationResultError",
    "EvolutionResult",
    "Individual",
    "Proposal",
    "ResumeStateError",
    "SearchSpaceExhaustedError",
    "Strategy",
    "crossover",
    "drive",
    "evaluation_budget",
    "make_offspring",
    "make_strategy",
    "mutate",
    "step_budget",
]
