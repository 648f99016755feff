"""What every search strategy is: an ask/tell object with a plain-JSON state (NNI's strategy, DEAP's bookkeeping).

A strategy is asked for work (:meth:`Strategy.propose`) and told results (:meth:`Strategy.tell`);
it never runs anything itself. :func:`rosearch.evolution.driver.drive` is the one loop that
connects a strategy to a :class:`CandidatePool` (the workers), so a strategy knows nothing of Ray
or SQLite. Its whole state is :meth:`Strategy.state_dict`, plain JSON: the driver checkpoints it
before submitting new proposals and after every result, and a run resumed from any checkpoint
ends exactly like an uninterrupted one (same proposals, same population, same hall of fame).

Adding a strategy: a module in :mod:`rosearch.evolution` with one :class:`Strategy` subclass (its
docstring gives the algorithm as pseudocode), its line in
:data:`rosearch.evolution.registry.STRATEGIES`, and its name in
:data:`rosearch.choices.STRATEGY_NAMES` (what the config validates against).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
import random
import statistics
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, Sequence

from deap import base, tools

from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution.operators import Proposal
from rosearch.search_space.genome import Genome

STATE_VERSION = 2
STATS = ("max", "median", "min")

ParamCount = Callable[[Genome], int]


class ResumeStateError(ValueError):
    """A checkpoint state cannot be resumed (corrupt, another version, or another strategy/weights)."""


class EvaluationResultError(ValueError):
    """The pool returned no, or malformed, values for a proposal."""


class CandidatePool(Protocol):
    """Where proposals run, seen from the driver."""

    def capacity(self) -> int:
        """How many proposals may be in flight now (free workers plus busy ones; at least 1)."""
        ...

    def submit(self, proposal: Proposal) -> None:
        """Start evaluating ``proposal`` (returns at once)."""
        ...

    def next_result(self) -> tuple[str, Sequence[float]]:
        """Block until a submitted proposal finishes; its genome hash and its values (worst ones if it failed)."""
        ...


class Individual:
    """A genome with its DEAP fitness; DEAP's selection and hall-of-fame helpers read ``.fitness``."""

    __slots__ = ("genome", "fitness", "genome_hash")

    def __init__(self, genome: Genome, fitness: base.Fitness) -> None:
        self.genome = genome
        self.fitness = fitness
        self.genome_hash = genome.hash()

    def __repr__(self) -> str:
        return f"Individual({self.genome_hash[:12]}, fitness={self.fitness.values})"


@dataclass(frozen=True)
class EvolutionResult:
    """What a finished (or already finished, when resumed) run hands back."""

    population: list[Individual]  # the final population
    hall_of_fame: list[Individual]  # one objective: the best ever (HallOfFame); several: the Pareto front
    logbook: tools.Logbook  # one row per generation (per population_size results for the asynchronous ones)
    state: dict[str, Any]  # the last checkpoint state (plain JSON)


def evaluation_budget(cfg: EvolutionConfig) -> int:
    """Evaluations a run makes in all: ``population_size x generations`` for every strategy, so they compare."""
    return cfg.population_size * cfg.generations


def check_weights(objective_weights: Sequence[float]) -> tuple[float, ...]:
    weights = tuple(float(w) for w in objective_weights)
    if not weights or any(w == 0 or not math.isfinite(w) for w in weights):
        raise ValueError(
            f"objective_weights must be a non-empty sequence of finite, non-zero numbers (+ maximises, - minimises), "
            f"got {list(objective_weights)}"
        )
    return weights


def _same_genome(a: Individual, b: Individual) -> bool:
    return a.genome_hash == b.genome_hash


def individual_dict(ind: Individual) -> dict[str, Any]:
    return {
        "hash": ind.genome_hash,
        "genome": ind.genome.to_dict(),
        "values": list(ind.fitness.values),
        "wvalues": list(ind.fitness.wvalues),
    }


def proposal_dict(proposal: Proposal) -> dict[str, Any]:
    item = {"genome": proposal.genome.to_dict(), "generation": proposal.generation, "parents": list(proposal.parents)}
    if proposal.budget is not None:
        item["budget"] = proposal.budget
    return item


