"""Same seed, same search: every strategy evaluates the genomes it evaluated before the strategies
became ask/tell objects run by one driver loop.

The digests were recorded on the two loops that preceded the driver (the generational loop with a
batch ``evaluate`` callback, the asynchronous loop with a pool), on the toy space and simulated
pools of test_evolution / test_steady_state / test_halving: the evaluated genome hashes in order
with their values, and the final population, hall of fame and logbook. A change to sampling,
variation, selection, the RNG's use or the order of proposals changes them.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from rosearch.evolution import Proposal, drive, make_strategy
from test_evolution import NSGA2, SPACE, WEIGHTED, WEIGHTS, attention_ops, cost, score
from test_halving import HALVING, MAX_STEPS, HalvingPool
from test_steady_state import AGING, RANDOM, SimulatedPool

RECORDED = {
    "aging/0": "7da06f5d1aa15e8ffa28eca566afbf9bf02911fc9d668a248f35f25727d879d1",
    "aging/1": "e2016db5e4c9644b7859f3de36bf14dfa377df52e41c3a7b0f878d2227898ac3",
    "halving/0": "133c985889c6aca3c23d745e16aeac47ed1f5f6431d5329947a992415924a24b",
    "halving/1": "b3ef26154e7d2879a1ebcd4bc7ec3598ea7bd9138c4f9331aaa10284757b616c",
    "nsga2/0": "bc7852ff2a6146181e0e63977ff1e1c52897b2a9c37dd657c97b2401fc739c17",
    "nsga2/1": "b04c6d951a88352f777536b98e201da4d15495589a314527097f475cac8b71c8",
    "random/0": "77e76360eb8eccc318d93ea5345cc9721e29f0e9822fd8a5707709b9a2b61fe6",
    "random/1": "082e4f9b5fcd0fa5d5f9a1dfe9b5f05884b9d0c2462231ae308560bcb17615bd",
    "weighted/0": "7c033d964b4febbc2c5ae2aa69eae26f34a25621aa617c1440c8ef95f2b32a1c",
    "weighted/1": "aacbe74d2cdc7771df5496ecceb58101d85481b6fb368558cae20ff886480d37",
}


class FifoPool:
    """Results in submission order (the generational strategy does not depend on the order)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.queue, self.evaluated = mode, [], []

    def capacity(self) -> int:
        return 4

    def submit(self, proposal: Proposal) -> None:
        self.queue.append(proposal)

    def next_result(self):
        genome = self.queue.pop(0).genome
        values = (float(attention_ops(genome)), cost(genome)) if self.mode == "nsga2" else (score(genome),)
        self.evaluated.append([genome.hash(), list(values)])
        return genome.hash(), values


def outcome(result) -> dict:
    return {"population": [[i.genome_hash, list(i.fitness.values)] for i in result.population],
            "hall_of_fame": [[i.genome_hash, list(i.fitness.values)] for i in result.hall_of_fame],
            "logbook": [dict(row) for row in result.logbook]}


def digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_each_strategy_evaluates_what_it_evaluated_before(key):
    name, seed = key.split("/")[0], int(key.split("/")[1])
    if name in ("weighted", "nsga2"):
        cfg = WEIGHTED if name == "weighted" else NSGA2
        pool = FifoPool(cfg.mode)
        strategy = make_strategy(cfg, SPACE, seed=seed, objective_weights=WEIGHTS[cfg.mode], param_count=None)
        record = {"evaluated": pool.evaluated, **outcome(drive(strategy, pool, checkpoint=lambda s: None))}
    elif name in ("aging", "random"):
        cfg = AGING if name == "aging" else RANDOM
        pool = SimulatedPool()
        result = drive(make_strategy(cfg, SPACE, seed=seed, objective_weights=(1.0,), param_count=None), pool,
                       checkpoint=lambda s: None)
        record = {"submitted": pool.submitted, **outcome(result),
                  "evaluated": [[h, [score(pool.genomes[h])]] for h in result.state["completed"]]}
    else:
        pool = HalvingPool()
        strategy = make_strategy(HALVING, SPACE, seed=seed, objective_weights=(1.0,), param_count=None,
                                 max_steps=MAX_STEPS)
        result = drive(strategy, pool, checkpoint=lambda s: None)
        record = {"submitted": [[p.genome.hash(), p.budget] for p in pool.submitted], **outcome(result),
                  "evaluated": [[k, b, v] for k, b, v in pool.results]}
    assert digest(record) == RECORDED[key]
