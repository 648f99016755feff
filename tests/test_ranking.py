"""Ranking is defined once (rosearch.records.ranking): the search and stats/report/export agree."""

from __future__ import annotations

import pytest

from rosearch.config import config_from_dict
from rosearch.evaluate.fitness import fitness_spec
from rosearch.records.ranking import pareto_front, ranked, selection_weights
from rosearch.results.stats import ranked_records
from rosearch.records.store import CandidateRecord, ResultStore


def record(name: str, objectives: tuple[float, ...] | None, finished: float, status: str = "ok") -> CandidateRecord:
    return CandidateRecord(genome_hash=name, genome_json="{}", generation=0, parents=(), status=status, metrics={},
                           fitness=None, objectives=objectives, error=None, attempts=1, seconds=1.0, worker="w",
                           finished_at=finished)


@pytest.mark.parametrize("mode", ["weighted", "nsga2"])
def test_the_stored_run_ranks_as_the_search_did(tmp_path, mode: str) -> None:
    config = config_from_dict({"evolution": {"mode": mode}, "attack": {"enabled": True, "full_attack": "all"}})
    spec = fitness_spec(config, teacher_cost={"params": 10, "flops": 10})
    n = len(spec.weights)
    points = {"a": (0.8, 0.3, 4.0), "b": (0.9, 0.1, 9.0), "c": (0.8, 0.3, 2.0), "d": (0.8, 0.3, 4.0), "e": (0.7, 0.9, 1.0)}
    records = [record(h, v[:n], float(i)) for i, (h, v) in enumerate(points.items())]
    records.append(record("failed", None, 9.0, status="failed"))
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.write_run_config(config.to_dict(), config.results_fingerprint(), resume=False)
        for r in records:
            store.record_candidate(r)
        assert selection_weights(store.run_config(), n) == spec.weights
        search_order = [r.genome_hash for r in ranked(store.candidates(), spec.weights)]
        assert [r.genome_hash for r in ranked_records(store)] == search_order
    if mode == "nsga2":  # (accuracy, robustness, params): c is cheaper than a and d, whose tie keeps finish order
        assert search_order == ["b", "c", "a", "d", "e"]
        assert sorted(pareto_front(records, spec.weights)) == ["b", "c", "e"]
    else:
        assert search_order == ["b", "a", "c", "d", "e"]  # one fitness: ties keep finish order
