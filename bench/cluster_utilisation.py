"""Worker utilisation of generational vs asynchronous search on a real Ray pool.

What is real and what is modelled:

* real: the strategies (:data:`rosearch.evolution.STRATEGIES`, run by :func:`rosearch.evolution.drive`
  as the search runs them), the :class:`~rosearch.workers.RayBackend` with its
  streaming attempts, and a local Ray instance with ``--workers`` one-CPU slots;
* modelled: each candidate's work is a sleep whose length comes from a cost model fitted to a
  stored run: the empirical distribution of its candidates' wall seconds
  (``bench/results/candidate_seconds.json``: run B of README, 70 s to 1,154 s, or ``--from-run``),
  a genome drawing its cost by its hash, scaled so that the mean is ``--mean-seconds``. In the
  stored runs a candidate's seconds correlate weakly with its FLOPs or parameters (Pearson 0.06 to
  0.32), so the model does not tie cost to architecture. Fitness is a number drawn from the hash
  too: utilisation depends on the spread of costs, not on what is optimised.

Figures, per strategy, over the same evaluation budget (population x generations):
busy share = sum of candidate seconds / (workers x wall from the first submission to the last
result), also up to the last submission only (before the drain, when slots empty out for good);
time to half and to all evaluations. Idle time is the slots waiting for a generation's
slowest candidate (generational) plus dispatch, Ray and bookkeeping overhead. Run from the
repository root::

    .venv/bin/python bench/cluster_utilisation.py                       # 8 workers, 16 x 8
    .venv/bin/python bench/cluster_utilisation.py --workers 16 --population 32 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import ray

from common import console, print_table, write_figures
from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution import Proposal, drive, make_strategy
from rosearch.records.store import ResultStore
from rosearch.files.rundir import RESULTS_FILE
from rosearch.workers import CandidateTask, RayBackend

logger = logging.getLogger("bench.cluster_utilisation")

DEFAULT_COSTS = Path("bench/results/candidate_seconds.json")


def stored_costs(path: Path, from_run: Path | None) -> list[float]:
    """The candidate wall seconds of a stored run (its results file), or of the committed cost table."""
    if from_run is not None:
        with ResultStore(from_run / RESULTS_FILE, read_only=True) as store:
            return [r.seconds for r in store.candidates() if r.status == "ok"]
    return [float(s) for s in json.loads(path.read_text())["seconds"]]


def modelled_task(costs: tuple[float, ...]):
    """The task Ray runs: sleep the genome's modelled cost; report its span and its fitness."""

    def task_fn(task: CandidateTask, shared: Any) -> dict[str, float]:
        start = time.time()
        time.sleep(costs[int(task.genome_hash[8:16], 16) % len(costs)])
        return {"start": start, "end": time.time(), "fitness": int(task.genome_hash[:8], 16) / 2**32}

    return task_fn


