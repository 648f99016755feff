"""Random search: the honest baseline at the same evaluation budget as the other strategies."""

from __future__ import annotations

from deap import tools

from rosearch.evolution.asynchronous import Asynchronous
from rosearch.evolution.operators import Proposal
from rosearch.evolution.strategy import Individual


class RandomSearch(Asynchronous):
    """Fresh random genomes only, one per free worker.

    Pseudocode (``mu = cfg.population_size``, ``B = mu x cfg.generations``)::

        propose (while fewer than B proposed): an unseen random genome
        tell(result):
            population += result; if len(population) > mu: population <- the best mu
                                                             (several objectives: selNSGA2)
            hall_of_fame.update(result)   # the mu best ever, or the Pareto front (several objectives)
    """

    name = "random"

    def next_proposal(self) -> Proposal:
        return self.random_proposal(self.proposed // self.mu)

    def admit(self, ind: Individual, proposal: Proposal) -> None:
        self.population.append(ind)
        if len(self.population) > self.mu:
            self.population = (tools.selBest(self.population, self.mu) if len(self.weights) == 1
                               else tools.selNSGA2(self.population, self.mu))
        self.hall.update([ind])
