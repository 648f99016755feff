"""Aging (regularized) evolution: Real et al. 2019, "Regularized Evolution for Image Classifier Architecture Search"."""

from __future__ import annotations

from typing import Any

from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution.asynchronous import Asynchronous
from rosearch.evolution.operators import Proposal, make_offspring
from rosearch.evolution.selection import tournament
from rosearch.evolution.strategy import Individual


class Aging(Asynchronous):
    """A child of a tournament winner whenever a worker frees; the oldest member leaves past ``mu``.

    Pseudocode (``mu = cfg.population_size``, ``B = mu x cfg.generations``)::

        population <- []                                   # oldest first
        propose (while fewer than B proposed):
            if fewer than mu proposed or population empty: an unseen random genome
            else: child <- make_offspring(population, 1, parents by tournament of cfg.tournament_size)
        tell(result):
            population += result; if len(population) > mu: drop the oldest
            hall_of_fame.update(result)                     # the mu best ever

    Aging needs one fitness: its tournaments compare one value.
    """

    name = "aging"

    def __init__(self, cfg: EvolutionConfig, space: SearchSpaceConfig, **kwargs: Any) -> None:
        super().__init__(cfg, space, **kwargs)
        if len(self.weights) > 1:
            raise ValueError("aging evolution compares one fitness in its tournaments (fix: evolution.mode=weighted)")

    def next_proposal(self) -> Proposal:
        generation = self.proposed // self.mu
        if self.proposed < self.mu or not self.population:
            return self.random_proposal(generation)
        cfg = self.cfg
        (child,) = make_offspring(
            self.population, 1, self.rng, self.space, generation=generation, cxpb=cfg.crossover_prob,
            mutpb=cfg.mutation_prob, select_parents=tournament(cfg.tournament_size), seen=self.seen,
            max_tries=cfg.max_resample, param_count=self.param_count,
        )
        return child

    def admit(self, ind: Individual, proposal: Proposal) -> None:
        self.population.append(ind)
        if len(self.population) > self.mu:
            self.population.pop(0)
        self.hall.update([ind])
