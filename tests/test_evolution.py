"""The evolutionary loop on a toy space with analytic fitness (NNI-style sanity tests): it improves,
both modes run, nothing is evaluated twice, and a run resumed from any checkpoint ends exactly
like an uninterrupted one."""

from __future__ import annotations

import json
import random

import pytest

from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution import (
    EvaluationResultError,
    Individual,
    Proposal,
    ResumeStateError,
    SearchSpaceExhaustedError,
    drive,
    make_strategy,
)
from rosearch.search_space import labels
from rosearch.search_space.genome import Genome
from rosearch.search_space.sampling import sample_genome

SPACE = SearchSpaceConfig(hidden_sizes=(32, 64), embedding_sizes=(16, 32), num_layers=(1, 2, 3),
                          nodes_per_cell=4, max_edges=5, op_families=("attn", "conv", "ffn", "identity"),
                          attention_heads=(2, 4), kernel_sizes=(3,), ffn_ratios=(1, 2), activations=("gelu", "relu"))
WEIGHTED = EvolutionConfig(population_size=8, generations=12, tournament_size=3, elitism=2, mode="weighted")
NSGA2 = EvolutionConfig(population_size=8, generations=8, tournament_size=2, mode="nsga2")


def attention_ops(genome: Genome) -> int:
    return sum(labels.parse_op(op).family == "attn" for cell in genome.cells for op in cell.ops[1:-1])


def score(genome: Genome) -> float:
    """Toy fitness to maximise: attention ops, then a larger H (optimum 6.064 in SPACE)."""
    return attention_ops(genome) + genome.hidden_size / 1000


def cost(genome: Genome) -> float:
    """Toy cost to minimise, in conflict with attention_ops (attention ops are the expensive ones)."""
    return genome.hidden_size * (1 + 3 * attention_ops(genome)) + genome.embedding_size + 0.5 * sum(
        cell.num_nodes for cell in genome.cells)


class Evaluator:
    """A pure-Python pool (results in submission order) that remembers every evaluation, grouped by
    generation (and can crash when a given generation starts)."""

    def __init__(self, mode: str, crash_on_call: int | None = None, workers: int = 3) -> None:
        self.mode, self.crash_on_call, self.workers = mode, crash_on_call, workers
        self.calls: list[list[str]] = []  # hashes evaluated, one list per generation
        self.generations: list[int] = []
        self.values: dict[str, tuple[float, ...]] = {}
        self.queue: list[Proposal] = []

    def capacity(self) -> int:
        return self.workers

    def submit(self, proposal: Proposal) -> None:
        self.queue.append(proposal)

    def next_result(self) -> tuple[str, tuple[float, ...]]:
        proposal = self.queue.pop(0)
        if not self.generations or self.generations[-1] != proposal.generation:
            if self.crash_on_call is not None and len(self.calls) == self.crash_on_call:
                raise RuntimeError("simulated crash")
            self.calls.append([])
            self.generations.append(proposal.generation)
        genome = proposal.genome
        key = genome.hash()
        self.calls[-1].append(key)
        values = (float(attention_ops(genome)), cost(genome)) if self.mode == "nsga2" else (score(genome),)
        self.values[key] = values
        return key, values


WEIGHTS = {"weighted": (1.0,), "nsga2": (1.0, -1.0)}


def evolve(cfg: EvolutionConfig, space: SearchSpaceConfig = SPACE, *, seed: int, objective_weights=None,
           evaluate=None, checkpoint=lambda s: None, resume_state: dict | None = None, **kwargs):
    """The generational strategy on ``evaluate`` (a pool), through the driver."""
    strategy = make_strategy(cfg, space, seed=seed, objective_weights=objective_weights or WEIGHTS[cfg.mode],
                             param_count=None)
    return drive(strategy, evaluate or Evaluator(cfg.mode), checkpoint=checkpoint, resume_state=resume_state, **kwargs)


def run(cfg: EvolutionConfig, seed: int, evaluator: Evaluator | None = None, resume_state: dict | None = None,
        states: list[dict] | None = None, **kwargs):
    evaluator = evaluator or Evaluator(cfg.mode)
    sink = states if states is not None else []

    def checkpoint(state: dict) -> None:
        sink.append(json.loads(json.dumps(state)))  # what a store would give back

    result = evolve(cfg, SPACE, seed=seed, objective_weights=WEIGHTS[cfg.mode], evaluate=evaluator,
                    checkpoint=checkpoint, resume_state=resume_state, **kwargs)
    return result, evaluator


