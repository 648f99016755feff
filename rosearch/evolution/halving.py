"""Asynchronous successive halving over the KD step budget (ASHA; Li et al. 2020, "A System for Massively
Parallel Hyperparameter Tuning")."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from rosearch.config import EvolutionConfig, SearchSpaceConfig, halving_budgets
from rosearch.evolution.asynchronous import Asynchronous
from rosearch.evolution.operators import Proposal
from rosearch.evolution.selection import best_first
from rosearch.evolution.strategy import Individual, ResumeStateError, individual_dict

logger = logging.getLogger(__name__)


def step_budget(cfg: EvolutionConfig, max_steps: int) -> int:
    """KD steps successive halving may submit: what ``population_size x generations`` full-budget evaluations cost."""
    return cfg.population_size * cfg.generations * max_steps


class Halving(Asynchronous):
    """Random genomes start at the lowest rung; the best of a rung are retrained at ``eta`` times the steps.

    Rungs are budgets of ``max_steps / eta^k`` KD steps (k = R-1..0). Pseudocode (``mu =
    cfg.population_size``, ``S = mu x cfg.generations x max_steps``, what the other strategies spend)::

        rungs <- R empty lists
        propose (while the KD steps submitted are fewer than S):
            from the highest rung down, the first result in its rung's top 1/eta not yet promoted:
                promote it (retrained from scratch at the next rung's budget)
            else: an unseen random genome at the lowest rung's budget
        tell(result at budget b):
            rungs[b] += result
            population <- the best mu of the highest rung that has results
            if b is the full budget: hall_of_fame.update(result)

    Promotions compare results of one rung only, so at one budget; the hall of fame holds
    full-budget results only.
    """

    name = "halving"

    def __init__(self, cfg: EvolutionConfig, space: SearchSpaceConfig, **kwargs: Any) -> None:
        super().__init__(cfg, space, **kwargs)
        if self.max_steps is None:
            raise ValueError("successive halving needs max_steps= (distill.max_steps, the full budget)")
        self.budgets = halving_budgets(self.max_steps, cfg.halving_eta, cfg.halving_rungs)
        if self.budgets[0] < 1:
            raise ValueError(f"successive halving's lowest rung has {self.budgets[0]} KD steps (rungs {list(self.budgets)})")
        self.eta = cfg.halving_eta
        self.rungs: list[list[Individual]] = [[] for _ in self.budgets]  # each rung's results, completion order
        self.promoted: list[set[str]] = [set() for _ in self.budgets]  # hashes each rung promoted
        self.generation_of: dict[str, int] = {}  # the generation a genome was first proposed in
        self.steps = 0  # KD steps submitted

    def budget_left(self) -> bool:
        return self.steps < step_budget(self.cfg, self.max_steps)

    def progress(self) -> str:
        return f"{self.steps}/{step_budget(self.cfg, self.max_steps)} KD steps submitted"

    def propose(self) -> Proposal | None:
        proposal = super().propose()
        if proposal is not None:
            self.steps += proposal.budget
        return proposal

    def next_proposal(self) -> Proposal:
        """A promotion (retrained from scratch at the next rung's budget), else a new random genome at the lowest rung."""
        found = self._promotable()
        if found is not None:
            rung, ind = found
            self.promoted[rung].add(ind.genome_hash)
            generation = self.generation_of[ind.genome_hash]
            logger.info("halving: %s promoted from rung %d (%d KD steps, top 1/%d of %d) to %d steps",
                        ind.genome_hash[:12], rung, self.budgets[rung], self.eta, len(self.rungs[rung]),
                        self.budgets[rung + 1])
            return Proposal(genome=ind.genome, generation=generation, parents=(), budget=self.budgets[rung + 1])
        proposal = self.random_proposal(len(self.generation_of) // self.mu)
        self.generation_of[proposal.genome.hash()] = proposal.generation
        return dataclasses.replace(proposal, budget=self.budgets[0])

    def _promotable(self) -> tuple[int, Individual] | None:
        """ASHA's rule: from the highest rung down, the first result in its rung's top ``1/eta`` not yet promoted."""
        for rung in range(len(self.budgets) - 2, -1, -1):
            members = self.rungs[rung]
            for ind in best_first(members, len(members) // self.eta, len(self.weights)):
                if ind.genome_hash not in self.promoted[rung]:
                    return rung, ind
        return None

    def admit(self, ind: Individual, proposal: Proposal) -> None:
        rung = self.budgets.index(proposal.budget)
        self.rungs[rung].append(ind)
        top = max(k for k, members in enumerate(self.rungs) if members)
        self.population = best_first(self.rungs[top], self.mu, len(self.weights))
        if rung == len(self.budgets) - 1:
            self.hall.update([ind])

    def extra_state(self) -> dict[str, Any]:
        return {
            **super().extra_state(),
            "halving": {
                "budgets": list(self.budgets), "steps_submitted": self.steps,
                "rungs": [[individual_dict(ind) for ind in rung] for rung in self.rungs],
                "promoted": [sorted(hashes) for hashes in self.promoted],
                "generation_of": dict(sorted(self.generation_of.items())),
            },
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        halving = state["halving"]
        if tuple(halving["budgets"]) != self.budgets:
            raise ResumeStateError(
                f"checkpoint was written with successive-halving rungs of {halving['budgets']} KD steps, but this run's "
                f"are {list(self.budgets)} (fix: resume with the original distill.max_steps, evolution.halving_eta "
                "and evolution.halving_rungs, or start a new run)"
            )
        self.steps = int(halving["steps_submitted"])
        self.rungs = [[self.load_individual(item) for item in rung] for rung in halving["rungs"]]
        self.promoted = [set(hashes) for hashes in halving["promoted"]]
        self.generation_of = {str(k): int(v) for k, v in halving["generation_of"].items()}
