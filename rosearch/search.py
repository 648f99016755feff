"""A whole search run: prepare once, then evolve students whose fitness the workers measure.

The pieces stay separate (NNI-style): :mod:`rosearch.evolution` decides what to try next,
:mod:`rosearch.workers` decides where it runs, :func:`run_candidate_task` is what a worker runs for one candidate, and
:class:`~rosearch.records.store.ResultStore` keeps every finished candidate durably. This
module only wires them: it dedups proposals against the store (a finished candidate is never
re-trained, also across ``--resume``), records each outcome the moment it arrives, and
checkpoints the strategy's JSON state into the same SQLite file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rosearch.config import Config, attack_panel
from rosearch.errors import Interrupted
from rosearch.runtime.progress import terminal_progress
from rosearch.runtime.logs import attach_run_log, detach_run_log
from rosearch.evaluate.candidate import evaluate_candidate
from rosearch.evaluate.efficiency import measure_latency
from rosearch.evaluate.fitness import FitnessSpec, fitness_spec
from rosearch.evaluate.robustness import full_attack_metrics, panel_metrics, proxy_metrics
from rosearch.evolution.driver import drive
from rosearch.evolution.operators import Proposal
from rosearch.evolution.registry import make_strategy
from rosearch.evolution.strategy import evaluation_budget
from rosearch.prepare.preflight import check_data_files, check_search_memory, check_teacher_fit, teacher_shape
from rosearch.prepare.inputs import prepare_inputs
from rosearch.records import ranking
from rosearch.records.agreement import proxy_real_agreement
from rosearch.records.artifacts import load_student, read_candidate_files, student_files, write_candidate_files
from rosearch.records.store import CandidateRecord, ResultStore
from rosearch.files.rundir import (
    BEST_GENOME_FILE,
    CONFIG_FILE,
    RESULTS_FILE,
    RUN_INFO_FILE,
    RUN_LOG_FILE,
    SUMMARY_FILE,
    RunLock,
    check_run_dir,
    contained_run_dir,
    ensure_writable_dir,
)
from rosearch.runtime.settings import resolve_device
from rosearch.prepare.search_inputs import SearchInputs
from rosearch.search_space.cost import count_parameters
from rosearch.search_space.genome import Genome
from rosearch.supernet.fidelity import evaluate_inherited, prepare_supernets
from rosearch.records.tracking import Trackers, check_trackers
from rosearch.workers import (
    CandidateOutcome,
    CandidateTask,
    TaskFn,
    TaskResult,
    check_workers,
    is_transient_failure,
    make_backend,
)

logger = logging.getLogger(__name__)



def candidate_seed(run_seed: int, genome_hash: str) -> int:
    """A per-candidate seed that depends only on the run seed and the genome (not on order)."""
    return (run_seed * 1_000_003 + int(genome_hash[:8], 16)) % 2**31


def worker_device(config: Config) -> str:
    """The device spec inside a worker: Ray shows a task only its assigned GPUs, as cuda:0.."""
    if config.workers.backend == "ray" and config.run.device.startswith("cuda"):
        return "cuda"
    return config.run.device


def worker_cache_dir(config: Config) -> Path:
    """Where a Ray worker keeps what it provisions for itself (NLTK data, shipped files): on its own node.

    The driver's ``run.cache_dir`` may not exist on a worker's node (no shared file system), so a
    worker never reads or writes it; ``workers.cache_dir`` (default: the node's temp dir) does.
    """
    if config.workers.cache_dir:
        return Path(config.workers.cache_dir).expanduser()
    return Path(tempfile.gettempdir()) / "rosearch-worker-cache"


def _as_worker(inputs: SearchInputs, config: Config) -> tuple[SearchInputs, Config]:
    """The inputs and config a Ray worker runs with: every cache path on the worker's node."""
    if config.workers.backend != "ray":
        return inputs, config
    local = str(worker_cache_dir(config))
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, cache_dir=local),
                                 attack=dataclasses.replace(config.attack, nltk_data=None))
    if inputs.method_inputs is not None:
        inputs = dataclasses.replace(inputs, method_inputs=dataclasses.replace(inputs.method_inputs, cache_dir=local))
    return inputs, config


