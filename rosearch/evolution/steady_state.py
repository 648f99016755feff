"""Asynchronous strategies: aging (regularized) evolution and random search, one child per free worker.

The generational loop (:mod:`rosearch.evolution.loop`) waits for the slowest candidate of every
generation; on a cluster whose candidates differ several-fold in cost, workers idle. Here a new
proposal is made the moment a result arrives (Real et al. 2019, "Regularized Evolution"): a
tournament over the live population picks a parent, its child is submitted, and the oldest
member leaves the population once it holds ``mu`` members. Random search is the same loop
proposing fresh random genomes only: the honest baseline at the same evaluation budget.

The driver passes a :class:`CandidatePool` (submit proposals, receive results in completion
order, know how many may run at once) and ``checkpoint``. The state is checkpointed after every
completion, and it records the completion order, so a run resumed after ``kill -9`` continues
from exactly the recorded results: in-flight proposals are submitted again (the driver answers
those it already finished from its store, in their original completion order).
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from typing import Any, Callable, Protocol, Sequence

from deap import base, tools

from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution.loop import (
    STATS,
    EvaluationResultError,
    EvolutionResult,
    Individual,
    ResumeStateError,
    _check_weights,
    _individual_dict,
    _same_genome,
    _tournament,
)
from rosearch.evolution.operators import Proposal, SearchSpaceExhaustedError, make_offspring
from rosearch.search_space.genome import Genome
from rosearch.search_space.sampling import sample_genome

logger = logging.getLogger(__name__)

STATE_VERSION = 1
ASYNC_STRATEGIES = ("aging", "random")

__all__ = ["ASYNC_STRATEGIES", "CandidatePool", "evaluation_budget", "evolve_async"]


class CandidatePool(Protocol):
    """Where proposals run, seen from an asynchronous strategy."""

    def capacity(self) -> int:
        """How many proposals may be in flight now (free workers plus busy ones; at least 1)."""
        ...

    def submit(self, proposal: Proposal) -> None:
        """Start evaluating ``proposal`` (returns at once)."""
        ...

    def next_result(self) -> tuple[str, Sequence[float]]:
        """Block until a submitted proposal finishes; its genome hash and its values (worst ones if it failed)."""
        ...


def evaluation_budget(cfg: EvolutionConfig) -> int:
    """Evaluations a run makes in all: ``population_size x generations`` for every strategy, so they compare."""
    return cfg.population_size * cfg.generations


class _AsyncState:
    """The live population (oldest first), proposals in flight, completion order, RNG; plain JSON."""

    def __init__(self, strategy: str, weights: tuple[float, ...], fitness_cls: type, seed: int, mu: int) -> None:
        self.strategy, self.weights, self.fitness_cls, self.mu = strategy, weights, fitness_cls, mu
        self.population: list[Individual] = []  # aging: the last mu results; random: the best mu so far
        self.in_flight: list[Proposal] = []  # submission order
        self.completed: list[str] = []  # genome hashes in completion order
        self.proposed = 0
        self.seen: set[str] = set()
        self.rng = random.Random(seed)
        self.logbook = tools.Logbook()
        self.logbook.header = ("gen", "evaluated", "new", "reused",
                               *(f"obj{k}_{stat}" for k in range(len(weights)) for stat in STATS))
        self.hall: tools.HallOfFame = (
            tools.ParetoFront(similar=_same_genome) if len(weights) > 1 else tools.HallOfFame(mu, similar=_same_genome)
        )

    def individual(self, genome: Genome, values: Sequence[float]) -> Individual:
        fitness = self.fitness_cls()
        fitness.values = tuple(values)
        return Individual(genome, fitness)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "version": STATE_VERSION,
            "strategy": self.strategy,
            "objective_weights": list(self.weights),
            "population": [_individual_dict(ind) for ind in self.population],
            "in_flight": [{"genome": p.genome.to_dict(), "generation": p.generation, "parents": list(p.parents)}
                          for p in self.in_flight],
            "completed": list(self.completed),
            "proposed": self.proposed,
            "rng": [version, list(internal), gauss],
            "seen": sorted(self.seen),
            "logbook": [dict(row) for row in self.logbook],
            "hall_of_fame": [_individual_dict(ind) for ind in self.hall],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "strategy" not in state:
            raise ResumeStateError(
                "the checkpoint was not written by an asynchronous (aging/random) run of this rosearch version "
                "(fix: resume with the evolution.strategy and rosearch version that wrote it, or start a new run)"
            )
        if state["strategy"] != self.strategy or tuple(state.get("objective_weights", ())) != self.weights:
            raise ResumeStateError(
                f"checkpoint was written by a {state['strategy']!r} run with objective weights "
                f"{state.get('objective_weights')}, but this run is {self.strategy!r} with {list(self.weights)} "
                "(fix: resume with the original evolution.strategy and fitness settings, or start a new run)"
            )
        try:
            self.population = [self._load_individual(item) for item in state["population"]]
            self.in_flight = [Proposal(Genome.from_dict(p["genome"]), int(p["generation"]), tuple(p["parents"]))
                              for p in state["in_flight"]]
            self.completed = [str(h) for h in state["completed"]]
            self.proposed = int(state["proposed"])
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))
            self.seen = set(state["seen"])
            for row in state["logbook"]:
                self.logbook.record(**row)
            for item in reversed(state["hall_of_fame"]):  # worst first keeps ties in order (see loop.py)
                self.hall.insert(self._load_individual(item))
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeStateError(f"checkpoint state is malformed ({type(exc).__name__}: {exc}); start a new run") from exc

    def _load_individual(self, item: dict[str, Any]) -> Individual:
        fitness = self.fitness_cls()
        fitness.wvalues = tuple(float(v) for v in item["wvalues"])
        return Individual(Genome.from_dict(item["genome"]), fitness)


def _random_proposal(state: _AsyncState, cfg: EvolutionConfig, space: SearchSpaceConfig, generation: int,
                     param_count: Callable[[Genome], int] | None) -> Proposal:
    for _ in range(cfg.max_resample):
        genome = sample_genome(state.rng, space, param_count=param_count)
        if genome.hash() not in state.seen:
            return Proposal(genome=genome, generation=generation, parents=())
    raise SearchSpaceExhaustedError(
        f"could not sample an unseen genome in {cfg.max_resample} draws ({len(state.seen)} seen): the search space "
        "is too small for this budget (fix: widen search_space or lower evolution.generations / population_size)"
    )


def _propose(state: _AsyncState, cfg: EvolutionConfig, space: SearchSpaceConfig,
             param_count: Callable[[Genome], int] | None) -> Proposal:
    """Aging: a random genome for the first ``mu`` proposals (or while no result is in), else a child
    of a tournament winner of the live population. Random search: always a random genome."""
    generation = state.proposed // state.mu
    if state.strategy == "random" or state.proposed < state.mu or not state.population:
        return _random_proposal(state, cfg, space, generation, param_count)
    (child,) = make_offspring(
        state.population, 1, state.rng, space, generation=generation, cxpb=cfg.crossover_prob,
        mutpb=cfg.mutation_prob, select_parents=_tournament(cfg.tournament_size), seen=state.seen,
        max_tries=cfg.max_resample, param_count=param_count,
    )
    return child


def _admit(state: _AsyncState, ind: Individual) -> None:
    """Aging: the newest joins, the oldest leaves past ``mu``. Random: the population is the best ``mu`` so far."""
    state.population.append(ind)
    if len(state.population) > state.mu:
        if state.strategy == "aging":
            state.population.pop(0)
        else:
            state.population = tools.selBest(state.population, state.mu) if len(state.weights) == 1 else \
                tools.selNSGA2(state.population, state.mu)


def _record(state: _AsyncState, generation: int) -> dict[str, Any]:
    """A logbook row per ``mu`` completions, so generational and asynchronous runs read alike."""
    recent = set(state.completed[-state.mu:])
    new = sum(ind.genome_hash in recent for ind in state.population)
    row: dict[str, Any] = {"gen": generation, "evaluated": state.mu, "new": new, "reused": len(state.population) - new}
    for k in range(len(state.weights)):
        column = [float(ind.fitness.values[k]) for ind in state.population]
        row.update({f"obj{k}_max": max(column), f"obj{k}_median": float(statistics.median(column)),
                    f"obj{k}_min": min(column)})
    state.logbook.record(**row)
    return row


def _check_values(state: _AsyncState, key: str, values: Sequence[float]) -> tuple[float, ...]:
    vals = tuple(float(v) for v in values)
    if len(vals) != len(state.weights) or not all(math.isfinite(v) for v in vals):
        raise EvaluationResultError(
            f"the pool returned {list(values)} for proposal {key}; expected {len(state.weights)} finite "
            f"number(s), one per objective weight {list(state.weights)}"
        )
    return vals


def evolve_async(
    cfg: EvolutionConfig,
    space: SearchSpaceConfig,
    *,
    strategy: str,
    seed: int,
    objective_weights: tuple[float, ...],
    pool: CandidatePool,
    param_count: Callable[[Genome], int] | None,
    checkpoint: Callable[[dict], None],
    resume_state: dict | None = None,
    on_generation: Callable[[int, list[Individual]], None] | None = None,
) -> EvolutionResult:
    """Run ``strategy`` ("aging" or "random") for :func:`evaluation_budget` evaluations.

    Pseudocode (``mu = cfg.population_size``, ``B = mu x cfg.generations``)::

        population <- []; in_flight <- []
        loop:
            while len(in_flight) < pool.capacity() and proposed < B:
                aging:  first mu proposals random; then child <- make_offspring(tournament(population))
                random: child <- an unseen random genome
                in_flight += child
            checkpoint(state); submit the new proposals
            if in_flight is empty: stop
            key, values <- pool.next_result()          # whichever finishes first
            population += it (aging: drop the oldest past mu; random: keep the best mu)
            hall_of_fame.update; completed += key
            every mu completions: logbook row, on_generation(completions / mu - 1, population)
            checkpoint(state)

    Every proposal is a genome never proposed before in this run. The hall of fame keeps the
    ``mu`` best genomes ever (one objective) or the Pareto front (several; random search only,
    aging needs one fitness to run its tournaments).
    """
    if strategy not in ASYNC_STRATEGIES:
        raise ValueError(f"strategy must be one of {ASYNC_STRATEGIES}, got {strategy!r}")
    weights = _check_weights(objective_weights)
    if strategy == "aging" and len(weights) > 1:
        raise ValueError("aging evolution compares one fitness in its tournaments (fix: evolution.mode=weighted)")
    if space.param_budget is not None and param_count is None:
        raise ValueError("search_space.param_budget is set, so evolve_async needs param_count= to enforce it")
    fitness_cls = type("SearchFitness", (base.Fitness,), {"weights": weights})
    mu = cfg.population_size
    state = _AsyncState(strategy, weights, fitness_cls, seed, mu)
    budget = evaluation_budget(cfg)
    resubmit: list[Proposal] = []
    if resume_state is not None:
        state.load_state_dict(resume_state)
        resubmit = list(state.in_flight)
        logger.info("resuming %s search: %d of %d evaluations done, %d in flight again",
                    strategy, len(state.completed), budget, len(resubmit))

    while True:
        new: list[Proposal] = []
        while len(state.in_flight) < max(1, pool.capacity()) and state.proposed < budget:
            proposal = _propose(state, cfg, space, param_count)
            state.seen.add(proposal.genome.hash())
            state.in_flight.append(proposal)
            state.proposed += 1
            new.append(proposal)
        if new:
            checkpoint(state.state_dict())  # before submitting: a crash now re-submits them on resume
        for proposal in resubmit + new:
            pool.submit(proposal)
        resubmit = []
        if not state.in_flight:
            break
        key, values = pool.next_result()
        index = next((i for i, p in enumerate(state.in_flight) if p.genome.hash() == key), None)
        if index is None:
            raise EvaluationResultError(f"the pool returned a result for {key}, which is not in flight")
        proposal = state.in_flight.pop(index)
        ind = state.individual(proposal.genome, _check_values(state, key, values))
        state.completed.append(key)
        _admit(state, ind)
        state.hall.update([ind])
        if len(state.completed) % mu == 0:
            generation = len(state.completed) // mu - 1
            row = _record(state, generation)
            logger.info("%s: %d/%d evaluated; population best %s, median %s", strategy, len(state.completed), budget,
                        ", ".join(f"{row[f'obj{k}_max'] if w > 0 else row[f'obj{k}_min']:.4f}" for k, w in enumerate(weights)),
                        ", ".join(f"{row[f'obj{k}_median']:.4f}" for k in range(len(weights))))
            if on_generation is not None:
                on_generation(generation, list(state.population))
        checkpoint(state.state_dict())

    return EvolutionResult(population=list(state.population), hall_of_fame=list(state.hall),
                           logbook=state.logbook, state=state.state_dict())
