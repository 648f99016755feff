"""The generational evolutionary loop (DEAP), with JSON checkpoints for exact resume.

:func:`evolve` is a plain function whose body follows its docstring's pseudocode, as in DEAP's
``algorithms.py``. It knows nothing of Ray or SQLite: the driver passes ``evaluate`` (a batch
of proposals -> fitness values per genome hash; the single seam where parallel evaluation plugs
in) and ``checkpoint`` (persists a plain-JSON state). The state follows NNI's strategies
(``state_dict`` / ``load_state_dict``): a run stopped after any checkpoint and resumed from it
ends with exactly the population, hall of fame and logbook of an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from deap import base, tools
from deap.tools.emo import assignCrowdingDist

from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution.operators import (
    Proposal,
    SearchSpaceExhaustedError,
    SelectParents,
    make_offspring,
)
from rosearch.search_space.genome import Genome
from rosearch.search_space.sampling import sample_genome

logger = logging.getLogger(__name__)

STATE_VERSION = 1
STATS = ("max", "median", "min")

EvaluateProposals = Callable[[list[Proposal]], dict[str, Sequence[float]]]

__all__ = ["EvaluateProposals", "EvolutionResult", "Individual", "Proposal", "ResumeStateError",
           "EvaluationResultError", "evolve"]


class ResumeStateError(ValueError):
    """A checkpoint state cannot be resumed (corrupt, another version, or another mode/weights)."""


class EvaluationResultError(ValueError):
    """The driver's ``evaluate`` returned no, or malformed, values for a proposal."""


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
    hall_of_fame: list[Individual]  # weighted: best first (HallOfFame); nsga2: the Pareto front
    logbook: tools.Logbook  # one row per generation, see :func:`evolve`
    state: dict[str, Any]  # the last checkpoint state (plain JSON)


def _same_genome(a: Individual, b: Individual) -> bool:
    return a.genome_hash == b.genome_hash


# --------------------------------------------------------------------------------------------
# State (NNI-style state_dict / load_state_dict)
# --------------------------------------------------------------------------------------------