class _Timeline:
    """Every candidate's span, and the driver's first submission and last result."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self.first_submit: float | None = None
        self.last_submit = 0.0
        self.results: list[float] = []

    def submitted(self) -> None:
        self.last_submit = time.time()
        if self.first_submit is None:
            self.first_submit = self.last_submit

    def finished(self, metrics: dict[str, float]) -> float:
        self.spans.append((metrics["start"], metrics["end"]))
        self.results.append(time.time())
        return metrics["fitness"]


class _Pool:
    """A strategy's pool over the Ray backend (what the search's dispatcher does, minus the store)."""

    def __init__(self, backend: RayBackend, timeline: _Timeline) -> None:
        self.backend, self.timeline = backend, timeline

    def capacity(self) -> int:
        return self.backend.capacity()

    def submit(self, proposal: Proposal) -> None:
        self.timeline.submitted()
        self.backend.submit(CandidateTask(genome_hash=proposal.genome.hash(), genome_json="{}", seed=0,
                                          generation=proposal.generation))

    def next_result(self) -> tuple[str, tuple[float]]:
        outcome = self.backend.next_outcome()
        if not outcome.ok:
            raise RuntimeError(f"modelled candidate failed: {outcome.error}")
        return outcome.genome_hash, (self.timeline.finished(outcome.metrics),)


def measure(strategy: str, cfg: EvolutionConfig, costs: tuple[float, ...], workers: int) -> dict[str, Any]:
    space = SearchSpaceConfig()
    timeline = _Timeline()
    backend = RayBackend(modelled_task(costs), None, address=None, num_cpus=1, num_gpus=0, max_retries=0, timeout_s=None)
    try:
        search = make_strategy(dataclasses.replace(cfg, strategy=strategy), space, seed=0, objective_weights=(1.0,),
                               param_count=None)
        drive(search, _Pool(backend, timeline), checkpoint=lambda s: None)
    finally:
        backend.close()
    start = timeline.first_submit or 0.0
    wall = max(timeline.results) - start
    busy = sum(end - begin for begin, end in timeline.spans)
    done = sorted(t - start for t in timeline.results)
    # before the drain: until the last proposal was submitted (after it, slots empty out as the last results come)
    until = timeline.last_submit
    busy_before = sum(max(0.0, min(end, until) - max(begin, start)) for begin, end in timeline.spans)
    return {"strategy": strategy, "evaluations": len(done), "workers": workers, "wall_s": wall,
            "busy_share": busy / (workers * wall), "busy_share_before_drain": busy_before / (workers * (until - start)),
            "drain_s": max(timeline.results) - until, "time_to_half_s": done[len(done) // 2 - 1],
            "time_to_all_s": done[-1], "candidate_seconds_sum": busy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8, help="one-CPU candidate slots of the local Ray instance")
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--mean-seconds", type=float, default=2.0, help="mean modelled candidate cost after scaling")
    parser.add_argument("--costs", type=Path, default=DEFAULT_COSTS)
    parser.add_argument("--from-run", type=Path, default=None, help="fit the costs to this stored run instead")
    parser.add_argument("--strategies", nargs="+", default=["generational", "aging", "random"],
                        choices=["generational", "aging", "random"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    raw = stored_costs(args.costs, args.from_run)
    scale = args.mean_seconds / statistics.fmean(raw)
    costs = tuple(c * scale for c in raw)
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        warm = RayBackend(modelled_task((0.0,)), None, address=None, num_cpus=1, num_gpus=0, max_retries=0, timeout_s=None)
        list(warm.run([CandidateTask(genome_hash=f"{i:016x}", genome_json="{}", seed=0, generation=0)
                       for i in range(args.workers)]))  # worker processes started before anything is timed
        warm.close()
        rows = []
        for strategy in args.strategies:
            cfg = EvolutionConfig(population_size=args.population, generations=args.generations, elitism=2,
                                  tournament_size=3, strategy=strategy)
            rows.append(measure(strategy, cfg, costs, args.workers))
    finally:
        ray.shutdown()
    out = console()
    print_table(out, f"worker utilisation: {args.workers} workers, {args.population} x {args.generations} evaluations, "
                f"candidate costs from {args.from_run or args.costs} scaled to mean {args.mean_seconds:g} s "
                f"(spread {min(costs):.2f}-{max(costs):.2f} s)",
                ("strategy", "evaluations", "busy share", "busy before the drain", "drain", "time to half", "time to all"),
                [(r["strategy"], r["evaluations"], f"{r['busy_share']:.1%}", f"{r['busy_share_before_drain']:.1%}",
                  f"{r['drain_s']:.1f} s", f"{r['time_to_half_s']:.1f} s", f"{r['time_to_all_s']:.1f} s") for r in rows])
    write_figures(args.json, {"workers": args.workers, "population": args.population, "generations": args.generations,
                              "mean_seconds": args.mean_seconds, "costs_from": str(args.from_run or args.costs),
                              "cost_spread_s": [min(costs), max(costs)], "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
