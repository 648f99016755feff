"""Successive halving (ASHA) over the KD step budget, on the toy space of test_evolution with a
simulated cluster whose candidates take time in proportion to their step budget.

The simulated pool keys work by (genome, budget), as the driver's store does (a record answers a
submission only at its own budget), and outlives a crashed driver, so a resumed run can be compared
with an uninterrupted one exactly.
"""

from __future__ import annotations

import heapq
import json

import pytest

from rosearch.config import ConfigError, EvolutionConfig, config_from_dict, halving_budgets
from rosearch.evolution import Proposal, ResumeStateError, evolve_async, step_budget
from rosearch.search_space.genome import Genome
from test_evolution import SPACE, score  # the toy space and fitness (tests/ is on sys.path)

MAX_STEPS = 90
HALVING = EvolutionConfig(population_size=6, generations=4, strategy="halving", halving_eta=3, halving_rungs=3)
BUDGETS = halving_budgets(MAX_STEPS, 3, 3)  # (10, 30, 90)


def noisy_score(genome: Genome, budget: int) -> float:
    """The toy fitness, blurred at low budgets (a cheap KD run ranks candidates less reliably)."""
    noise = (int(genome.hash()[4:8], 16) % 1000) / 1000 * 2.0 * (BUDGETS[-1] / budget - 1) / 8
    return score(genome) + noise


class HalvingPool:
    """``capacity`` workers; a task takes budget x (1..3) / 10 time units; results in finish order."""

    def __init__(self, capacity: int = 3) -> None:
        self.workers = capacity
        self.now = 0.0
        self.finish: dict[tuple[str, int], float] = {}
        self.running: list[tuple[float, str, int]] = []
        self.delivered: set[tuple[str, int]] = set()
        self.redeliver: list[tuple[float, str, int]] = []
        self.submitted: list[Proposal] = []
        self.results: list[tuple[str, int, float]] = []  # (hash, budget, value) in delivery order
        self.genomes: dict[str, Genome] = {}
        self.delivered_at_submission: list[int] = []  # len(results) when each proposal was submitted
        self.max_in_flight = 0

    def capacity(self) -> int:
        return self.workers

    def submit(self, proposal: Proposal) -> None:
        key, budget = proposal.genome.hash(), proposal.budget
        assert budget is not None
        self.genomes[key] = proposal.genome
        self.submitted.append(proposal)
        self.delivered_at_submission.append(len(self.results))
        if (key, budget) in self.delivered:
            heapq.heappush(self.redeliver, (self.finish[key, budget], key, budget))
            return
        if (key, budget) in self.finish:
            return
        self.finish[key, budget] = self.now + budget * (1 + int(key[:4], 16) % 3) / 10
        heapq.heappush(self.running, (self.finish[key, budget], key, budget))
        self.max_in_flight = max(self.max_in_flight, len(self.running))

    def next_result(self) -> tuple[str, tuple[float]]:
        queue = self.redeliver if self.redeliver else self.running
        finish, key, budget = heapq.heappop(queue)
        self.now = max(self.now, finish)
        if (key, budget) not in self.delivered:
            self.delivered.add((key, budget))
            self.results.append((key, budget, noisy_score(self.genomes[key], budget)))
        return key, (noisy_score(self.genomes[key], budget),)


def run(cfg: EvolutionConfig, seed: int, pool: HalvingPool | None = None, resume_state: dict | None = None,
        states: list[dict] | None = None, crash_at: int | None = None):
    pool = pool or HalvingPool()
    sink = states if states is not None else []

    def checkpoint(state: dict) -> None:
        if crash_at is not None and len(sink) == crash_at:
            raise RuntimeError("simulated crash")
        sink.append(json.loads(json.dumps(state)))

    result = evolve_async(cfg, SPACE, strategy="halving", seed=seed, objective_weights=(1.0,), pool=pool,
                          param_count=None, checkpoint=checkpoint, resume_state=resume_state, max_steps=MAX_STEPS)
    return result, pool


def test_rungs_are_max_steps_over_powers_of_eta():
    assert BUDGETS == (10, 30, 90)
    assert halving_budgets(500, 3, 3) == (55, 166, 500)
    assert halving_budgets(8, 2, 4) == (1, 2, 4, 8)


