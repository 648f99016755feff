"""How finished candidates rank, defined once for the search and for everything that reads a run.

A candidate's objectives are maximised where their weight is +1 and minimised where it is -1
(see :func:`rosearch.evaluate.fitness.fitness_spec`), so candidates compare by their *signed*
objectives, lexicographically, first objective first. The search ranks with the weights of its
:class:`~rosearch.evaluate.fitness.FitnessSpec`; ``stats``/``report``/``export`` read a finished run
and rebuild the same weights from the stored config with :func:`selection_weights`.

Candidates compare at equal budget. Successive halving (``evolution.strategy=halving``) stores each
candidate's figures with the KD step budget they were measured at (``metrics["distill_steps"]``), and
a candidate stopped at a low rung has cheaper, noisier figures; so candidates rank by budget first
(the full budget leads), then by their objectives, and the Pareto front is taken among the candidates
at the highest budget. A record without ``distill_steps`` (every other strategy) was
trained at the run's full budget and counts as the highest budget present.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rosearch.results.store import CandidateRecord


def selection_weights(run_config: Mapping[str, Any] | None, n_objectives: int) -> tuple[float, ...]:
    """The signs the search ranked a stored run by (see ``fitness.fitness_spec``).

    Weighted mode selects on one fitness (+1); NSGA-II on (accuracy, [robustness,] cost) with
    weights (+1, [+1,] -1). Only the mode is read from the stored config, so old configs work.
    """
    mode = ((run_config or {}).get("evolution") or {}).get("mode", "weighted")
    if mode == "nsga2" and n_objectives >= 2:
        return (1.0,) * (n_objectives - 1) + (-1.0,)
    return (1.0,) * n_objectives


def signed_objectives(record: CandidateRecord, weights: Sequence[float]) -> tuple[float, ...]:
    """The record's objectives with every one turned into a value to maximise."""
    return tuple(w * v for w, v in zip(weights, record.objectives))


def budget_of(record: CandidateRecord) -> int | None:
    """The KD step budget the record's figures were measured at (None: the run's full budget)."""
    steps = record.metrics.get("distill_steps")
    return None if steps is None else int(steps)


def _finished(records: Iterable[CandidateRecord]) -> list[CandidateRecord]:
    return [r for r in records if r.status == "ok" and r.objectives is not None]


def _budgets(records: Sequence[CandidateRecord]) -> list[float]:
    """Each record's budget, a missing one read as the highest budget present (the full one)."""
    known = [b for b in map(budget_of, records) if b is not None]
    full = max(known, default=0)
    return [full if b is None else b for b in map(budget_of, records)]


def ranked(records: Iterable[CandidateRecord], weights: Sequence[float]) -> list[CandidateRecord]:
    """The finished candidates (status ``ok``, objectives recorded), best first: highest budget first,
    then by signed objectives.

    The sort is stable, so ties keep the order of ``records`` (the store's: finish order).
    """
    ok = _finished(records)
    budget = dict(zip((id(r) for r in ok), _budgets(ok)))
    ok.sort(key=lambda r: (budget[id(r)], *signed_objectives(r, weights)), reverse=True)
    return ok


def pareto_front(records: Iterable[CandidateRecord], weights: Sequence[float]) -> list[str]:
    """Hashes of the finished candidates at the highest budget that no other one dominates on every objective."""
    finished = _finished(records)
    budgets = _budgets(finished)
    top = max(budgets, default=0)
    ok = [(r.genome_hash, signed_objectives(r, weights)) for r, b in zip(finished, budgets) if b == top]
    dominated = lambda a, b: all(x <= y for x, y in zip(a, b)) and a != b  # noqa: E731  (b dominates a)
    return [h for h, values in ok if not any(dominated(values, other) for _, other in ok)]
