"""The generational evolutionary algorithm (DEAP's ``eaMuCommaLambda`` with elitism, or NSGA-II)."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from deap import tools

from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution.operators import Proposal, SearchSpaceExhaustedError, make_offspring, sample_unseen
from rosearch.evolution.selection import crowded_tournament, tournament
from rosearch.evolution.strategy import Individual, ResumeStateError, Strategy, load_proposal, proposal_dict

logger = logging.getLogger(__name__)


class Generational(Strategy):
    """Evolve genomes for ``cfg.generations`` evaluated generations (the random one included),
    with a barrier every population: generation ``g + 1`` is planned once all of ``g`` is told.

    Pseudocode (``mu = cfg.population_size``)::

        population <- []
        for gen in 0 .. cfg.generations - 1:
            if gen == 0: planned <- mu random genomes with distinct hashes
            else:        planned <- make_offspring(population, mu, parents by tournament)
            propose planned, one by one; wait until every one is told
            offspring <- planned with their values, in planned order
            if gen == 0:            population <- offspring
            elif mode == "weighted": population <- selBest(population, elitism)
                                                   + selBest(offspring, mu - elitism)
            else (nsga2):            population <- selNSGA2(population + offspring, mu)
            hall_of_fame.update(offspring); logbook.record(stats(population))

    Parents: weighted mode uses a tournament of ``cfg.tournament_size`` on fitness; nsga2 a
    crowded-comparison tournament of the same size (Pareto rank, then crowding distance).
    Variation is :func:`~rosearch.evolution.operators.make_offspring` (crossover with
    ``cfg.crossover_prob``, mutation with ``cfg.mutation_prob``, forced when not crossed).
    The hall of fame keeps the ``mu`` best genomes ever (weighted) or the Pareto front of all
    evaluated genomes (nsga2). Logbook rows: ``gen``, ``evaluated`` (proposals evaluated),
    ``new`` / ``reused`` (survivors born this generation / carried over), and
    ``obj{k}_max|median|min`` over the population. Values follow DEAP's sign convention:
    +1 maximises, -1 minimises.
    """

    name = "generational"
    barrier = True

    def __init__(self, cfg: EvolutionConfig, space: SearchSpaceConfig, **kwargs: Any) -> None:
        super().__init__(cfg, space, pareto=cfg.mode == "nsga2", **kwargs)
        self.mode = cfg.mode
        self.generation = -1  # the generation being evaluated, or the last one completed (-1: none yet)
        self.planned: list[Proposal] = []  # this generation's proposals; empty once it is complete
        self.submitted = 0  # how many of ``planned`` were proposed
        self.told: dict[str, list[float]] = {}  # this generation's values so far, by genome hash

    def propose(self) -> Proposal | None:
        if not self.planned:
            if self.generation + 1 >= self.cfg.generations:
                return None
            self._plan(self.generation + 1)
        if self.submitted == len(self.planned):
            return None  # the barrier: wait for this generation's results
        self.submitted += 1
        return self.start(self.planned[self.submitted - 1])

    def _plan(self, gen: int) -> None:
        cfg = self.cfg
        if gen == 0:
            self.planned = self._initial_proposals()
        else:
            select = (crowded_tournament(self.population, cfg.tournament_size) if self.mode == "nsga2"
                      else tournament(cfg.tournament_size))
            self.planned = make_offspring(
                self.population, cfg.population_size, self.rng, self.space, generation=gen,
                cxpb=cfg.crossover_prob, mutpb=cfg.mutation_prob, select_parents=select,
                seen=self.seen, max_tries=cfg.max_resample, param_count=self.param_count,
            )
        self.generation, self.submitted, self.told = gen, 0, {}
        self.seen.update(p.genome.hash() for p in self.planned)

    def _initial_proposals(self) -> list[Proposal]:
        """``cfg.population_size`` random genomes with distinct hashes (generation 0)."""
        cfg, proposals, taken = self.cfg, [], set()
        for _ in range(cfg.population_size):
            genome = sample_unseen(self.rng, self.space, taken, cfg.max_resample, self.param_count)
            if genome is None:
                raise SearchSpaceExhaustedError(
                    f"could not sample {cfg.population_size} distinct genomes ({len(taken)} found in "
                    f"{cfg.max_resample} draws for the next one): the search space is too small for "
                    "evolution.population_size (fix: widen search_space or lower evolution.population_size)"
                )
            taken.add(genome.hash())
            proposals.append(Proposal(genome=genome, generation=0, parents=()))
        return proposals

    def tell(self, key: str, values: Sequence[float]) -> int | None:
        _, vals = self.finish(key, values)
        self.told[key] = list(vals)
        if len(self.told) < len(self.planned) or self.submitted < len(self.planned):
            return None
        offspring = [self.individual(p.genome, self.told[p.genome.hash()]) for p in self.planned]
        self.population = offspring if self.generation == 0 else self._survivors(offspring)
        self.hall.update(offspring)
        new_hashes = {ind.genome_hash for ind in offspring}
        row = self.record_row(self.generation, len(offspring),
                              sum(ind.genome_hash in new_hashes for ind in self.population))
        best, median = self.best_and_median(row)
        logger.info("generation %d/%d: best %s, median %s; evaluated %d, population %d new + %d kept",
                    self.generation, self.cfg.generations - 1, best, median, row["evaluated"], row["new"], row["reused"])
        self.planned, self.submitted, self.told = [], 0, {}
        return self.generation

    def _survivors(self, offspring: list[Individual]) -> list[Individual]:
        if self.mode == "nsga2":  # (mu + lambda): the best fronts of parents and children, by crowding
            return tools.selNSGA2(self.population + offspring, self.cfg.population_size)
        # weighted, (mu, lambda) with elitism: the elites of the parents, the rest the best children
        elites = tools.selBest(self.population, self.cfg.elitism)
        return elites + tools.selBest(offspring, self.cfg.population_size - len(elites))

    def extra_state(self) -> dict[str, Any]:
        return {"mode": self.mode, "generation": self.generation, "planned": [proposal_dict(p) for p in self.planned],
                "submitted": self.submitted, "told": dict(self.told)}

    def check_same_run(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.mode:
            raise ResumeStateError(
                f"checkpoint was written by a {state.get('mode')!r} run, but this run is {self.mode!r} (fix: resume "
                "with the original evolution.mode, or start a new run)"
            )

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.generation = int(state["generation"])
        self.planned = [load_proposal(p) for p in state["planned"]]
        self.submitted = int(state["submitted"])
        self.told = {str(k): [float(v) for v in vals] for k, vals in state["told"].items()}
