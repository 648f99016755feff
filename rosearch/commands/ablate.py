"""``rosearch ablate``: a genome and its one-gene neighbours, each under the same k seeds, with paired effects.

The base genome and every neighbour (:mod:`rosearch.search_space.neighbours`) are evaluated ``k`` times,
seed ``i`` being ``run.seed + i`` for all of them, through the run's normal worker backend (in-process or
Ray). Each evaluation is stored in the run's ``results.sqlite`` as a repeat (genome, seed) the moment it
arrives, so an interrupted ablation resumes where it stopped and a second call evaluates nothing twice.
The statistics (:mod:`rosearch.results.ablation`) pair each neighbour with the base seed by seed.

Where the noise comes from is said in the output: stand-alone distillation varies the student's
initialisation and batch order with the seed (the evaluation sample is the run's fixed one); the
supernet figure of a genome is deterministic, so there the seed draws the evaluation sample instead
(a bootstrap of the validation slice and a seeded draw of the attack sample).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rosearch.prepare import inputs as prepare  # prepare.prepare_inputs looked up per call (tests replace it)
from rosearch.config import Config
from rosearch.errors import UserError
from rosearch.evaluate.fitness import FitnessSpec, fitness_spec
from rosearch.prepare.preflight import check_data_files, check_genome, check_teacher_fit, load_genome_files, teacher_shape
from rosearch.records.store import CandidateRecord, ResultStore
from rosearch.results.ablation import AblationRow, effect_rows, skipped_row, write_ablation
from rosearch.files.rundir import RESULTS_FILE, RunLock, check_run_dir, contained_run_dir, ensure_writable_dir
from rosearch.runtime.settings import resolve_device
from rosearch.search import run_candidate_task
from rosearch.prepare.search_inputs import SearchInputs
from rosearch.search_space.cost import count_parameters
from rosearch.search_space.genome import Genome
from rosearch.search_space.neighbours import Neighbour, check_in_space, one_gene_neighbours
from rosearch.supernet.fidelity import prepare_supernets
from rosearch.workers import CandidateOutcome, CandidateTask, TaskFn, TaskResult, check_workers, is_transient_failure, make_backend

logger = logging.getLogger(__name__)

ABLATION_GENERATION = -1  # the generation field of a repeat: it belongs to no generation of a search
STANDALONE_NOISE = "seed = distillation (student initialisation + batch order); the evaluation sample is fixed"
SUPERNET_NOISE = ("seed = evaluation sample (bootstrap of the validation slice, seeded draw of the attack sample); "
                  "the inherited-weight figure itself is deterministic")


class AblationInputError(UserError, ValueError):
    """``--genome`` or ``--seeds`` cannot be used (no such hash, an ambiguous prefix, fewer than 2 seeds)."""


def repeat_seeds(run_seed: int, k: int) -> list[int]:
    """The k seeds every genome of an ablation is evaluated under: ``run.seed + i``."""
    return [run_seed + i for i in range(k)]


def noise_source(config: Config) -> str:
    """What a seed varies in this run's evaluations (said next to every noise figure)."""
    return SUPERNET_NOISE if config.supernet.fidelity == "supernet" else STANDALONE_NOISE


def resample_evaluation(inputs: SearchInputs, config: Config, seed: int) -> SearchInputs:
    """The supernet fidelity's seed: a bootstrap of the validation slice (every defended copy alike) and a
    seeded draw of ``supernet.attack_examples`` from the attack sample (a bootstrap when it asks for all)."""
    rng = np.random.default_rng(seed)
    changes: dict[str, Any] = {}
    if inputs.val is not None:
        idx = rng.integers(0, len(inputs.val), len(inputs.val))
        changes["val"] = inputs.val.subset(idx, f"seed{seed}")
        changes["defended_splits"] = {
            key: dict(splits) | ({"val": splits["val"].subset(idx, f"seed{seed}")} if "val" in splits else {})
            for key, splits in inputs.defended_splits.items()
        }
    pool = inputs.attack_examples
    if pool:
        n = config.supernet.attack_examples
        picks = (rng.choice(len(pool), n, replace=False) if n is not None and n < len(pool)
                 else rng.integers(0, len(pool), len(pool)))
        changes["attack_examples"] = tuple(pool[i] for i in picks)
    return dataclasses.replace(inputs, **changes)


