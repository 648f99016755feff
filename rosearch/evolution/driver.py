"""The one loop that runs any search strategy on a pool of workers.

A strategy (:class:`~rosearch.evolution.strategy.Strategy`) decides what to try; the pool
(:class:`~rosearch.evolution.strategy.CandidatePool`) decides where it runs; this loop only moves
proposals from one to the other and results back, and checkpoints the strategy's JSON state.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from rosearch.evolution.strategy import CandidatePool, EvolutionResult, Individual, Strategy

logger = logging.getLogger(__name__)


def drive(
    strategy: Strategy,
    pool: CandidatePool,
    *,
    checkpoint: Callable[[dict[str, Any]], None],
    resume_state: dict[str, Any] | None = None,
    on_generation: Callable[[int, list[Individual]], None] | None = None,
) -> EvolutionResult:
    """Run ``strategy`` until it has nothing left to propose and nothing in flight.

    Pseudocode::

        if resume_state: strategy.load_state_dict(resume_state); resubmit <- strategy.in_flight
        loop:
            new <- []
            while len(strategy.in_flight) < pool.capacity():
                proposal <- strategy.propose()      # None: wait for results (a barrier), or done
                if proposal is None: break
                new += proposal
            if new: checkpoint(strategy.state_dict())   # before submitting: a crash re-submits them
            pool.submit(each of resubmit + new)
            if strategy.in_flight is empty: stop
            key, values <- pool.next_result()         # whichever finishes first
            generation <- strategy.tell(key, values)
            if generation is not None: on_generation(generation, strategy.population)
            checkpoint(strategy.state_dict())

    ``on_generation`` runs before the checkpoint that follows its result, so after a crash in
    between it runs again for that generation (at least once per generation).
    """
    resubmit = []
    if resume_state is not None:
        strategy.load_state_dict(resume_state)
        resubmit = list(strategy.in_flight)
        logger.info("resuming the %s search: %d genomes seen, %d in flight again",
                    strategy.name, len(strategy.seen), len(resubmit))
    while True:
        new = []
        while len(strategy.in_flight) < max(1, pool.capacity()):
            proposal = strategy.propose()
            if proposal is None:
                break
            new.append(proposal)
        if new:
            checkpoint(strategy.state_dict())
        for proposal in resubmit + new:
            pool.submit(proposal)
        resubmit = []
        if not strategy.in_flight:
            break
        key, values = pool.next_result()
        generation = strategy.tell(key, values)
        if generation is not None and on_generation is not None:
            on_generation(generation, list(strategy.population))
        checkpoint(strategy.state_dict())
    return strategy.result()