def run_candidate_task(task: CandidateTask, shared: tuple[SearchInputs, Config]) -> TaskResult:
    """What a worker runs for one candidate task, in-process or in Ray.

    A ``train`` task distils the genome, scores it on dev (and on the adversarial proxy set),
    times inference and returns the trained weights for the driver to keep; with
    ``attack.full_attack=all`` it also runs the full attack. An ``attack`` task runs the full
    attack on the trained student whose files it carries. A task with its own ``max_steps``
    (successive halving's lower rungs) distils for that many KD steps instead of ``distill.max_steps``.
    With ``supernet.fidelity=supernet`` a ``train`` task trains nothing: the candidate is measured with
    weights inherited from the supernet the inputs carry (:func:`rosearch.supernet.fidelity.evaluate_inherited`).
    """
    inputs, config = _as_worker(*shared)
    if task.max_steps is not None:
        config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, max_steps=task.max_steps))
    device = resolve_device(worker_device(config))
    name = task.genome_hash[:12]
    panel = attack_panel(config.attack)
    genome = Genome.from_json(task.genome_json)
    if task.kind == "attack":  # multi_fidelity: the rest of the panel (the first recipe ran with the training)
        model = load_student(task.payload, device)
        recipes = panel[1:] if config.attack.full_attack == "multi_fidelity" else panel
        return TaskResult(full_attack_metrics(model, inputs, config.attack, config.data, cache_dir=config.run.cache_dir,
                                              device=device, name=name, recipes=recipes, defenses=genome.defenses))
    if config.supernet.fidelity == "supernet":  # inherited weights: no training, no weights to return
        return TaskResult(evaluate_inherited(genome, inputs, config, device=device, name=name))
    model, metrics = evaluate_candidate(genome, inputs, config.distill, seed=task.seed, device=device)
    result = metrics.to_dict()
    result |= measure_latency(model, seq_len=inputs.dev_mean_length, device=device, vocab_size=inputs.vocab_size)
    result |= proxy_metrics(model, inputs, batch_size=config.distill.eval_batch_size, device=device,
                            defenses=genome.defenses)
    if config.attack.enabled and config.attack.full_attack == "all":
        result |= full_attack_metrics(model, inputs, config.attack, config.data, cache_dir=config.run.cache_dir,
                                      device=device, name=name, defenses=genome.defenses)
    elif config.attack.enabled and config.attack.full_attack == "multi_fidelity":
        result |= full_attack_metrics(model, inputs, config.attack, config.data, cache_dir=config.run.cache_dir,
                                      device=device, name=name, recipes=panel[:1], defenses=genome.defenses)
    result |= panel_metrics(result, panel, config.attack.panel_aggregate)
    return TaskResult(result, artifacts=student_files(model))


@dataclass(frozen=True)
class SearchSummary:
    """The outcome of a run, as a user sees it at the end."""

    run_dir: str
    evaluated: int
    failed: int
    reused: int
    wall_seconds: float
    top: list[dict[str, Any]]  # best candidates, best first
    teacher_dev_accuracy: float
    timings: dict[str, float]  # seconds of each preparation stage
    teacher_attack: dict[str, Any] | None = None  # the teacher's attack report (robustness runs)
    attacked: int = 0  # full attacks run by this invocation
    failure_reasons: dict[str, int] = field(default_factory=dict)  # first error line -> candidates

    def failure_verdict(self, max_failed_share: float) -> str | None:
        """Why a scheduler should see this run as failed (every candidate, or too many, failed), or None."""
        tried = self.evaluated + self.failed
        if not self.failed:
            return None
        share = self.failed / tried
        if self.evaluated and share <= max_failed_share:
            return None
        reasons = "; ".join(f"{n}x {reason}" for reason, n in sorted(self.failure_reasons.items(), key=lambda kv: -kv[1]))
        what = "every candidate" if not self.evaluated else f"{self.failed} of {tried} candidates ({share:.0%})"
        limit = "" if not self.evaluated else f", more than run.max_failed_share={max_failed_share}"
        return f"{what} failed{limit}: {reasons or 'no reason recorded'}"
    selection_split: str = "dev"  # "validation" (the slice of train the search selects on) or "dev" (data.validation_size=0)
    split_stats: dict[str, Any] | None = None  # sizes and majority-class rates of the validation slice and dev
    proxy_vs_real: dict[str, Any] | None = None  # Spearman rho, p, n between proxy and real robustness, when both exist
    attack_panel: list[str] | None = None  # the recipes of the real robustness figure
    attack_aggregate: str = "mean"  # how robust_accuracy combines them (attack.panel_aggregate: mean or min)