def run_repeat_task(task: CandidateTask, shared: tuple[SearchInputs, Config]) -> TaskResult:
    """What a worker runs for one (genome, seed) of an ablation: the search's task, with the seed's sample."""
    inputs, config = shared
    if config.supernet.fidelity == "supernet":
        inputs = resample_evaluation(inputs, config, task.seed)
    result = run_candidate_task(task, (inputs, config))
    metrics = dict(result.metrics) | {"repeat_seed": task.seed, "noise_source": noise_source(config)}
    return TaskResult(metrics)  # no weights: a repeat is a measurement, never exported


@dataclass(frozen=True)
class AblationResult:
    """What ``rosearch ablate`` prints and writes."""

    base_hash: str
    seeds: list[int]
    noise_source: str
    rows: list[AblationRow]
    evaluated: int  # evaluations run by this call
    reused: int  # found in the store
    failed: int
    paths: list[Path]


def resolve_genome(reference: str, store: ResultStore, config: Config) -> Genome:
    """``--genome``: a genome JSON file, or the hash (or a unique prefix of 6+ characters) of a stored genome."""
    path = Path(reference)
    if path.suffix == ".json" or path.is_file():
        return load_genome_files([path], config, teacher_shape(config.teacher))[0]
    if len(reference) < 6 or any(c not in "0123456789abcdef" for c in reference.lower()):
        raise AblationInputError(f"--genome {reference!r} is neither a genome JSON file nor a genome hash (fix: pass "
                                 "a file such as <run_dir>/best_genome.json, or a hash from `rosearch stats`)")
    stored = {r.genome_hash: r.genome_json for r in store.candidates()}
    stored |= {r.record.genome_hash: r.record.genome_json for r in store.repeats()}
    matches = sorted(h for h in stored if h.startswith(reference.lower()))
    if len(matches) != 1:
        what = "no stored genome" if not matches else f"{len(matches)} stored genomes ({', '.join(matches[:3])})"
        raise AblationInputError(f"--genome {reference!r} matches {what} in {store.path} (fix: pass a full hash of "
                                 "this run, or a genome JSON file)")
    genome = Genome.from_json(stored[matches[0]])
    check_genome(genome, config, teacher_shape(config.teacher), f"--genome {reference!r}")
    return genome


def run_ablation(config: Config, genome_ref: str, k: int, genes: Sequence[str], *,
                 task_fn: TaskFn = run_repeat_task) -> AblationResult:
    """Evaluate the base and its one-gene neighbours under k seeds (resumable) and pair them."""
    if k < 2:
        raise AblationInputError(f"--seeds {k}: a paired interval needs at least 2 seeds (fix: --seeds 3 or more)")
    check_workers(config.workers)
    check_teacher_fit(config, teacher_shape(config.teacher))
    check_data_files(config.data)
    run_dir = contained_run_dir(config.run.output_dir, config.run.name)
    check_run_dir(run_dir)
    ensure_writable_dir(run_dir, "run directory")
    with RunLock(run_dir), ResultStore(run_dir / RESULTS_FILE) as store:
        if store.run_config() is not None:  # an existing run: the same config, or its figures do not compare
            store.write_run_config(config.to_dict(), config.results_fingerprint(), resume=True)
        base = resolve_genome(genome_ref, store, config)
        check_in_space(base, config.search_space)
        device = resolve_device(config.run.device)
        inputs = prepare.prepare_inputs(config, device)
        if config.supernet.fidelity == "supernet":
            inputs = prepare_supernets(config, inputs, device)
        store.write_run_config(config.to_dict(), config.results_fingerprint(), resume=True)
        counter = partial(count_parameters, vocab_size=inputs.vocab_size, num_labels=inputs.num_labels,
                          max_position_embeddings=inputs.max_position_embeddings,
                          type_vocab_size=inputs.type_vocab_size)
        neighbours = one_gene_neighbours(base, config.search_space, genes, param_count=counter)
        spec = fitness_spec(config, teacher_cost={"params": inputs.teacher_params, "flops": inputs.teacher_flops})
        seeds = repeat_seeds(config.run.seed, k)
        genomes = [base] + [n.genome for n in neighbours if n.genome is not None]
        counts = _evaluate(store, make_backend(config.workers, task_fn, (inputs, config)), spec, base, genomes, seeds)
        rows = ablation_rows(store, spec, base, neighbours, seeds)
    header = {"base": base.hash(), "base_genome": base.to_dict(), "seeds": seeds, "noise_source": noise_source(config),
              "fidelity": config.supernet.fidelity, "confidence": 0.95, "genes": list(genes)}
    paths = write_ablation(run_dir, rows, header)
    return AblationResult(base.hash(), seeds, noise_source(config), rows, *counts, paths)


