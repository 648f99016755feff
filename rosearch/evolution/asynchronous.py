"""What the asynchronous strategies share: a new proposal the moment a worker frees, no barrier.

The generational strategy waits for the slowest candidate of every generation; on a cluster whose
candidates differ several-fold in cost, workers idle. An asynchronous strategy proposes whenever the
driver has a free slot, and takes each result as it arrives. It records the completion order, so
a run resumed after ``kill -9`` continues from exactly the recorded results (the driver submits
the in-flight proposals again; the pool answers those it already finished, in their original
completion order). Every ``mu`` completions make one logbook row and one ``on_generation`` call,
so generational and asynchronous runs read alike.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any, Sequence

from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution.operators import Proposal, SearchSpaceExhaustedError, sample_unseen
from rosearch.evolution.strategy import Individual, Strategy, evaluation_budget

logger = logging.getLogger(__name__)


class Asynchronous(Strategy):
    """The shared bookkeeping: proposals made, completion order, one logbook row per ``mu`` results.

    A subclass implements :meth:`next_proposal` (what to try next), :meth:`admit` (what a result
    does to the population and hall of fame) and, when its budget is not ``mu x generations``
    evaluations, :meth:`budget_left`.
    """

    def __init__(self, cfg: EvolutionConfig, space: SearchSpaceConfig, **kwargs: Any) -> None:
        super().__init__(cfg, space, **kwargs)
        self.completed: list[str] = []  # genome hashes in completion order
        self.proposed = 0

    def budget_left(self) -> bool:
        return self.proposed < evaluation_budget(self.cfg)

    @abstractmethod
    def next_proposal(self) -> Proposal:
        """The next genome to evaluate (this strategy's proposal rule)."""

    @abstractmethod
    def admit(self, ind: Individual, proposal: Proposal) -> None:
        """Take an evaluated individual into the population (this strategy's admission rule)."""

    def progress(self) -> str:
        return f"{len(self.completed)}/{evaluation_budget(self.cfg)} evaluated"

    def propose(self) -> Proposal | None:
        if not self.budget_left():
            return None
        proposal = self.start(self.next_proposal())
        self.proposed += 1
        return proposal

    def tell(self, key: str, values: Sequence[float]) -> int | None:
        proposal, vals = self.finish(key, values)
        self.completed.append(key)
        self.admit(self.individual(proposal.genome, vals), proposal)
        if len(self.completed) % self.mu:
            return None
        generation = len(self.completed) // self.mu - 1
        recent = set(self.completed[-self.mu:])
        row = self.record_row(generation, self.mu, sum(ind.genome_hash in recent for ind in self.population))
        best, median = self.best_and_median(row)
        logger.info("%s: %s; population best %s, median %s", self.name, self.progress(), best, median)
        return generation

    def random_proposal(self, generation: int) -> Proposal:
        """An unseen random genome."""
        genome = sample_unseen(self.rng, self.space, self.seen, self.cfg.max_resample, self.param_count)
        if genome is not None:
            return Proposal(genome=genome, generation=generation, parents=())
        raise SearchSpaceExhaustedError(
            f"could not sample an unseen genome in {self.cfg.max_resample} draws ({len(self.seen)} seen): the search "
            "space is too small for this budget (fix: widen search_space or lower evolution.generations / "
            "population_size)"
        )

    def extra_state(self) -> dict[str, Any]:
        return {"completed": list(self.completed), "proposed": self.proposed}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.completed = [str(h) for h in state["completed"]]
        self.proposed = int(state["proposed"])