class SearchProgress:
    """Live bars (overall: candidates done, running, failed and the best so far; and the current
    generation) on a terminal; nothing when output is redirected."""

    def __init__(self, generations: int, population: int, *, multi_fidelity: bool = False) -> None:
        self._bars = terminal_progress()
        self._done = self._failed = 0
        self._best: float | None = None
        # a multi-fidelity strategy makes more, cheaper evaluations than population x generations: no known total
        self._total = self._bars.add_task("search candidates", total=None if multi_fidelity else generations * population)
        self._generation: int | None = None

    def __enter__(self) -> "SearchProgress":
        self._bars.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bars.stop()

    def start_generation(self, generation: int, candidates: int) -> None:
        if self._generation is not None:
            self._bars.remove_task(self._generation)
        self._generation = self._bars.add_task(f"generation {generation}", total=max(candidates, 1))

    def candidate_done(self, record: CandidateRecord | None = None, running: int = 0, maximise: bool = True) -> None:
        self._bars.advance(self._total)
        if self._generation is not None:
            self._bars.advance(self._generation)
        if record is None:
            return
        self._done += 1
        self._failed += record.status != "ok"
        if record.status == "ok" and record.objectives:
            value = float(record.objectives[0])
            if self._best is None or (value > self._best if maximise else value < self._best):
                self._best = value
        best = "-" if self._best is None else f"{self._best:.4f}"
        self._bars.update(self._total, description=f"search: {self._done} done, {running} running, {self._failed} failed, "
                                                   f"best {best}")


