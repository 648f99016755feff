"""Parent selection and survival with DEAP's tools, on an explicit seeded ``random.Random``."""

from __future__ import annotations

import random
from typing import Protocol, Sequence

from deap import tools
from deap.tools.emo import assignCrowdingDist

from rosearch.evolution.operators import SelectParents


class Ranked(Protocol):
    """What selection reads of a population member: its DEAP fitness and its genome hash."""

    fitness: object
    genome_hash: str


def tournament(tournsize: int) -> SelectParents:
    """DEAP's ``selTournament`` (best of ``tournsize`` random aspirants), on the given ``rng``."""

    def select(population: Sequence[Ranked], k: int, rng: random.Random) -> list[Ranked]:
        return [tools.selBest([rng.choice(population) for _ in range(tournsize)], 1)[0] for _ in range(k)]

    return select


def crowded_tournament(population: Sequence[Ranked], tournsize: int) -> SelectParents:
    """NSGA-II's crowded-comparison tournament: lower Pareto rank wins, then larger crowding distance.

    With ``tournsize=2`` it is NSGA-II's binary tournament. DEAP's ``selTournamentDCD`` is not
    used because it draws from the global ``random`` module and needs ``len % 4 == 0``.
    """
    rank_key: dict[str, tuple[int, float]] = {}
    for rank, front in enumerate(tools.sortNondominated(population, len(population))):
        assignCrowdingDist(front)
        for ind in front:
            rank_key[ind.genome_hash] = (-rank, ind.fitness.crowding_dist)

    def select(pool: Sequence[Ranked], k: int, rng: random.Random) -> list[Ranked]:
        chosen = []
        for _ in range(k):
            aspirants = [rng.choice(pool) for _ in range(tournsize)]
            chosen.append(max(aspirants, key=lambda ind: rank_key[ind.genome_hash]))
        return chosen

    return select


def best_first(members: Sequence[Ranked], k: int, objectives: int) -> list:
    """The best ``k`` of ``members``: by fitness (one objective; ties keep their order), else NSGA-II's rank and crowding."""
    if objectives == 1:
        return sorted(members, key=lambda ind: ind.fitness.wvalues, reverse=True)[:k]
    return tools.selNSGA2(list(members), k)