class StrategyState:
    """What every strategy's state holds (population, seen hashes, logbook, hall of fame, RNG) and its
    plain-JSON form; :class:`_SearchState` and the asynchronous strategies' state add their own fields."""

    def __init__(self, weights: tuple[float, ...], fitness_cls: type, seed: int, hof_size: int, pareto: bool) -> None:
        self.weights, self.fitness_cls = weights, fitness_cls
        self.population: list[Individual] = []
        self.seen: set[str] = set()  # every hash ever proposed
        self.logbook = tools.Logbook()
        self.logbook.header = ("gen", "evaluated", "new", "reused",
                               *(f"obj{k}_{stat}" for k in range(len(weights)) for stat in STATS))
        self.hall: tools.HallOfFame = (
            tools.ParetoFront(similar=_same_genome) if pareto else tools.HallOfFame(hof_size, similar=_same_genome)
        )
        self.rng = random.Random(seed)

    def individual(self, genome: Genome, values: Sequence[float]) -> Individual:
        fitness = self.fitness_cls()
        fitness.values = tuple(values)
        return Individual(genome, fitness)

    def common_state(self) -> dict[str, Any]:
        """The shared fields as fresh plain JSON (lists, str, numbers, None)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "version": STATE_VERSION,
            "objective_weights": list(self.weights),
            "population": [_individual_dict(ind) for ind in self.population],
            "rng": [version, list(internal), gauss],
            "seen": sorted(self.seen),
            "logbook": [dict(row) for row in self.logbook],
            "hall_of_fame": [_individual_dict(ind) for ind in self.hall],
        }

    def load_common_state(self, state: dict[str, Any]) -> None:
        """Restore the shared fields (KeyError/TypeError/ValueError on a malformed state: the caller words it)."""
        self.population = [self.load_individual(item) for item in state["population"]]
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.seen = set(state["seen"])
        for row in state["logbook"]:
            self.logbook.record(**row)
        # HallOfFame.insert puts an item before equal ones, so re-insert worst first to keep ties in order
        for item in reversed(state["hall_of_fame"]):
            self.hall.insert(self.load_individual(item))

    def load_individual(self, item: dict[str, Any]) -> Individual:
        fitness = self.fitness_cls()
        fitness.wvalues = tuple(float(v) for v in item["wvalues"])  # exact: no divide/multiply round trip
        return Individual(Genome.from_dict(item["genome"]), fitness)

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


class _SearchState(StrategyState):
    """Everything the generational loop needs to continue after a crash, and its plain-JSON form."""

    def __init__(self, mode: str, weights: tuple[float, ...], fitness_cls: type, seed: int, hof_size: int) -> None:
        super().__init__(weights, fitness_cls, seed, hof_size, pareto=mode == "nsga2")
        self.mode = mode
        # phase "evaluating": `planned` are generation `generation`'s proposals, not yet selected;
        # phase "done": generation `generation` is complete (-1: nothing done yet)
        self.generation = -1
        self.phase = "done"
        self.planned: list[Proposal] = []

    def state_dict(self) -> dict[str, Any]:
        """A fresh plain-JSON dict (lists, str, numbers, None): safe to keep after the loop goes on."""
        return {
            **self.common_state(),
            "mode": self.mode,
            "generation": self.generation,
            "phase": self.phase,
            "planned": [
                {"genome": p.genome.to_dict(), "generation": p.generation, "parents": list(p.parents)}
                for p in self.planned
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            found = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ResumeStateError(
                f"checkpoint state version {found!r} is not {STATE_VERSION} (fix: resume with the rosearch version "
                "that wrote it, or start a new run)"
            )
        if state.get("mode") != self.mode or tuple(state.get("objective_weights", ())) != self.weights:
            raise ResumeStateError(
                f"checkpoint was written by a {state.get('mode')!r} run with objective weights "
                f"{state.get('objective_weights')}, but this run is {self.mode!r} with {list(self.weights)} "
                "(fix: resume with the original evolution.mode and fitness settings, or start a new run)"
            )
        if state.get("phase") not in ("evaluating", "done"):
            raise ResumeStateError(
                f"checkpoint phase {state.get('phase')!r} is neither 'evaluating' nor 'done'; start a new run"
            )
        try:
            self.generation = int(state["generation"])
            self.phase = state["phase"]
            self.planned = [
                Proposal(Genome.from_dict(p["genome"]), int(p["generation"]), tuple(p["parents"]))
                for p in state["planned"]
            ]
            self.load_common_state(state)
        except (KeyError, TypeError, ValueError) as exc:  # InvalidGenomeError is a ValueError
            raise ResumeStateError(
                f"checkpoint state is malformed ({type(exc).__name__}: {exc}); start a new run"
            ) from exc


def _individual_dict(ind: Individual) -> dict[str, Any]:
    return {
        "hash": ind.genome_hash,
        "genome": ind.genome.to_dict(),
        "values": list(ind.fitness.values),
        "wvalues": list(ind.fitness.wvalues),
    }


# --------------------------------------------------------------------------------------------
# Steps of the loop
# --------------------------------------------------------------------------------------------


def _check_weights(objective_weights: Sequence[float]) -> tuple[float, ...]:
    weights = tuple(float(w) for w in objective_weights)
    if not weights or any(w == 0 or not math.isfinite(w) for w in weights):
        raise ValueError(
            f"objective_weights must be a non-empty sequence of finite, non-zero numbers (+ maximises, - minimises), "
            f"got {list(objective_weights)}"
        )
    return weights


def sample_unseen(rng: random.Random, space: SearchSpaceConfig, seen: set[str], max_tries: int,
                  param_count: Callable[[Genome], int] | None) -> Genome | None:
    """A random genome whose hash is not in ``seen`` (``max_tries`` draws), or None: the space seems exhausted."""
    for _ in range(max_tries):
        genome = sample_genome(rng, space, param_count=param_count)
        if genome.hash() not in seen:
            return genome
    return None


def _initial_proposals(cfg: EvolutionConfig, space: SearchSpaceConfig, rng: random.Random,
                       param_count: Callable[[Genome], int] | None) -> list[Proposal]:
    """``cfg.population_size`` random genomes with distinct hashes (generation 0)."""
    proposals: list[Proposal] = []
    taken: set[str] = set()
    for _ in range(cfg.population_size):
        genome = sample_unseen(rng, space, taken, cfg.max_resample, param_count)
        if genome is not None:
            taken.add(genome.hash())
            proposals.append(Proposal(genome=genome, generation=0, parents=()))
        else:
            raise SearchSpaceExhaustedError(
                f"could not sample {cfg.population_size} distinct genomes ({len(taken)} found in "
                f"{cfg.max_resample} draws for the next one): the search space is too small for "
                "evolution.population_size (fix: widen search_space or lower evolution.population_size)"
            )
    return proposals


def _evaluate(state: _SearchState, evaluate: EvaluateProposals, planned: list[Proposal]) -> list[Individual]:
    """Ask the driver for the values of ``planned``; one new individual per proposal, in order."""
    values = evaluate(list(planned))
    offspring = []
    for proposal in planned:
        key = proposal.genome.hash()
        if key not in values:
            raise EvaluationResultError(
                f"evaluate returned no values for proposal {key} (fix: the driver must return values for every "
                "proposal, its worst values for a failed candidate)"
            )
        vals = tuple(float(v) for v in values[key])
        if len(vals) != len(state.weights) or not all(math.isfinite(v) for v in vals):
            raise EvaluationResultError(
                f"evaluate returned {list(values[key])} for proposal {key}; expected {len(state.weights)} finite "
                f"number(s), one per objective weight {list(state.weights)}"
            )
        offspring.append(state.individual(proposal.genome, vals))
    return offspring


def _tournament(tournsize: int) -> SelectParents:
    """DEAP's ``selTournament`` (best of ``tournsize`` random aspirants), on the given ``rng``."""

    def select(population: Sequence[Individual], k: int, rng: random.Random) -> list[Individual]:
        return [tools.selBest([rng.choice(population) for _ in range(tournsize)], 1)[0] for _ in range(k)]

    return select