class _CandidateDispatcher:
    """The strategy's pool: dedup against the store, dispatch the rest to the backend, record each outcome.

    With ``attack.full_attack=top_k`` a strategy with a barrier every population (generational)
    has the full attack run on each generation's best ``attack.top_k`` candidates that lack one
    (:meth:`attack_generation`); every strategy's run ends with it on the run's best. The result is
    merged into their stored metrics (selection stays on the run's one robustness figure, see
    :mod:`rosearch.evaluate.fitness`).
    """

    def __init__(
        self, store: ResultStore, backend, spec: FitnessSpec, config: Config, progress: "SearchProgress",
        trackers: Trackers | None = None,
    ) -> None:
        self.store, self.backend, self.spec, self.run_seed = store, backend, spec, config.run.seed
        self.trackers = trackers if trackers is not None else Trackers((), config.run.run_dir)
        self.max_steps = config.distill.max_steps
        self.run_dir = config.run.run_dir
        attack = config.attack
        self.attack_top_k = attack.top_k if attack.enabled and attack.full_attack in ("top_k", "multi_fidelity") else 0
        self.panel = attack_panel(attack)
        self.panel_aggregate = attack.panel_aggregate
        self.progress = progress
        self.population_size = config.evolution.population_size
        self.evaluated = self.failed = self.reused = self.attacked = 0
        self.failure_reasons: Counter[str] = Counter()
        self.budget = evaluation_budget(config.evolution)  # evaluations; successive halving makes more, cheaper ones
        self._in_flight: dict[str, Proposal] = {}  # submitted to the backend
        self._answered: list[CandidateRecord] = []  # submitted, found in the store
        self._generation = -1  # the latest generation a proposal was submitted for

    def values_of(self, record: CandidateRecord) -> tuple[float, ...]:
        return self.spec.values(record.metrics) if record.status == "ok" else self.spec.worst()

    def attack_generation(self, generation: int) -> None:
        """The full attack on a finished generation's best (a barrier strategy's per-generation step)."""
        if self.attack_top_k:  # from the store: a resumed run did not submit what it had told before the crash
            hashes = [r.genome_hash for r in self.store.candidates() if r.generation == generation]
            self.attack_best(hashes, self.attack_top_k, f"generation {generation}")

    def _reusable(self, key: str, budget: int | None = None) -> CandidateRecord | None:
        """The stored outcome of ``key`` when it may stand: measured at ``budget`` KD steps (successive
        halving's rung; None: the run's budget), and not a transient failure (tried again)."""
        record = self.store.candidate(key)
        if record is not None and ranking.budget_of(record) != budget:
            logger.debug("candidate %s is stored at %s KD steps, wanted at %s", key[:12], ranking.budget_of(record), budget)
            return None
        if record is not None and record.status == "failed" and is_transient_failure(record.error):
            logger.info("candidate %s failed transiently before (%s); trying it again", key[:12], record.error.splitlines()[0])
            return None
        return record

    # -- the strategy's pool (rosearch.evolution.strategy.CandidatePool) --

    def capacity(self) -> int:
        return self.backend.capacity()

    def submit(self, proposal: Proposal) -> None:
        """Dispatch one proposal; one already in the store is answered from it without running."""
        key = proposal.genome.hash()
        if proposal.generation > self._generation:  # (a promotion keeps its genome's first generation)
            self._generation = proposal.generation
            self.progress.start_generation(proposal.generation, self.population_size)
        record = self._reusable(key, proposal.budget)
        if record is not None:
            self._answered.append(record)
            self.reused += 1
            return
        self._in_flight[key] = proposal
        self.backend.submit(CandidateTask(genome_hash=key, genome_json=proposal.genome.to_json(),
                                          seed=candidate_seed(self.run_seed, key), generation=proposal.generation,
                                          max_steps=proposal.budget))

    def next_result(self) -> tuple[str, tuple[float, ...]]:
        """The next finished proposal. Stored answers come first, oldest first: a resumed run replays
        the results its checkpoint missed in their original completion order."""
        if self._answered:
            record = min(self._answered, key=lambda r: (r.finished_at, r.genome_hash))
            self._answered.remove(record)
            return record.genome_hash, self.values_of(record)
        outcome = self.backend.next_outcome()
        proposal = self._in_flight.pop(outcome.genome_hash)
        record = self._record(outcome, proposal)
        self._log(record, self.evaluated + self.failed, self.budget if proposal.budget is None else None)
        self.progress.candidate_done(record, len(self._in_flight), self.spec.weights[0] > 0)
        return record.genome_hash, record.objectives

    def attack_best(self, hashes: list[str], k: int, scope: str) -> None:
        """Run the full attack on the best ``k`` finished candidates of ``hashes`` that have none yet."""
        records = [r for r in (self.store.candidate(h) for h in dict.fromkeys(hashes)) if r is not None and r.status == "ok"]
        records = ranking.ranked(records, self.spec.weights)
        chosen = [r for r in records[:k] if "robust_accuracy" not in r.metrics and "attack_error" not in r.metrics]
        tasks = []
        for r in chosen:
            files = read_candidate_files(self.run_dir, r.genome_hash)
            if files is None:
                logger.warning("candidate %s has no stored weights; skipping its full attack", r.genome_hash[:12])
                continue
            seed = candidate_seed(self.run_seed, r.genome_hash)  # the attack itself is seeded by attack.seed
            tasks.append(CandidateTask(genome_hash=r.genome_hash, genome_json=r.genome_json, seed=seed,
                                       generation=r.generation, kind="attack", payload=files))
        if not tasks:
            return
        logger.info("full attack on the %s's top %d: %s", scope, len(tasks), ", ".join(t.genome_hash[:12] for t in tasks))
        for outcome in self.backend.run(tasks):
            record = self.store.candidate(outcome.genome_hash)
            if outcome.ok:
                extra = dict(outcome.metrics)
                extra |= panel_metrics(dict(record.metrics) | extra, self.panel, self.panel_aggregate)
                self.attacked += 1
                logger.info("candidate %s under attack: accuracy %.3f -> %.3f, success rate %.3f, %.0f queries/example, %.0fs",
                            outcome.genome_hash[:12], extra.get("clean_accuracy_attacked_sample", float("nan")),
                            extra.get("robust_accuracy", float("nan")), extra.get("attack_success_rate", float("nan")),
                            extra.get("attack_queries", float("nan")), outcome.seconds)
            else:  # the candidate stays a finished candidate; the error is kept with its metrics
                extra = {"attack_error": (outcome.error or "").splitlines()[0][:500]}
                logger.warning("candidate %s: full attack failed: %s", outcome.genome_hash[:12], extra["attack_error"])
            self.store.record_candidate(dataclasses.replace(record, metrics=dict(record.metrics) | extra))

    def _record(self, outcome: CandidateOutcome, proposal: Proposal) -> CandidateRecord:
        """Store the outcome (with successive halving, under its rung: see :meth:`_with_rungs`); return it."""
        status, error, metrics = outcome.status, outcome.error, dict(outcome.metrics)
        objectives = self.spec.worst()
        if status == "ok":
            try:
                objectives = self.spec.values(metrics)
            except (KeyError, ValueError, TypeError) as exc:  # a metric the fitness needs is missing
                status, error = "failed", f"{type(exc).__name__}: {exc}"
        previous = self.store.candidate(outcome.genome_hash) if proposal.budget is not None else None
        if proposal.budget is not None:
            metrics = self._with_rungs(metrics, status, error, tuple(objectives), proposal.budget, previous)
        record = CandidateRecord(
            genome_hash=outcome.genome_hash, genome_json=proposal.genome.to_json(), generation=proposal.generation,
            parents=tuple(proposal.parents), status=status, metrics=metrics,
            fitness=objectives[0] if self.spec.mode == "weighted" and status == "ok" else None,
            objectives=tuple(objectives), error=error, attempts=outcome.attempts, seconds=outcome.seconds,
            worker=outcome.worker, finished_at=time.time(),
        )
        kept = record
        if previous is not None and (ranking.budget_of(previous) or 0) > (proposal.budget or 0):
            kept = dataclasses.replace(previous, metrics=dict(previous.metrics) | {"rungs": metrics["rungs"]})
        elif status == "ok" and outcome.artifacts:  # weights first: a stored candidate always has them
            write_candidate_files(self.run_dir, outcome.genome_hash, outcome.artifacts)  # a lower rung's are replaced
        self.store.record_candidate(kept)  # committed before anything else is scheduled
        self.trackers.candidate(record, proposal.budget or self.max_steps)  # watchers only: the store decides
        if status == "ok":
            self.evaluated += 1
        else:
            self.failed += 1
            self.failure_reasons[((error or "").strip().splitlines() or ["unknown error"])[0][:200]] += 1
        return record

    def _with_rungs(self, metrics: dict[str, Any], status: str, error: str | None, objectives: tuple[float, ...],
                    budget: int, previous: CandidateRecord | None) -> dict[str, Any]:
        """Successive halving's layout: one row per genome holding its highest budget's figures, that
        budget (``distill_steps``), and every budget's selection figures (``rungs``, keyed by steps)."""
        spec = self.spec
        entry: dict[str, Any] = {"status": status, "objectives": list(objectives)}
        if status == "ok":
            keys = [spec.accuracy_key, spec.cost_key] + ([spec.robustness_key] if spec.use_robustness else [])
            entry |= {k: metrics[k] for k in keys if k in metrics}
        else:
            entry["error"] = ((error or "").strip().splitlines() or ["unknown error"])[0][:200]
        rungs = dict((previous.metrics.get("rungs") or {}) if previous is not None else {})
        rungs[str(budget)] = entry
        return metrics | {"distill_steps": budget, "rungs": dict(sorted(rungs.items(), key=lambda kv: int(kv[0])))}

    def _log(self, record: CandidateRecord, done: int, total: int | None) -> None:
        m = record.metrics
        of = f"/{total}" if total is not None else f" at {m['distill_steps']} KD steps" if "distill_steps" in m else ""
        if record.status == "ok":
            robust = "".join(
                f" {label} {m[key]:.3f}" for key, label in (("proxy_robust_accuracy", "proxy"), ("robust_accuracy", "robust"))
                if m.get(key) is not None
            )
            logger.info(
                "gen %d candidate %d%s %s: acc %.4f%s, %.2fM params, %.1f ms@b1, fitness %s, %.0fs",
                record.generation, done, of, record.genome_hash[:12], m.get(self.spec.accuracy_key, float("nan")), robust,
                m.get("params", 0) / 1e6, m.get("latency_ms_b1", float("nan")),
                ", ".join(f"{v:.4f}" for v in record.objectives), record.seconds,
            )
        else:
            logger.warning("gen %d candidate %d%s %s FAILED after %d attempt(s): %s", record.generation, done, of,
                           record.genome_hash[:12], record.attempts, (record.error or "").splitlines()[0][:300])


