"""Asynchronous strategies: aging (regularized) evolution, random search and successive halving,
one proposal per free worker.

The generational loop (:mod:`rosearch.evolution.loop`) waits for the slowest candidate of every
generation; on a cluster whose candidates differ several-fold in cost, workers idle. Here a new
proposal is made the moment a result arrives (Real et al. 2019, "Regularized Evolution"): a
tournament over the live population picks a parent, its child is submitted, and the oldest
member leaves the population once it holds ``mu`` members. Random search is the same loop
proposing fresh random genomes only: the honest baseline at the same evaluation budget.

Successive halving (ASHA; Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning")
is the same loop over a *fidelity*, the KD step budget: rungs of ``max_steps / eta^k`` steps
(k = R-1..0). Whenever a worker frees, the highest rung that has a result in its top ``1/eta`` not
yet promoted promotes it (the genome is retrained from scratch at ``eta`` times the steps), else a
new random genome starts at the lowest rung. Promotions compare results of one rung only, so at one
budget; the population and hall of fame hold full-budget results only (the population falls back to
the highest rung reached while the top rung is empty). Its work budget is counted in KD steps: it
proposes until the steps submitted reach ``population_size x generations x max_steps`` (what the
other strategies spend), then drains.

The driver passes a :class:`CandidatePool` (submit proposals, receive results in completion
order, know how many may run at once) and ``checkpoint``. The state is checkpointed after every
completion, and it records the completion order, so a run resumed after ``kill -9`` continues
from exactly the recorded results: in-flight proposals are submitted again (the driver answers
those it already finished from its store, in their original completion order).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Protocol, Sequence

from deap import base, tools

from rosearch.config import EvolutionConfig, SearchSpaceConfig, halving_budgets
from rosearch.evolution.loop import (
    STATE_VERSION,
    EvaluationResultError,
    EvolutionResult,
    Individual,
    ResumeStateError,
    StrategyState,
    _check_weights,
    _individual_dict,
    _tournament,
    sample_unseen,
)
from rosearch.evolution.operators import Proposal, SearchSpaceExhaustedError, make_offspring
from rosearch.search_space.genome import Genome

logger = logging.getLogger(__name__)

ASYNC_STRATEGIES = ("aging", "random", "halving")

__all__ = ["ASYNC_STRATEGIES", "CandidatePool", "evaluation_budget", "evolve_async", "step_budget"]


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


def step_budget(cfg: EvolutionConfig, max_steps: int) -> int:
    """KD steps successive halving may submit: what :func:`evaluation_budget` full-budget evaluations cost."""
    return evaluation_budget(cfg) * max_steps


class _AsyncState(StrategyState):
    """The live population (oldest first), proposals in flight, completion order, RNG; plain JSON."""

    def __init__(self, strategy: str, weights: tuple[float, ...], fitness_cls: type, seed: int, mu: int,
                 budgets: tuple[int, ...] = (), eta: int = 3) -> None:
        super().__init__(weights, fitness_cls, seed, hof_size=mu, pareto=len(weights) > 1)
        self.strategy, self.mu, self.eta = strategy, mu, eta
        self.budgets = budgets  # halving: KD steps of each rung, lowest first; () for aging/random
        self.rungs: list[list[Individual]] = [[] for _ in budgets]  # halving: each rung's results, completion order
        self.promoted: list[set[str]] = [set() for _ in budgets]  # halving: hashes each rung promoted
        self.generation_of: dict[str, int] = {}  # halving: the generation a genome was first proposed in
        self.steps = 0  # halving: KD steps submitted
        # population: aging, the last mu results; random, the best mu so far; halving, the best mu of the top rung reached
        self.in_flight: list[Proposal] = []  # submission order
        self.completed: list[str] = []  # genome hashes in completion order
        self.proposed = 0

    def state_dict(self) -> dict[str, Any]:
        state = {
            **self.common_state(),
            "strategy": self.strategy,
            "in_flight": [_proposal_dict(p) for p in self.in_flight],
            "completed": list(self.completed),
            "proposed": self.proposed,
        }
        if self.budgets:
            state["halving"] = {
                "budgets": list(self.budgets), "steps_submitted": self.steps,
                "rungs": [[_individual_dict(ind) for ind in rung] for rung in self.rungs],
                "promoted": [sorted(hashes) for hashes in self.promoted],
                "generation_of": dict(sorted(self.generation_of.items())),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "strategy" not in state:
            raise ResumeStateError(
                "the checkpoint was not written by an asynchronous (aging/random/halving) run of this rosearch version "
                "(fix: resume with the evolution.strategy and rosearch version that wrote it, or start a new run)"
            )
        if state["strategy"] != self.strategy or tuple(state.get("objective_weights", ())) != self.weights:
            raise ResumeStateError(
                f"checkpoint was written by a {state['strategy']!r} run with objective weights "
                f"{state.get('objective_weights')}, but this run is {self.strategy!r} with {list(self.weights)} "
                "(fix: resume with the original evolution.strategy and fitness settings, or start a new run)"
            )
        try:
            self.load_common_state(state)
            self.in_flight = [_load_proposal(p) for p in state["in_flight"]]
            self.completed = [str(h) for h in state["completed"]]
            self.proposed = int(state["proposed"])
            if self.budgets:
                self._load_halving(state["halving"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeStateError(f"checkpoint state is malformed ({type(exc).__name__}: {exc}); start a new run") from exc

    def _load_halving(self, halving: dict[str, Any]) -> None:
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



def _proposal_dict(proposal: Proposal) -> dict[str, Any]:
    item = {"genome": proposal.genome.to_dict(), "generation": proposal.generation, "parents": list(proposal.parents)}
    if proposal.budget is not None:
        item["budget"] = proposal.budget
    return item


def _load_proposal(item: dict[str, Any]) -> Proposal:
    budget = item.get("budget")
    return Proposal(Genome.from_dict(item["genome"]), int(item["generation"]), tuple(item["parents"]),
                    None if budget is None else int(budget))


def _random_proposal(state: _AsyncState, cfg: EvolutionConfig, space: SearchSpaceConfig, generation: int,
                     param_count: Callable[[Genome], int] | None) -> Proposal:
    genome = sample_unseen(state.rng, space, state.seen, cfg.max_resample, param_count)
    if genome is not None:
        return Proposal(genome=genome, generation=generation, parents=())
    raise SearchSpaceExhaustedError(
        f"could not sample an unseen genome in {cfg.max_resample} draws ({len(state.seen)} seen): the search space "
        "is too small for this budget (fix: widen search_space or lower evolution.generations / population_size)"
    )


def _propose(state: _AsyncState, cfg: EvolutionConfig, space: SearchSpaceConfig,
             param_count: Callable[[Genome], int] | None) -> Proposal:
    """Aging: a random genome for the first ``mu`` proposals (or while no result is in), else a child
    of a tournament winner of the live population. Random search: always a random genome."""
    if state.strategy == "halving":
        return _halving_proposal(state, cfg, space, param_count)
    generation = state.proposed // state.mu
    if state.strategy == "random" or state.proposed < state.mu or not state.population:
        return _random_proposal(state, cfg, space, generation, param_count)
    (child,) = make_offspring(
        state.population, 1, state.rng, space, generation=generation, cxpb=cfg.crossover_prob,
        mutpb=cfg.mutation_prob, select_parents=_tournament(cfg.tournament_size), seen=state.seen,
        max_tries=cfg.max_resample, param_count=param_count,
    )
    return child


def _best_first(state: _AsyncState, members: Sequence[Individual], k: int) -> list[Individual]:
    """The best ``k`` of ``members``: by fitness (ties: completion order), or NSGA-II's rank and crowding."""
    if len(state.weights) == 1:
        return sorted(members, key=lambda ind: ind.fitness.wvalues, reverse=True)[:k]
    return tools.selNSGA2(list(members), k)