def _crowded_tournament(population: Sequence[Individual], tournsize: int) -> SelectParents:
    """NSGA-II's crowded-comparison tournament: lower Pareto rank wins, then larger crowding distance.

    With ``tournsize=2`` it is NSGA-II's binary tournament. DEAP's ``selTournamentDCD`` is not
    used because it draws from the global ``random`` module and needs ``len % 4 == 0``.
    """
    rank_key: dict[str, tuple[int, float]] = {}
    for rank, front in enumerate(tools.sortNondominated(population, len(population))):
        assignCrowdingDist(front)
        for ind in front:
            rank_key[ind.genome_hash] = (-rank, ind.fitness.crowding_dist)

    def select(pool: Sequence[Individual], k: int, rng: random.Random) -> list[Individual]:
        chosen = []
        for _ in range(k):
            aspirants = [rng.choice(pool) for _ in range(tournsize)]
            chosen.append(max(aspirants, key=lambda ind: rank_key[ind.genome_hash]))
        return chosen

    return select


def _survivors(cfg: EvolutionConfig, population: list[Individual], offspring: list[Individual]) -> list[Individual]:
    if cfg.mode == "nsga2":  # (mu + lambda): the best fronts of parents and children, by crowding
        return tools.selNSGA2(population + offspring, cfg.population_size)
    # weighted, (mu, lambda) with elitism: the elites of the parents, the rest the best children
    elites = tools.selBest(population, cfg.elitism)
    return elites + tools.selBest(offspring, cfg.population_size - len(elites))


def _record(state: _SearchState, population: list[Individual], offspring: list[Individual]) -> dict[str, Any]:
    """Log a generation's row: evaluated count, survivors new vs carried over, stats per objective."""
    new_hashes = {ind.genome_hash for ind in offspring}
    return state.record_row(state.generation, len(offspring), sum(ind.genome_hash in new_hashes for ind in population))


def _log_generation(state: _SearchState, row: dict[str, Any], generations: int) -> None:
    best = [row[f"obj{k}_max"] if w > 0 else row[f"obj{k}_min"] for k, w in enumerate(state.weights)]
    median = [row[f"obj{k}_median"] for k in range(len(state.weights))]
    logger.info(
        "generation %d/%d: best %s, median %s; evaluated %d, population %d new + %d kept",
        state.generation, generations - 1, ", ".join(f"{v:.4f}" for v in best),
        ", ".join(f"{v:.4f}" for v in median), row["evaluated"], row["new"], row["reused"],
    )


# --------------------------------------------------------------------------------------------
# The algorithm
# --------------------------------------------------------------------------------------------