def summary(result) -> dict:
    """Everything that must match between an uninterrupted and a resumed run."""
    return {
        "population": [(ind.genome_hash, ind.fitness.values) for ind in result.population],
        "hall_of_fame": [(ind.genome_hash, ind.fitness.values) for ind in result.hall_of_fame],
        "logbook": [dict(row) for row in result.logbook],
        "state": result.state,
    }


def test_weighted_search_beats_its_random_start_and_random_search():
    evolved, sampled = [], []
    for seed in range(4):
        result, evaluator = run(WEIGHTED, seed)
        gen0_best = result.logbook[0]["obj0_max"]
        best = result.hall_of_fame[0].fitness.values[0]
        assert best > gen0_best
        assert best == max(result.logbook.select("obj0_max"))  # elitism: the best is never lost
        assert result.logbook.select("obj0_max") == sorted(result.logbook.select("obj0_max"))
        evolved.append(best)
        n_evals = sum(len(call) for call in evaluator.calls)
        rng = random.Random(1000 + seed)  # random search with the same number of evaluations
        sampled.append(max(score(sample_genome(rng, SPACE)) for _ in range(n_evals)))
    assert sum(evolved) > sum(sampled) + 2  # on average a clear margin (optimum is 6.064)


def test_generations_count_evaluated_generations_including_the_random_one():
    seen_generations: list[int] = []
    cfg = EvolutionConfig(population_size=4, generations=3, elitism=1)
    result, evaluator = run(cfg, 0, on_generation=lambda gen, pop: seen_generations.append(gen))
    assert seen_generations == [0, 1, 2]
    assert len(result.logbook) == 3 and len(evaluator.calls) == 3
    assert all(len(call) == 4 for call in evaluator.calls)
    assert [row["new"] + row["reused"] for row in result.logbook] == [4, 4, 4]
    assert result.logbook[0]["reused"] == 0 and all(row["reused"] >= 1 for row in result.logbook[1:])  # the elite
    only_random, evaluator = run(EvolutionConfig(population_size=4, generations=1), 0)
    assert len(evaluator.calls) == 1 and len(only_random.population) == 4


@pytest.mark.parametrize("cfg", [WEIGHTED, NSGA2], ids=["weighted", "nsga2"])
def test_evaluate_is_never_asked_twice_for_a_genome(cfg):
    result, evaluator = run(cfg, 3)
    hashes = [h for call in evaluator.calls for h in call]
    assert len(hashes) == len(set(hashes)) == cfg.population_size * cfg.generations
    assert all(isinstance(ind, Individual) for ind in result.population)
    assert len({ind.genome_hash for ind in result.population}) == cfg.population_size


def test_nsga2_front_is_non_dominated_over_everything_evaluated():
    result, evaluator = run(NSGA2, 1)
    fitness_cls = type(result.population[0].fitness)
    front = result.hall_of_fame
    assert len(front) >= 2  # the objectives conflict, so the front holds a trade-off
    for a in front:
        assert not any(b.fitness.dominates(a.fitness) for b in front)
    for key, values in evaluator.values.items():  # nothing evaluated dominates a front member
        fitness = fitness_cls(values)
        assert not any(fitness.dominates(a.fitness) for a in front), key
    attention = sorted(a.fitness.values[0] for a in front)
    assert attention[0] < attention[-1]  # both ends of the trade-off are kept
    best_cost = min(v[1] for v in evaluator.values.values())
    best_attention = max(v[0] for v in evaluator.values.values())
    assert min(a.fitness.values[1] for a in front) == best_cost
    assert attention[-1] == best_attention


@pytest.mark.parametrize("cfg", [WEIGHTED, NSGA2], ids=["weighted", "nsga2"])
def test_checkpoint_states_are_plain_json_and_hold_the_barrier(cfg):
    raw: list[dict] = []
    run(cfg, 0, states=raw)
    for state in raw:
        assert json.loads(json.dumps(state)) == state  # only lists, dicts, str, numbers, None
        assert len(state["in_flight"]) <= 3  # never more than the pool's workers
        # the barrier: nothing of generation g + 1 is planned while g has results to come
        assert not state["planned"] or state["submitted"] < len(state["planned"]) or state["in_flight"] or \
            len(state["told"]) == len(state["planned"])
        assert all(p["generation"] == state["generation"] for p in state["in_flight"])
    assert raw[-1]["generation"] == cfg.generations - 1 and raw[-1]["planned"] == []