def _evaluate(store: ResultStore, backend: Any, spec: FitnessSpec, base: Genome, genomes: Sequence[Genome],
              seeds: Sequence[int]) -> tuple[int, int, int]:
    """Run every (genome, seed) the store lacks, one seed at a time (a wave's hashes are distinct, so each
    outcome finds its task); returns (evaluated, reused, failed)."""
    evaluated = reused = failed = 0
    try:
        for repeat, seed in enumerate(seeds):
            stored = {r.record.genome_hash: r.record for r in store.repeats() if r.seed == seed}
            wave = []
            for genome in dict.fromkeys(genomes):
                done = stored.get(genome.hash())
                if done is not None and not (done.status == "failed" and is_transient_failure(done.error)):
                    reused += 1
                    continue
                wave.append(CandidateTask(genome.hash(), genome.to_json(), seed, ABLATION_GENERATION))
            if wave:
                logger.info("ablation: seed %d (%d of %d): %d evaluations", seed, repeat + 1, len(seeds), len(wave))
            by_hash = {task.genome_hash: task for task in wave}
            for outcome in backend.run(wave):
                task = by_hash[outcome.genome_hash]
                record = _record(outcome, task, spec, () if task.genome_hash == base.hash() else (base.hash(),))
                store.record_repeat(record, seed=seed, repeat=repeat)  # committed before the next is looked at
                evaluated += record.status == "ok"
                failed += record.status != "ok"
    finally:
        backend.close()
    return evaluated, reused, failed


def _record(outcome: CandidateOutcome, task: CandidateTask, spec: FitnessSpec, parents: tuple[str, ...]) -> CandidateRecord:
    status, error, metrics = outcome.status, outcome.error, dict(outcome.metrics)
    objectives = spec.worst()
    if status == "ok":
        try:
            objectives = spec.values(metrics)
        except (KeyError, ValueError, TypeError) as exc:  # a metric the fitness needs is missing
            status, error = "failed", f"{type(exc).__name__}: {exc}"
    if status != "ok":
        logger.warning("ablation: %s seed %d failed: %s", task.genome_hash[:12], task.seed,
                       ((error or "").splitlines() or ["unknown error"])[0][:300])
    return CandidateRecord(
        genome_hash=task.genome_hash, genome_json=task.genome_json, generation=ABLATION_GENERATION, parents=parents,
        status=status, metrics=metrics, fitness=objectives[0] if spec.mode == "weighted" and status == "ok" else None,
        objectives=tuple(objectives), error=error, attempts=outcome.attempts, seconds=outcome.seconds,
        worker=outcome.worker, finished_at=time.time(),
    )


def compared_metrics(spec: FitnessSpec) -> list[str]:
    """The figures an ablation compares: the run's robustness figure (when it has one), then its accuracy."""
    return ([spec.robustness_key] if spec.use_robustness else []) + [spec.accuracy_key]


def ablation_rows(store: ResultStore, spec: FitnessSpec, base: Genome, neighbours: Sequence[Neighbour],
                  seeds: Sequence[int]) -> list[AblationRow]:
    """One row per neighbour and compared metric, from the stored repeats of these seeds."""
    wanted = set(seeds)

    def figures(genome: Genome, metric: str) -> dict[int, float]:
        return {r.seed: float(r.record.metrics[metric]) for r in store.repeats(genome.hash())
                if r.seed in wanted and r.record.status == "ok" and isinstance(r.record.metrics.get(metric), (int, float))}

    rows = []
    for metric in compared_metrics(spec):
        base_figures = figures(base, metric)
        for n in neighbours:
            if n.genome is None:
                rows.append(skipped_row(n.gene, n.change, metric, n.skipped))
            else:
                rows.append(effect_rows(n.gene, n.change, n.genome.hash(), metric, base_figures,
                                        figures(n.genome, metric)))
        if not neighbours:  # --genes none: the base's own seed noise
            rows.append(effect_rows("base", "(seed noise only)", base.hash(), metric, base_figures, base_figures))
    return rows