def evolve(
    cfg: EvolutionConfig,
    space: SearchSpaceConfig,
    *,
    seed: int,
    objective_weights: tuple[float, ...],
    evaluate: EvaluateProposals,
    param_count: Callable[[Genome], int] | None,
    checkpoint: Callable[[dict], None],
    resume_state: dict | None = None,
    on_generation: Callable[[int, list[Individual]], None] | None = None,
) -> EvolutionResult:
    """Evolve genomes for ``cfg.generations`` evaluated generations (the random one included).

    ``evaluate`` gets the proposals of one generation and returns, for every genome hash, the
    values compared by selection (one per ``objective_weights`` entry; DEAP sign convention:
    +1 maximises, -1 minimises). Every proposal is a genome never proposed before in this run.
    Pseudocode (``mu = cfg.population_size``)::

        population <- []
        for gen in 0 .. cfg.generations - 1:
            if gen == 0: planned <- mu random genomes with distinct hashes
            else:        planned <- make_offspring(population, mu, parents by tournament)
            checkpoint(phase "evaluating": population, planned, rng, seen)
            offspring <- evaluate(planned)
            if gen == 0:            population <- offspring
            elif mode == "weighted": population <- selBest(population, elitism)
                                                   + selBest(offspring, mu - elitism)
            else (nsga2):            population <- selNSGA2(population + offspring, mu)
            hall_of_fame.update(offspring); logbook.record(stats(population))
            on_generation(gen, population)
            checkpoint(phase "done")

    Parents: weighted mode uses a tournament of ``cfg.tournament_size`` on fitness; nsga2 a
    crowded-comparison tournament of the same size (Pareto rank, then crowding distance).
    Variation is :func:`~rosearch.evolution.operators.make_offspring` (crossover with
    ``cfg.crossover_prob``, mutation with ``cfg.mutation_prob``, forced when not crossed).
    The hall of fame keeps the ``mu`` best genomes ever (weighted) or the Pareto front of all
    evaluated genomes (nsga2). Logbook rows: ``gen``, ``evaluated`` (proposals evaluated),
    ``new`` / ``reused`` (survivors born this generation / carried over), and
    ``obj{k}_max|median|min`` over the population.

    Resume: ``resume_state`` is a state given to ``checkpoint``. From phase "evaluating" the
    same planned proposals are evaluated again (the driver skips those it already finished);
    from "done" the next generation is planned from the restored RNG. ``on_generation`` runs
    before the "done" checkpoint, so after a crash in between it runs again for that
    generation (at least once per generation).
    """
    weights = _check_weights(objective_weights)
    if space.param_budget is not None and param_count is None:
        raise ValueError("search_space.param_budget is set, so evolve needs param_count= to enforce it")
    # A Fitness class per call (not deap.creator.create, which writes into deap's module globals)
    fitness_cls = type("SearchFitness", (base.Fitness,), {"weights": weights})
    state = _SearchState(cfg.mode, weights, fitness_cls, seed, hof_size=cfg.population_size)
    if resume_state is not None:
        state.load_state_dict(resume_state)
        logger.info("resuming from generation %d (%s), %d genomes seen", state.generation, state.phase, len(state.seen))
    gen = state.generation + 1 if state.phase == "done" else state.generation

    while gen < cfg.generations:
        if state.phase == "done":  # plan this generation's proposals
            state.generation, state.phase = gen, "evaluating"
            if gen == 0:
                state.planned = _initial_proposals(cfg, space, state.rng, param_count)
            else:
                select = (_crowded_tournament(state.population, cfg.tournament_size) if cfg.mode == "nsga2"
                          else _tournament(cfg.tournament_size))
                state.planned = make_offspring(
                    state.population, cfg.population_size, state.rng, space, generation=gen,
                    cxpb=cfg.crossover_prob, mutpb=cfg.mutation_prob, select_parents=select,
                    seen=state.seen, max_tries=cfg.max_resample, param_count=param_count,
                )
            state.seen.update(p.genome.hash() for p in state.planned)
            checkpoint(state.state_dict())

        offspring = _evaluate(state, evaluate, state.planned)
        state.population = offspring if gen == 0 else _survivors(cfg, state.population, offspring)
        state.hall.update(offspring)
        row = _record(state, state.population, offspring)
        _log_generation(state, row, cfg.generations)
        if on_generation is not None:
            on_generation(gen, list(state.population))
        state.planned, state.phase = [], "done"
        checkpoint(state.state_dict())
        gen += 1

    return EvolutionResult(population=list(state.population), hall_of_fame=list(state.hall),
                           logbook=state.logbook, state=state.state_dict())