@pytest.mark.parametrize("cfg", [WEIGHTED, NSGA2], ids=["weighted", "nsga2"])
def test_resume_from_any_checkpoint_ends_like_an_uninterrupted_run(cfg):
    states: list[dict] = []
    full, full_eval = run(cfg, 7, states=states)
    expected = summary(full)
    evaluated = [h for call in full_eval.calls for h in call]
    for index in [*range(0, len(states), 7), len(states) - 1]:  # after proposals and after results, every generation
        state = states[index]
        resumed, evaluator = run(cfg, 7, resume_state=state)
        assert summary(resumed) == expected, f"resume from checkpoint {index} diverged"
        again = [h for call in evaluator.calls for h in call]
        in_flight = {Genome.from_dict(p["genome"]).hash() for p in state["in_flight"]}
        # what was in flight is evaluated again (a store answers it), then the run goes on as it did
        assert again == evaluated[len(evaluated) - len(again):]
        assert set(again[:len(in_flight)]) == in_flight and not set(again) & (set(state["seen"]) - in_flight
                                                                                - {Genome.from_dict(p["genome"]).hash()
                                                                                   for p in state["planned"]})


@pytest.mark.parametrize("cfg", [WEIGHTED, NSGA2], ids=["weighted", "nsga2"])
def test_crash_during_evaluation_then_resume(cfg):
    expected = summary(run(cfg, 11)[0])
    states: list[dict] = []
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, 11, evaluator=Evaluator(cfg.mode, crash_on_call=4), states=states)
    last = states[-1]
    assert last["generation"] == 4 and last["planned"] and not last["told"]
    resumed, _ = run(cfg, 11, resume_state=last)
    assert summary(resumed) == expected


def test_resume_after_the_last_generation_returns_the_result_without_evaluating():
    states: list[dict] = []
    full, _ = run(WEIGHTED, 2, states=states)
    resumed, evaluator = run(WEIGHTED, 2, resume_state=states[-1])
    assert evaluator.calls == [] and summary(resumed) == summary(full)


def test_resume_with_more_generations_continues_the_run():
    states: list[dict] = []
    short_cfg = EvolutionConfig(population_size=8, generations=4)
    long_cfg = EvolutionConfig(population_size=8, generations=7)
    run(short_cfg, 5, states=states)
    resumed, evaluator = run(long_cfg, 5, resume_state=states[-1])
    assert len(evaluator.calls) == 3 and len(resumed.logbook) == 7
    assert summary(resumed) == summary(run(long_cfg, 5)[0])


def test_resume_rejects_a_state_from_another_mode_or_version():
    states: list[dict] = []
    run(EvolutionConfig(population_size=4, generations=2), 0, states=states)
    with pytest.raises(ResumeStateError, match="'weighted'.*'nsga2'"):
        run(EvolutionConfig(population_size=4, generations=2, mode="nsga2"), 0, resume_state=states[-1])
    with pytest.raises(ResumeStateError, match="version"):
        run(EvolutionConfig(population_size=4, generations=2), 0, resume_state={**states[-1], "version": 99})
    broken = {**states[-1], "population": [{"genome": {"hidden_size": 32}}]}
    with pytest.raises(ResumeStateError, match="malformed"):
        run(EvolutionConfig(population_size=4, generations=2), 0, resume_state=broken)


class _Answering(Evaluator):
    """A pool that answers with the given function of the key instead of the toy fitness."""

    def __init__(self, answer) -> None:
        super().__init__("weighted")
        self.answer = answer

    def next_result(self):
        key = self.queue.pop(0).genome.hash()
        return self.answer(key)


def test_bad_pool_results_and_arguments_raise_clear_errors():
    cfg = EvolutionConfig(population_size=4, generations=2)
    with pytest.raises(EvaluationResultError, match="not in flight"):
        evolve(cfg, seed=0, evaluate=_Answering(lambda key: ("0" * 64, (1.0,))))
    with pytest.raises(EvaluationResultError, match="1 finite"):
        evolve(cfg, seed=0, evaluate=_Answering(lambda key: (key, (float("nan"),))))
    with pytest.raises(ValueError, match="objective_weights"):
        make_strategy(cfg, SPACE, seed=0, objective_weights=(), param_count=None)


def test_a_population_larger_than_the_space_is_reported():
    tiny = SearchSpaceConfig(hidden_sizes=(32,), embedding_sizes=(8,), num_layers=(1,), nodes_per_cell=3,
                             max_edges=2, op_families=("attn", "identity"), attention_heads=(2,),
                             kernel_sizes=(3,), ffn_ratios=(1,), activations=("gelu",))
    with pytest.raises(SearchSpaceExhaustedError, match="population_size"):
        evolve(EvolutionConfig(population_size=3, generations=1, elitism=1, max_resample=20), tiny, seed=0)