def test_promotions_come_only_from_the_top_third_of_their_rung():
    pool = HalvingPool()
    run(HALVING, 0, pool=pool)
    promotions = 0
    for index, proposal in enumerate(pool.submitted):
        if proposal.budget == BUDGETS[0]:
            continue
        lower = BUDGETS[BUDGETS.index(proposal.budget) - 1]
        known = pool.results[:pool.delivered_at_submission[index]]  # the lower rung as the strategy saw it
        rung = sorted(((v, k) for k, b, v in known if b == lower), reverse=True)
        top = {k for _, k in rung[: len(rung) // 3]}
        assert proposal.genome.hash() in top
        promotions += 1
    assert promotions >= 4
    assert all(p.parents == () for p in pool.submitted)  # ASHA samples new genomes at random


def test_the_step_budget_is_respected_and_every_rung_is_reached():
    result, pool = run(HALVING, 1)
    total = step_budget(HALVING, MAX_STEPS)
    spent = sum(p.budget for p in pool.submitted)
    assert total <= spent < total + MAX_STEPS  # stops proposing once the budget is reached
    assert spent - pool.submitted[-1].budget < total
    by_rung = {b: sum(p.budget == b for p in pool.submitted) for b in BUDGETS}
    assert by_rung[BUDGETS[0]] > by_rung[BUDGETS[1]] > by_rung[BUDGETS[2]] >= 2
    assert pool.max_in_flight == pool.workers
    state = result.state
    assert state["in_flight"] == [] and state["halving"]["steps_submitted"] == spent
    assert [len(r) for r in state["halving"]["rungs"]] == [by_rung[b] for b in BUDGETS]
    # a genome is trained at most once per budget, and only promoted genomes reach a higher one
    seen = [(p.genome.hash(), p.budget) for p in pool.submitted]
    assert len(seen) == len(set(seen))


def test_population_and_hall_of_fame_hold_full_budget_results_only():
    result, pool = run(HALVING, 2)
    full = {k for k, b, _ in pool.results if b == BUDGETS[-1]}
    assert {ind.genome_hash for ind in result.hall_of_fame} <= full
    assert {ind.genome_hash for ind in result.population} <= full
    best = max(v for _, b, v in pool.results if b == BUDGETS[-1])
    assert result.hall_of_fame[0].fitness.values[0] == best


def test_resume_after_a_crash_at_any_checkpoint_ends_like_an_uninterrupted_run():
    states: list[dict] = []
    full, _ = run(HALVING, 7, states=states)
    expected = (full.state, [(i.genome_hash, i.fitness.values) for i in full.hall_of_fame])
    for crash_at in range(1, len(states), max(1, len(states) // 10)):  # after submissions and after completions
        pool, partial = HalvingPool(), []
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(HALVING, 7, pool=pool, states=partial, crash_at=crash_at)
        resumed, _ = run(HALVING, 7, pool=pool, resume_state=partial[-1])
        got = (resumed.state, [(i.genome_hash, i.fitness.values) for i in resumed.hall_of_fame])
        assert got == expected, f"resume after checkpoint {crash_at} diverged"


def test_resume_refuses_other_rungs():
    states: list[dict] = []
    run(HALVING, 0, states=states)
    other = EvolutionConfig(population_size=6, generations=4, strategy="halving", halving_eta=2, halving_rungs=3)
    with pytest.raises(ResumeStateError, match="halving_eta"):
        run(other, 0, resume_state=states[5])


def _config(**evolution) -> dict:
    return {"evolution": {"strategy": "halving", **evolution}, "distill": {"max_steps": 90}}


def test_config_validation_names_the_field_and_the_fix():
    config_from_dict(_config())
    with pytest.raises(ConfigError, match="evolution.halving_rungs.*fewer evolution.halving_rungs"):
        config_from_dict(_config(halving_rungs=6))  # 90 / 3^5 < 1 step
    with pytest.raises(ConfigError, match="evolution.halving_eta.*>= 2"):
        config_from_dict(_config(halving_eta=1))
    with pytest.raises(ConfigError, match="evolution.generations.*3 rungs"):
        config_from_dict(_config(population_size=2, generations=1, elitism=0))
    adv = {"methods": ["adv_train"], "adv_train": {"rounds": 2, "every": 20}, "max_steps": 90}
    config_from_dict({"evolution": {"strategy": "random"}, "distill": adv})  # fine at the full budget
    with pytest.raises(ConfigError, match="distill.adv_train.every.*lowest rung trains 10 steps"):
        config_from_dict({"evolution": {"strategy": "halving"}, "distill": adv})


def test_the_dispatcher_reuses_a_stored_candidate_only_at_the_same_budget(tmp_path):
    """A record measured at a low rung is no answer for a higher rung: that one is trained, and the row
    then holds the higher budget's figures with the lower rung's kept under metrics['rungs']."""
    import random

    from rosearch.evaluate.fitness import fitness_spec
    from rosearch.results.store import ResultStore
    from rosearch.search import SearchProgress, _CandidateDispatcher
    from rosearch.search_space.sampling import sample_genome
    from rosearch.workers import InProcessBackend

    config = config_from_dict({"run": {"output_dir": str(tmp_path)}, "evolution": {"strategy": "halving"},
                               "distill": {"max_steps": 90}})
    genome = sample_genome(random.Random(0), config.search_space)
    calls = []

    def fake_evaluate(task, shared):
        calls.append(task.max_steps)
        return {"val_accuracy": task.max_steps / 100, "dev_accuracy": 0.5, "params": 1_000_000, "flops": 10}

    spec = fitness_spec(config, teacher_cost={"params": 20_000_000, "flops": 100})
    store = ResultStore(tmp_path / "r.sqlite")
    pool = _CandidateDispatcher(store, InProcessBackend(fake_evaluate, None), spec, config, SearchProgress(1, 2))
    key = genome.hash()
    for budget in (10, 10, 30):  # the second 10 is answered from the store
        pool.submit(Proposal(genome, 0, (), budget))
        assert pool.next_result()[0] == key
    assert calls == [10, 30] and pool.reused == 1
    record = store.candidate(key)
    assert record.metrics["distill_steps"] == 30 and record.metrics["val_accuracy"] == 0.3
    assert sorted(record.metrics["rungs"]) == ["10", "30"]
    assert record.metrics["rungs"]["10"]["val_accuracy"] == 0.1
    assert record.metrics["rungs"]["30"]["objectives"] == list(record.objectives)
    store.close()


def test_ranking_compares_at_equal_budget_and_old_records_count_as_full():
    from rosearch.results import ranking
    from rosearch.results.store import CandidateRecord

    def rec(name: str, fitness: float, steps: int | None) -> CandidateRecord:
        metrics = {} if steps is None else {"distill_steps": steps}
        return CandidateRecord(genome_hash=name, genome_json="{}", generation=0, parents=(), status="ok",
                               metrics=metrics, fitness=fitness, objectives=(fitness, 1.0), error=None, attempts=1,
                               seconds=1.0, worker="w", finished_at=0.0)

    records = [rec("low", 0.9, 10), rec("full", 0.5, 90), rec("full2", 0.6, 90)]
    assert [r.genome_hash for r in ranking.ranked(records, (1.0, 1.0))] == ["full2", "full", "low"]
    assert ranking.pareto_front(records, (1.0, -1.0)) == ["full2"]
    old = [rec("a", 0.5, None), rec("b", 0.7, None)]  # no budgets recorded (another strategy): order by fitness
    assert [r.genome_hash for r in ranking.ranked(old, (1.0, 1.0))] == ["b", "a"]
    assert [r.genome_hash for r in ranking.ranked([*old, rec("c", 0.9, 90)], (1.0, 1.0))] == ["c", "b", "a"]


def test_tiny_real_halving_search(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    """A real search (in-process) with two rungs of 2 and 6 KD steps: 6 candidates at 2 steps, the best
    third retrained at 6; the store says each figure's budget and the top list holds full-budget ones."""
    from rosearch.results.report import render_report
    from rosearch.results.stats import compute_stats
    from rosearch.results.store import ResultStore
    from rosearch.search import run_search
    from test_search import tiny_search_dict

    config = config_from_dict(tiny_search_dict(
        tmp_path, tiny_sst2_dir, tiny_teacher_dir,
        evolution={"strategy": "halving", "halving_eta": 3, "halving_rungs": 2, "generations": 1}))
    summary = run_search(config)
    with ResultStore(config.run.run_dir / "results.sqlite") as store:
        records = store.candidates()
        state = store.load_checkpoint()
    assert summary.failed == 0 and summary.evaluated == 8  # 6 at the lowest rung + 2 promotions
    assert len(records) == 6 and all(r.status == "ok" for r in records)
    full = [r for r in records if r.metrics["distill_steps"] == 6]
    low = [r for r in records if r.metrics["distill_steps"] == 2]
    assert len(full) == 2 and len(low) == 4
    for r in records:
        assert r.metrics["steps"] == r.metrics["distill_steps"]  # the worker trained at the task's budget
        assert "2" in r.metrics["rungs"] and r.metrics["rungs"]["2"]["objectives"]  # low-rung figures kept
        assert (config.run.run_dir / "candidates" / r.genome_hash / "model.safetensors").is_file()
    for r in full:
        assert sorted(r.metrics["rungs"], key=int) == ["2", "6"] and r.metrics["rungs"]["6"]["objectives"] == list(r.objectives)
    # each promotion came from the top third of the lowest rung as it stood then (the in-process backend
    # runs one task at a time, so the promotion was proposed right after the completion before it)
    low_value = {r.genome_hash: r.metrics["rungs"]["2"]["objectives"][0] for r in records}
    completed = state["completed"]
    for r in full:
        second = len(completed) - 1 - completed[::-1].index(r.genome_hash)
        rung0 = sorted(dict.fromkeys(completed[:second]), key=low_value.get, reverse=True)
        assert r.genome_hash in rung0[: len(rung0) // 3]
    assert {row["hash"] for row in summary.top[:2]} == {r.genome_hash for r in full}
    assert [row["distill_steps"] for row in summary.top] == [6, 6, 2, 2, 2]
    report = compute_stats(config.run.run_dir, top_k=2)
    assert set(report.top["genome_hash"]) == {r.genome_hash for r in full}
    assert list(report.frame["distill_steps"]) == [6, 6, 2, 2, 2, 2]
    html = render_report(config.run.run_dir, top_k=2)
    assert "KD steps" in html and "successive halving" in html
    assert state["halving"]["budgets"] == [2, 6] and state["in_flight"] == []
    best_full = max(full, key=lambda r: r.objectives[0])
    assert (config.run.run_dir / "best_genome.json").read_text() == best_full.genome_json