def run_search(config: Config, *, resume: bool = False, task_fn: TaskFn = run_candidate_task) -> SearchSummary:
    """Run (or resume) the search described by ``config``; every result lands in the run's SQLite file.

    ``task_fn`` is what a worker runs per task (an importable function for Ray); tests and
    experiments substitute their own, e.g. one that fails on purpose. Everything checkable in
    seconds (workers, teacher shape, run directory, store) is checked before preparation, and
    the run directory is locked against a second driver for the whole run.
    """
    start = time.perf_counter()
    check_workers(config.workers)  # seconds, before minutes of data/teacher preparation
    check_teacher_fit(config, teacher_shape(config.teacher))
    check_data_files(config.data)
    check_trackers(config.run.report_to)
    check_search_memory(config)
    contained_run_dir(config.run.output_dir, config.run.name)
    check_run_dir(config.run.run_dir)
    ensure_writable_dir(config.run.run_dir, "run directory")
    with RunLock(config.run.run_dir):
        run_log = attach_run_log(config.run.run_dir / RUN_LOG_FILE)  # appended to on --resume
        try:
            return _run_search_locked(config, resume, task_fn, start)
        finally:
            detach_run_log(run_log)


def _run_search_locked(config: Config, resume: bool, task_fn: TaskFn, start: float) -> SearchSummary:
    run_dir = config.run.run_dir
    store = ResultStore(run_dir / RESULTS_FILE)  # a damaged file is refused here, before any preparation
    try:
        fingerprint = config.results_fingerprint()
        if store.run_config() is not None:  # an existing run: refuse without --resume or with other results fields
            store.write_run_config(config.to_dict(), fingerprint, resume=resume)
        device = resolve_device(config.run.device)
        if device.type == "cuda" and config.workers.backend == "ray" and config.workers.num_gpus_per_candidate == 0:
            logger.warning("the teacher runs on %s but candidates get no GPU (set workers.num_gpus_per_candidate)", device)
        inputs = prepare_inputs(config, device)
        if config.supernet.fidelity == "supernet":  # trained once per defense set (or read from the cache)
            inputs = prepare_supernets(config, inputs, device)
        # written only once preparation succeeded, so a failed preparation leaves no run behind
        store.write_run_config(config.to_dict(), fingerprint, resume=resume)
        (run_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
        write_run_info(run_dir, inputs)
        defense = inputs.defense(config.search_space.defenses_used())
        if defense is not None:  # every defense a candidate may carry, so exports need no preparation
            defense.save(run_dir)
        spec = fitness_spec(config, teacher_cost={"params": inputs.teacher_params, "flops": inputs.teacher_flops})
        logger.info("search: objectives %s with weights %s", spec.names, spec.weights)
        param_count = partial(
            count_parameters, vocab_size=inputs.vocab_size, num_labels=inputs.num_labels,
            max_position_embeddings=inputs.max_position_embeddings, type_vocab_size=inputs.type_vocab_size,
        )
        backend = make_backend(config.workers, task_fn, (inputs, config))
        strategy = make_strategy(config.evolution, config.search_space, seed=config.run.seed,
                                 objective_weights=spec.weights, param_count=param_count,
                                 max_steps=config.distill.max_steps)
        progress = SearchProgress(config.evolution.generations, config.evolution.population_size,
                                  multi_fidelity=bool(strategy.budgets))
        trackers = Trackers(config.run.report_to, run_dir, maximise=spec.weights[0] > 0)
        trackers.start(config.run.name, config.to_dict(),
                       sorted(store.candidates(), key=lambda r: r.finished_at) if resume else [])
        dispatcher = _CandidateDispatcher(store, backend, spec, config, progress, trackers)

        def on_generation(generation: int, population: list) -> None:
            if strategy.barrier:
                dispatcher.attack_generation(generation)
            hashes = [ind.genome.hash() for ind in population]
            first = np.array([ind.fitness.values[0] for ind in population], dtype=float)
            store.record_generation(generation, hashes, {"best": float(first.max()), "median": float(np.median(first))})
            store.checkpoint("TRUNCATE")  # no-op with the rollback journal; empties a -wal in the WAL fallback

        try:
            with progress:
                resume_state = store.load_checkpoint() if resume else None
                drive(strategy, dispatcher, checkpoint=store.save_checkpoint, resume_state=resume_state,
                      on_generation=on_generation)
            if strategy.budgets:
                log_rungs(store, config.distill.max_steps)
            if dispatcher.attack_top_k:  # the final top list (NSGA-II: the whole Pareto front) gets full-attack numbers
                if spec.mode == "nsga2":
                    front = pareto_front(store, spec)
                    dispatcher.attack_best(front, len(front), "run's Pareto front")
                else:
                    ranked = [row["hash"] for row in top_candidates(store, spec, k=dispatcher.attack_top_k)]
                    dispatcher.attack_best(ranked, dispatcher.attack_top_k, "run")
        except BaseException as exc:
            trackers.close("KILLED" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "FAILED")
            raise
        finally:
            backend.close()
        summary = SearchSummary(
            run_dir=str(run_dir), evaluated=dispatcher.evaluated, failed=dispatcher.failed, reused=dispatcher.reused,
            wall_seconds=time.perf_counter() - start, top=top_candidates(store, spec, k=5),
            teacher_dev_accuracy=inputs.teacher_dev_accuracy, timings=inputs.timings,
            teacher_attack=inputs.teacher_attack, attacked=dispatcher.attacked,
            failure_reasons=dict(dispatcher.failure_reasons),
            selection_split="dev" if inputs.val is None else "validation", split_stats=inputs.split_stats,
            proxy_vs_real=proxy_real_agreement(store.candidates()),
            attack_panel=list(attack_panel(config.attack)) if config.attack.enabled else None,
            attack_aggregate=config.attack.panel_aggregate,
        )
        if summary.proxy_vs_real:
            logger.info("proxy vs real robustness: Spearman rho %.3f (p %.3g, n %d)", summary.proxy_vs_real["rho"],
                        summary.proxy_vs_real["p"], summary.proxy_vs_real["n"])
        (run_dir / SUMMARY_FILE).write_text(json.dumps(summary.__dict__, indent=2, default=str))
        if summary.top:
            best = store.candidate(summary.top[0]["hash"])
            (run_dir / BEST_GENOME_FILE).write_text(best.genome_json)
        for name in (SUMMARY_FILE, BEST_GENOME_FILE):
            if (run_dir / name).is_file():
                trackers.artifacts(run_dir / name, "search")
        trackers.close("FINISHED")
        return summary
    finally:
        store.close()


def write_run_info(run_dir: Path, inputs: SearchInputs) -> None:
    """The teacher's reference numbers next to the results (reports and model cards quote them)."""
    info = {
        "teacher_dir": inputs.teacher_dir, "teacher_dev_accuracy": inputs.teacher_dev_accuracy,
        "teacher_params": inputs.teacher_params, "teacher_flops": inputs.teacher_flops,
        "dev_mean_length": inputs.dev_mean_length, "teacher_attack": inputs.teacher_attack,
        "attack_examples": len(inputs.attack_examples), "proxy_examples": None if inputs.proxy is None else len(inputs.proxy),
        "selection_split": "dev" if inputs.val is None else "validation", **inputs.split_stats,
    }
    (run_dir / RUN_INFO_FILE).write_text(json.dumps(info, indent=2, default=str))


def log_rungs(store: ResultStore, max_steps: int) -> None:
    """How many candidates finished at each successive-halving budget; a warning when none reached the
    full budget (the ranking then leads with the highest budget reached, see :mod:`rosearch.records.ranking`)."""
    counts = Counter(ranking.budget_of(r) for r in store.candidates() if r.status == "ok")
    logger.info("successive halving: finished candidates by KD step budget: %s",
                ", ".join(f"{steps}: {n}" for steps, n in sorted(counts.items(), key=lambda kv: kv[0] or 0)) or "none")
    if not counts.get(max_steps):
        logger.warning("successive halving: no candidate reached the full budget of %d KD steps; the top list "
                       "compares the highest budget reached (fix: more evolution.generations or fewer "
                       "evolution.halving_rungs)", max_steps)


def pareto_front(store: ResultStore, spec: FitnessSpec) -> list[str]:
    """Hashes of the finished candidates no other finished candidate dominates on every objective."""
    return ranking.pareto_front(store.candidates(), spec.weights)


def top_candidates(store: ResultStore, spec: FitnessSpec, k: int) -> list[dict[str, Any]]:
    """The ``k`` best finished candidates by the run's selection values (first objective first)."""
    rows = []
    for r in ranking.ranked(store.candidates(), spec.weights)[:k]:
        genome = Genome.from_json(r.genome_json)
        rows.append({
            "hash": r.genome_hash, "generation": r.generation, "H": genome.hidden_size, "E": genome.embedding_size,
            "L": genome.num_layers, "objectives": list(r.objectives), **r.metrics,
        })
    return rows