def _promotable(state: _AsyncState) -> tuple[int, Individual] | None:
    """ASHA's rule: from the highest rung down, the first result in its rung's top ``1/eta`` not yet promoted."""
    eta = state.eta
    for rung in range(len(state.budgets) - 2, -1, -1):
        members = state.rungs[rung]
        for ind in _best_first(state, members, len(members) // eta):
            if ind.genome_hash not in state.promoted[rung]:
                return rung, ind
    return None


def _halving_proposal(state: _AsyncState, cfg: EvolutionConfig, space: SearchSpaceConfig,
                      param_count: Callable[[Genome], int] | None) -> Proposal:
    """A promotion (retrained from scratch at the next rung's budget), else a new random genome at the lowest rung."""
    found = _promotable(state)
    if found is not None:
        rung, ind = found
        state.promoted[rung].add(ind.genome_hash)
        generation = state.generation_of[ind.genome_hash]
        logger.info("halving: %s promoted from rung %d (%d KD steps, top 1/%d of %d) to %d steps", ind.genome_hash[:12],
                    rung, state.budgets[rung], state.eta, len(state.rungs[rung]), state.budgets[rung + 1])
        return Proposal(genome=ind.genome, generation=generation, parents=(), budget=state.budgets[rung + 1])
    proposal = _random_proposal(state, cfg, space, len(state.generation_of) // state.mu, param_count)
    state.generation_of[proposal.genome.hash()] = proposal.generation
    return dataclasses.replace(proposal, budget=state.budgets[0])


def _admit_halving(state: _AsyncState, ind: Individual, budget: int) -> bool:
    """File a halving result under its rung; the population is the best ``mu`` of the highest rung reached.
    True when the result is at the full budget (only those enter the hall of fame)."""
    rung = state.budgets.index(budget)
    state.rungs[rung].append(ind)
    top = max(k for k, members in enumerate(state.rungs) if members)
    state.population = _best_first(state, state.rungs[top], state.mu)
    return rung == len(state.budgets) - 1


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
    return state.record_row(generation, state.mu, sum(ind.genome_hash in recent for ind in state.population))


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
    max_steps: int | None = None,
) -> EvolutionResult:
    """Run ``strategy`` ("aging", "random" or "halving") for :func:`evaluation_budget` evaluations
    ("halving": for :func:`step_budget` KD steps; ``max_steps``, the full budget, is then required).

    Pseudocode (``mu = cfg.population_size``, ``B = mu x cfg.generations``)::

        population <- []; in_flight <- []
        loop:
            while len(in_flight) < pool.capacity() and proposed < B:
                aging:  first mu proposals random; then child <- make_offspring(tournament(population))
                random: child <- an unseen random genome
                halving: (while steps submitted < max_steps x B) promote the best not-yet-promoted genome of
                         the highest rung's top 1/eta to the next rung's budget, else a random genome at the lowest
                in_flight += child
            checkpoint(state); submit the new proposals
            if in_flight is empty: stop
            key, values <- pool.next_result()          # whichever finishes first
            population += it (aging: drop the oldest past mu; random: keep the best mu;
                              halving: file it under its rung; population = best mu of the highest rung reached)
            hall_of_fame.update; completed += key
            every mu completions: logbook row, on_generation(completions / mu - 1, population)
            checkpoint(state)

    Every proposal is a genome never proposed before in this run. The hall of fame keeps the
    ``mu`` best genomes ever (one objective) or the Pareto front (several; random search only,
    aging needs one fitness to run its tournaments); for halving, of full-budget results only.
    """
    if strategy not in ASYNC_STRATEGIES:
        raise ValueError(f"strategy must be one of {ASYNC_STRATEGIES}, got {strategy!r}")
    weights = _check_weights(objective_weights)
    if strategy == "aging" and len(weights) > 1:
        raise ValueError("aging evolution compares one fitness in its tournaments (fix: evolution.mode=weighted)")
    if space.param_budget is not None and param_count is None:
        raise ValueError("search_space.param_budget is set, so evolve_async needs param_count= to enforce it")
    budgets: tuple[int, ...] = ()
    if strategy == "halving":
        if max_steps is None:
            raise ValueError("successive halving needs max_steps= (distill.max_steps, the full budget)")
        budgets = halving_budgets(max_steps, cfg.halving_eta, cfg.halving_rungs)
        if budgets[0] < 1:
            raise ValueError(f"successive halving's lowest rung has {budgets[0]} KD steps (rungs {list(budgets)})")
    fitness_cls = type("SearchFitness", (base.Fitness,), {"weights": weights})
    mu = cfg.population_size
    state = _AsyncState(strategy, weights, fitness_cls, seed, mu, budgets, cfg.halving_eta)
    budget = evaluation_budget(cfg)
    steps = step_budget(cfg, max_steps) if budgets else 0
    resubmit: list[Proposal] = []
    if resume_state is not None:
        state.load_state_dict(resume_state)
        resubmit = list(state.in_flight)
        logger.info("resuming %s search: %d of %d evaluations done, %d in flight again",
                    strategy, len(state.completed), budget, len(resubmit))

    while True:
        new: list[Proposal] = []
        while len(state.in_flight) < max(1, pool.capacity()) and (state.steps < steps if budgets else state.proposed < budget):
            proposal = _propose(state, cfg, space, param_count)
            state.seen.add(proposal.genome.hash())
            state.in_flight.append(proposal)
            state.proposed += 1
            state.steps += proposal.budget or 0
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
        if budgets:
            if _admit_halving(state, ind, proposal.budget):
                state.hall.update([ind])
        else:
            _admit(state, ind)
            state.hall.update([ind])
        if len(state.completed) % mu == 0:
            generation = len(state.completed) // mu - 1
            row = _record(state, generation)
            done = f"{state.steps}/{steps} KD steps submitted" if budgets else f"{len(state.completed)}/{budget} evaluated"
            logger.info("%s: %s; population best %s, median %s", strategy, done,
                        ", ".join(f"{row[f'obj{k}_max'] if w > 0 else row[f'obj{k}_min']:.4f}" for k, w in enumerate(weights)),
                        ", ".join(f"{row[f'obj{k}_median']:.4f}" for k in range(len(weights))))
            if on_generation is not None:
                on_generation(generation, list(state.population))
        checkpoint(state.state_dict())

    return EvolutionResult(population=list(state.population), hall_of_fame=list(state.hall),
                           logbook=state.logbook, state=state.state_dict())
