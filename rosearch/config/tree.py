"""The whole run's config (:class:`Config`), its fingerprints, and the rules that join sections.

Each section checks its own values (``check()``); :func:`validate` runs those checks and then the
rules that need two sections at once (a teacher that needs the attack's neighbour table, a method
schedule that must fit the halving rungs, a GPU device that needs GPU workers, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rosearch.choices import DISTILL_METHOD_NAMES, SMOOTHING, SYNONYM_ENCODING, TYPO_ENCODING
from rosearch.config.checks import ConfigError, require
from rosearch.config.distill import DistillConfig
from rosearch.config.sections import (
    AttackConfig,
    DataConfig,
    DefenseConfig,
    EvolutionConfig,
    FitnessConfig,
    RunConfig,
    SearchSpaceConfig,
    SupernetConfig,
    TeacherConfig,
    WorkersConfig,
)

# Fields that change where and how fast a run goes, not its results; a resumed run may change them
# (section, key), or the whole section with key None. ``evolution.generations`` is here so that a
# finished run can be extended.
RESUMABLE_FIELDS: tuple[tuple[str, str | None], ...] = (
    ("workers", None), ("run", "device"), ("run", "num_threads"), ("run", "log_level"), ("evolution", "generations"),
    ("attack", "model_batch_size"), ("attack", "nltk_data"), ("attack", "num_workers"), ("run", "max_failed_share"),
    ("run", "report_to"),
)


@dataclass(frozen=True)
class Config:
    """The whole run. Build it with :func:`~rosearch.config.load_config` or :func:`~rosearch.config.config_from_dict`."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    search_space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data (lists for tuples), as ``config_from_dict`` reads it back."""
        return to_plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """Short hash of the whole config as a dict (run metadata)."""
        return _digest(self.to_dict())

    def results_fingerprint(self) -> str:
        """Hash of the config without :data:`RESUMABLE_FIELDS`: what decides a run's results.

        A resumed run must keep it; where and how fast candidates run, and how many generations to
        go, may change on ``--resume``.
        """
        data = self.to_dict()
        if self.supernet.fidelity == "standalone":  # its settings decide nothing then
            data.pop("supernet")
        for section, key in RESUMABLE_FIELDS:
            if key is None:
                data.pop(section)
            else:
                data[section].pop(key)
        return _digest(data)


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def to_plain(obj: Any) -> Any:
    """``obj`` with tuples as lists, recursively (what JSON and YAML write)."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def methods_used(config: Config) -> tuple[str, ...]:
    """Every distillation method some candidate of the run may use: ``distill.methods`` (all of them)
    plus ``search_space.training_choices`` (the training gene). The run prepares inputs for these once."""
    return tuple(config.distill.methods) + tuple(
        m for m in config.search_space.training_choices if m not in config.distill.methods)


def with_methods(config: Config, methods: Sequence[str]) -> Config:
    """``config`` whose ``distill.methods`` is ``methods`` (one candidate's, or a run's whole set)."""
    return dataclasses.replace(config, distill=dataclasses.replace(config.distill, methods=tuple(methods)))


def attack_panel(attack: AttackConfig) -> tuple[str, ...]:
    """The recipes a search attacks candidates with (``attack.recipes``, or ``attack.recipe`` alone)."""
    return tuple(attack.recipes) or (attack.recipe,)


def halving_budgets(max_steps: int, eta: int, rungs: int) -> tuple[int, ...]:
    """KD step budgets of the successive-halving rungs, lowest first: ``max_steps // eta^k``, k = rungs-1..0."""
    return tuple(max_steps // eta**k for k in range(rungs - 1, -1, -1))


def validate(config: Config) -> None:
    """Every section's own check, then the rules across sections; raise :class:`ConfigError` on the first problem."""
    config.run.check()
    config.data.check()
    config.teacher.check()
    if config.teacher.adversarial is not None:
        require(config.attack.neighbors_path is not None, "teacher.adversarial",
                "needs the counter-fitted neighbour table for its substitution hulls (fix: set attack.neighbors_path)")
    config.search_space.check()
    config.distill.check()
    _check_distill_across(config)
    config.evolution.check()
    _check_halving(config)
    config.workers.check()
    run, workers = config.run, config.workers
    if workers.backend == "ray" and run.device.startswith("cuda") and workers.num_gpus_per_candidate == 0:
        raise ConfigError(
            f"config field 'workers.num_gpus_per_candidate': run.device={run.device!r} needs a GPU per candidate, "
            "but Ray hides GPUs from tasks that ask for none (fix: set workers.num_gpus_per_candidate, e.g. 0.5)"
        )
    config.attack.check()
    _check_robustness_signal(config)
    config.defense.check()
    _check_defenses_across(config)
    config.fitness.check()
    config.supernet.check()
    fit = config.fitness
    require(not (fit.efficiency_metric == "latency" and config.evolution.mode == "weighted" and fit.efficiency_weight > 0),
            "fitness.efficiency_metric",
            "latency has no teacher reference to normalise against in weighted mode "
            "(fix: use params or flops, set fitness.efficiency_weight=0, or evolution.mode=nsga2)")
    require(fit.accuracy_floor is None or config.evolution.mode == "weighted", "fitness.accuracy_floor",
            "applies to evolution.mode weighted; NSGA-II keeps accuracy as an objective of its own "
            "(fix: unset fitness.accuracy_floor, or use evolution.mode=weighted)")


def _check_distill_across(config: Config) -> None:
    """The hidden-state loss needs cached teacher layers; the training gene and ``distill.methods`` do not
    overlap; each method's section checks itself against the methods some candidate may use."""
    dist, space = config.distill, config.search_space
    if dist.hidden_loss_weight > 0:
        require(len(config.teacher.cache_hidden_layers) > 0, "distill.hidden_loss_weight",
                "hidden-state loss needs cached teacher layers (fix: set teacher.cache_hidden_layers, e.g. [2, 4, 6])")
    for i, name in enumerate(space.training_choices):
        field_name = f"search_space.training_choices[{i}]"
        require(name in DISTILL_METHOD_NAMES, field_name, f"unknown method {name!r} (known: {', '.join(DISTILL_METHOD_NAMES)})")
        require(name not in space.training_choices[:i], field_name, f"method {name!r} is listed twice")
        require(name not in dist.methods, field_name, f"{name!r} is also in distill.methods (every candidate uses "
                "it), so the search cannot switch it off (fix: list it in one of the two)")
    methods = set(methods_used(config))  # what some candidate may distil with: its knobs must be usable
    for name in DISTILL_METHOD_NAMES:
        dist.method_config(name).check(dist, config.attack, methods)


def _check_halving(config: Config) -> None:
    """Successive halving's lowest rung trains at least one KD step, the work reaches the full budget,
    and adv_train's rounds fit the smallest budget."""
    evo, dist = config.evolution, config.distill
    if evo.strategy != "halving":
        return
    lowest = halving_budgets(dist.max_steps, evo.halving_eta, evo.halving_rungs)[0]
    require(lowest >= 1, "evolution.halving_rungs",
            f"distill.max_steps={dist.max_steps} / halving_eta^{evo.halving_rungs - 1} = {lowest} steps at the lowest "
            "rung (fix: fewer evolution.halving_rungs, a smaller evolution.halving_eta, or more distill.max_steps)")
    require(evo.population_size * evo.generations >= evo.halving_rungs, "evolution.generations",
            f"population_size x generations = {evo.population_size * evo.generations} full-budget evaluations of "
            f"work cannot bring a candidate through {evo.halving_rungs} rungs (that takes at least {evo.halving_rungs}; "
            "fix: more evolution.generations or fewer evolution.halving_rungs)")
    if "adv_train" in methods_used(config):
        adv = dist.adv_train
        last = adv.rounds * adv.every
        require(last < lowest, "distill.adv_train.every",
                f"{adv.rounds} adv_train rounds every {adv.every} steps end at step {last}, but "
                f"successive halving's lowest rung trains {lowest} steps (fix: a smaller distill.adv_train.every or "
                "fewer rounds, fewer evolution.halving_rungs, or evolution.strategy=random)")


def _check_robustness_signal(config: Config) -> None:
    """With a robustness term in the fitness, every candidate gets a robustness figure."""
    attack = config.attack
    if attack.enabled and config.fitness.robustness_weight > 0 and not attack.proxy and attack.full_attack in ("top_k", "none"):
        raise ConfigError(
            "config field 'attack.proxy': the fitness has a robustness term, so every candidate needs a robustness "
            f"figure, but attack.proxy is off and attack.full_attack={attack.full_attack!r} attacks only some "
            "(fix: set attack.proxy=true, attack.full_attack=all or multi_fidelity, or fitness.robustness_weight=0)"
        )


# Distillation methods that tie the student's tokens to the teacher's (per-token targets) or encode
# their own texts without the defense; a synonym- or typo-encoded student sees other tokens, so they cannot
# be combined. adv_finetune and adv_train pass their texts through the student's defense.
_TOKEN_ALIGNED_METHODS = ("layer_kd", "augment")


def _check_defenses_across(config: Config) -> None:
    """Synonym encoding needs synonym sources and the neighbour table for counter-fitted ones, smoothing
    the neighbour table; no
    encoding (synonym or typo) goes with a method that aligns the student's tokens with the teacher's."""
    defense = config.defense
    used = config.search_space.defenses_used()
    if SYNONYM_ENCODING in used:
        require(bool(defense.synonym_sources), "defense.synonym_sources", "is empty, so synonym encoding has no "
                "synonyms (fix: list wordnet and/or counterfitted)")
        if "counterfitted" in defense.synonym_sources:
            require(config.attack.neighbors_path is not None, "attack.neighbors_path",
                    "is unset, but synonym encoding reads the counter-fitted neighbour table from it (fix: set it, "
                    "e.g. ../shared/data/embeddings/counterfitted_neighbors.json.gz, or drop counterfitted from "
                    "defense.synonym_sources)")
    if SMOOTHING in used:
        require(config.attack.neighbors_path is not None, "attack.neighbors_path",
                "is unset, but smoothing swaps words for their neighbours in the counter-fitted table it names (fix: "
                "set it, e.g. ../shared/data/embeddings/counterfitted_neighbors.json.gz, or drop smoothing from "
                "search_space.defenses and defense_choices)")
    recoding = " and ".join(n for n in (SYNONYM_ENCODING, TYPO_ENCODING) if n in used)
    if not recoding:
        return
    clash = [m for m in methods_used(config) if m in _TOKEN_ALIGNED_METHODS]
    require(not clash and config.distill.hidden_loss_weight == 0, "distill.methods",
            f"{clash or ['hidden_loss_weight']} align the student's tokens with the teacher's, which {recoding} "
            f"change (fix: drop them from distill.methods / search_space.training_choices, or drop {recoding} "
            "from search_space.defenses and defense_choices)")
