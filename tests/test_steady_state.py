"""Aging evolution and random search on the toy space of test_evolution, with a simulated cluster:
candidates finish after a cost that depends on the genome, so results arrive out of order.

The simulated pool outlives a crashed driver, as a store plus a cluster do: a proposal submitted
again after a resume keeps its original finish time (answered at once when it had finished),
which is what lets a resumed run be compared with an uninterrupted one exactly.
"""

from __future__ import annotations

import heapq
import json
import random

import pytest

from rosearch.config import EvolutionConfig
from rosearch.evolution import Proposal, ResumeStateError, drive, evaluation_budget, make_strategy
from rosearch.search_space.genome import Genome
from rosearch.search_space.sampling import sample_genome
from test_evolution import SPACE, score, summary  # the toy space and fitness (tests/ is on sys.path)

AGING = EvolutionConfig(population_size=8, generations=10, tournament_size=3, strategy="aging")
RANDOM = EvolutionConfig(population_size=8, generations=10, strategy="random")


class SimulatedPool:
    """``capacity`` workers; a candidate takes 1-5 time units (from its hash); results in finish order."""

    def __init__(self, capacity: int = 4) -> None:
        self.workers = capacity
        self.now = 0.0
        self.finish: dict[str, float] = {}
        self.running: list[tuple[float, str]] = []  # heap of (finish time, hash)
        self.delivered: set[str] = set()
        self.redeliver: list[tuple[float, str]] = []
        self.submitted: list[str] = []
        self.max_in_flight = 0
        self.genomes: dict[str, Genome] = {}

    def capacity(self) -> int:
        return self.workers

    def submit(self, proposal: Proposal) -> None:
        key = proposal.genome.hash()
        self.genomes[key] = proposal.genome
        self.submitted.append(key)
        if key in self.delivered:  # finished before the crash; the store answers it again
            heapq.heappush(self.redeliver, (self.finish[key], key))
            return
        if key in self.finish:  # still running on the cluster
            return
        self.finish[key] = self.now + 1 + int(key[:4], 16) % 5
        heapq.heappush(self.running, (self.finish[key], key))
        self.max_in_flight = max(self.max_in_flight, len(self.running))

    def next_result(self) -> tuple[str, tuple[float]]:
        queue = self.redeliver if self.redeliver else self.running
        finish, key = heapq.heappop(queue)
        self.now = max(self.now, finish)
        self.delivered.add(key)
        return key, (score(self.genomes[key]),)


def run(cfg: EvolutionConfig, seed: int, pool: SimulatedPool | None = None, resume_state: dict | None = None,
        states: list[dict] | None = None, crash_at: int | None = None, **kwargs):
    pool = pool or SimulatedPool()
    sink = states if states is not None else []

    def checkpoint(state: dict) -> None:
        if crash_at is not None and len(sink) == crash_at:
            raise RuntimeError("simulated crash")
        sink.append(json.loads(json.dumps(state)))

    strategy = make_strategy(cfg, SPACE, seed=seed, objective_weights=(1.0,), param_count=None)
    result = drive(strategy, pool, checkpoint=checkpoint, resume_state=resume_state, **kwargs)
    return result, pool


@pytest.mark.parametrize("cfg", [AGING, RANDOM], ids=["aging", "random"])
def test_budget_is_spent_exactly_with_every_worker_busy_and_no_genome_twice(cfg):
    result, pool = run(cfg, 0)
    budget = evaluation_budget(cfg)
    assert len(pool.submitted) == len(set(pool.submitted)) == budget == len(result.state["completed"])
    assert pool.max_in_flight == pool.workers  # never more, and the workers were filled
    assert len(result.population) == cfg.population_size
    assert [row["gen"] for row in result.logbook] == list(range(cfg.generations))


def test_completion_order_is_recorded_and_differs_from_submission_order():
    result, pool = run(AGING, 1)
    assert result.state["completed"] != pool.submitted  # out of order: costs differ
    assert sorted(result.state["completed"]) == sorted(pool.submitted)


def test_aging_population_is_the_last_mu_results_and_children_have_parents():
    result, pool = run(AGING, 2)
    completed = result.state["completed"]
    assert [ind.genome_hash for ind in result.population] == completed[-AGING.population_size:]
    assert result.state["in_flight"] == [] and result.state["proposed"] == evaluation_budget(AGING)


def test_random_search_proposes_only_parentless_random_genomes():
    proposals: list[Proposal] = []

    class Spy(SimulatedPool):
        def submit(self, proposal: Proposal) -> None:
            proposals.append(proposal)
            super().submit(proposal)

    run(RANDOM, 3, pool=Spy())
    assert proposals and all(p.parents == () for p in proposals)


def test_aging_children_come_from_the_live_population():
    proposals: list[Proposal] = []
    completed_before: list[set[str]] = []

    class Spy(SimulatedPool):
        def submit(self, proposal: Proposal) -> None:
            proposals.append(proposal)
            completed_before.append(set(self.delivered))
            super().submit(proposal)

    run(AGING, 4, pool=Spy())
    assert all(p.parents == () for p in proposals[:AGING.population_size])
    children = [(p, done) for p, done in zip(proposals, completed_before) if p.parents]
    assert len(children) >= evaluation_budget(AGING) - AGING.population_size - 1
    assert all(set(p.parents) <= done for p, done in children)  # parents are finished results


def test_aging_beats_random_search_at_equal_budget_on_the_toy_space():
    aging = [run(AGING, seed)[0].hall_of_fame[0].fitness.values[0] for seed in range(4)]
    rand = [run(RANDOM, seed)[0].hall_of_fame[0].fitness.values[0] for seed in range(4)]
    assert sum(aging) > sum(rand) + 2  # optimum 6.064; random search rarely finds 4+ attention ops
    rng = random.Random(0)  # and random search is what plain sampling gives
    sampled = max(score(sample_genome(rng, SPACE)) for _ in range(evaluation_budget(RANDOM)))
    assert abs(sampled - sum(rand) / 4) < 2


@pytest.mark.parametrize("strategy", ["aging", "random"])
def test_resume_after_a_crash_at_any_checkpoint_ends_like_an_uninterrupted_run(strategy):
    cfg = EvolutionConfig(population_size=6, generations=5, tournament_size=3, strategy=strategy)
    states: list[dict] = []
    full, _ = run(cfg, 7, states=states)
    expected = summary(full)
    for crash_at in range(1, len(states), 5):  # after submissions and after completions
        pool, partial = SimulatedPool(), []
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(cfg, 7, pool=pool, states=partial, crash_at=crash_at)
        resumed, _ = run(cfg, 7, pool=pool, resume_state=partial[-1])
        assert summary(resumed) == expected, f"resume after checkpoint {crash_at} diverged"


def test_resume_refuses_another_strategy_or_a_generational_checkpoint():
    states: list[dict] = []
    run(AGING, 0, states=states)
    with pytest.raises(ResumeStateError, match="'aging' run"):
        run(RANDOM, 0, resume_state=states[3])
    with pytest.raises(ResumeStateError, match="version"):
        run(AGING, 0, resume_state={"version": 1, "mode": "weighted", "phase": "done"})
    generational: list[dict] = []
    run(EvolutionConfig(population_size=8, generations=2), 0, states=generational)
    with pytest.raises(ResumeStateError, match="'generational' run"):
        run(AGING, 0, resume_state=generational[-1])


def test_aging_needs_one_objective():
    with pytest.raises(ValueError, match="evolution.mode=weighted"):
        make_strategy(AGING, SPACE, seed=0, objective_weights=(1.0, -1.0), param_count=None)