def load_proposal(item: dict[str, Any]) -> Proposal:
    budget = item.get("budget")
    return Proposal(Genome.from_dict(item["genome"]), int(item["generation"]), tuple(item["parents"]),
                    None if budget is None else int(budget))


class Strategy(ABC):
    """The shared part of every strategy: population, seen hashes, proposals in flight, logbook,
    hall of fame, RNG, and their plain-JSON form. A subclass sets :attr:`name`, implements
    :meth:`propose` and :meth:`tell`, and adds its own fields with :meth:`extra_state` /
    :meth:`load_extra_state`.
    """

    name: ClassVar[str]
    # a barrier every population: the run's per-generation work (top-k full attacks) happens at each one
    barrier: ClassVar[bool] = False

    def __init__(self, cfg: EvolutionConfig, space: SearchSpaceConfig, *, seed: int,
                 objective_weights: Sequence[float], param_count: ParamCount | None,
                 max_steps: int | None = None, pareto: bool | None = None) -> None:
        self.cfg, self.space, self.param_count, self.max_steps = cfg, space, param_count, max_steps
        self.weights = check_weights(objective_weights)
        if space.param_budget is not None and param_count is None:
            raise ValueError(f"search_space.param_budget is set, so the {self.name} strategy needs param_count= "
                             "to enforce it")
        # A Fitness class per strategy (not deap.creator.create, which writes into deap's module globals)
        self.fitness_cls = type("SearchFitness", (base.Fitness,), {"weights": self.weights})
        self.mu = cfg.population_size
        self.budgets: tuple[int, ...] = ()  # KD steps of each fidelity a candidate may train at; (): distill.max_steps
        self.population: list[Individual] = []
        self.seen: set[str] = set()  # every hash ever proposed
        self.in_flight: list[Proposal] = []  # proposed, no result yet; submission order
        self.logbook = tools.Logbook()
        self.logbook.header = ("gen", "evaluated", "new", "reused",
                               *(f"obj{k}_{stat}" for k in range(len(self.weights)) for stat in STATS))
        pareto = len(self.weights) > 1 if pareto is None else pareto
        self.hall: tools.HallOfFame = (
            tools.ParetoFront(similar=_same_genome) if pareto else tools.HallOfFame(self.mu, similar=_same_genome)
        )
        self.rng = random.Random(seed)

    # -- the interface the driver uses --

    @abstractmethod
    def propose(self) -> Proposal | None:
        """The next proposal to submit (now in flight), or None: wait for results, or nothing is left to do."""

    @abstractmethod
    def tell(self, key: str, values: Sequence[float]) -> int | None:
        """Take the result of the in-flight proposal ``key``; the generation whose logbook row it completed, or None."""

    def result(self) -> EvolutionResult:
        return EvolutionResult(population=list(self.population), hall_of_fame=list(self.hall),
                               logbook=self.logbook, state=self.state_dict())

    # -- shared steps --

    def individual(self, genome: Genome, values: Sequence[float]) -> Individual:
        fitness = self.fitness_cls()
        fitness.values = tuple(values)
        return Individual(genome, fitness)

    def start(self, proposal: Proposal) -> Proposal:
        """Mark ``proposal`` as proposed and in flight; return it."""
        self.seen.add(proposal.genome.hash())
        self.in_flight.append(proposal)
        return proposal

    def finish(self, key: str, values: Sequence[float]) -> tuple[Proposal, tuple[float, ...]]:
        """Take ``key`` out of flight; its proposal and its checked values."""
        index = next((i for i, p in enumerate(self.in_flight) if p.genome.hash() == key), None)
        if index is None:
            raise EvaluationResultError(f"the pool returned a result for {key}, which is not in flight")
        vals = tuple(float(v) for v in values)
        if len(vals) != len(self.weights) or not all(math.isfinite(v) for v in vals):
            raise EvaluationResultError(
                f"the pool returned {list(values)} for proposal {key}; expected {len(self.weights)} finite "
                f"number(s), one per objective weight {list(self.weights)}"
            )
        return self.in_flight.pop(index), vals

    def record_row(self, generation: int, evaluated: int, new: int) -> dict[str, Any]:
        """Log a row: evaluated count, population members new vs carried over, stats per objective."""
        row: dict[str, Any] = {"gen": generation, "evaluated": evaluated, "new": new,
                               "reused": len(self.population) - new}
        for k in range(len(self.weights)):
            column = [float(ind.fitness.values[k]) for ind in self.population]
            stats = {"max": max(column), "median": float(statistics.median(column)), "min": min(column)}
            row.update({f"obj{k}_{stat}": stats[stat] for stat in STATS})
        self.logbook.record(**row)
        return row

    def best_and_median(self, row: dict[str, Any]) -> tuple[str, str]:
        """A logbook row's best and median per objective, formatted for a log line."""
        best = [row[f"obj{k}_max"] if w > 0 else row[f"obj{k}_min"] for k, w in enumerate(self.weights)]
        median = [row[f"obj{k}_median"] for k in range(len(self.weights))]
        return ", ".join(f"{v:.4f}" for v in best), ", ".join(f"{v:.4f}" for v in median)

    # -- state (NNI-style state_dict / load_state_dict) --

    def extra_state(self) -> dict[str, Any]:
        """The subclass's own fields, as fresh plain JSON."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the subclass's own fields (KeyError/TypeError/ValueError on a malformed state)."""

    def check_same_run(self, state: dict[str, Any]) -> None:
        """Raise :class:`ResumeStateError` when ``state`` (of this strategy) was written with other settings."""

    def state_dict(self) -> dict[str, Any]:
        """A fresh plain-JSON dict (lists, str, numbers, None): safe to keep after the run goes on."""
        version, internal, gauss = self.rng.getstate()
        return {
            "version": STATE_VERSION,
            "strategy": self.name,
            "objective_weights": list(self.weights),
            "population": [individual_dict(ind) for ind in self.population],
            "rng": [version, list(internal), gauss],
            "seen": sorted(self.seen),
            "in_flight": [proposal_dict(p) for p in self.in_flight],
            "logbook": [dict(row) for row in self.logbook],
            "hall_of_fame": [individual_dict(ind) for ind in self.hall],
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            found = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ResumeStateError(
                f"checkpoint state version {found!r} is not {STATE_VERSION} (fix: resume with the rosearch version "
                "that wrote it, or start a new run)"
            )
        if state.get("strategy") == self.name:
            self.check_same_run(state)
        if state.get("strategy") != self.name or tuple(state.get("objective_weights", ())) != self.weights:
            raise ResumeStateError(
                f"checkpoint was written by a {state.get('strategy')!r} run with objective weights "
                f"{state.get('objective_weights')}, but this run is {self.name!r} with {list(self.weights)} "
                "(fix: resume with the original evolution.strategy and fitness settings, or start a new run)"
            )
        try:
            self.population = [self.load_individual(item) for item in state["population"]]
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))
            self.seen = set(state["seen"])
            self.in_flight = [load_proposal(p) for p in state["in_flight"]]
            for row in state["logbook"]:
                self.logbook.record(**row)
            # HallOfFame.insert puts an item before equal ones, so re-insert worst first to keep ties in order
            for item in reversed(state["hall_of_fame"]):
                self.hall.insert(self.load_individual(item))
            self.load_extra_state(state)
        except (KeyError, TypeError, ValueError) as exc:  # InvalidGenomeError is a ValueError
            if isinstance(exc, ResumeStateError):
                raise
            raise ResumeStateError(f"checkpoint state is malformed ({type(exc).__name__}: {exc}); start a new run") from exc

    def load_individual(self, item: dict[str, Any]) -> Individual:
        fitness = self.fitness_cls()
        fitness.wvalues = tuple(float(v) for v in item["wvalues"])  # exact: no divide/multiply round trip
        return Individual(Genome.from_dict(item["genome"]), fitness)
