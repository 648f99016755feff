"""One typed configuration tree for a whole run, loaded from YAML/TOML and validated up front.

Every section is a frozen dataclass; the top-level :class:`Config` is built once (from a file
plus ``--set a.b=c`` overrides) and handed down to each layer, which reads only its own section.
Validation happens entirely at load time so that nothing starts running on a bad config: an
unknown key, a wrong type or an impossible value raises :class:`ConfigError` naming the field
and saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import re
import types
import unicodedata
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib
import yaml

from rosearch.choices import (
    ACTIVATIONS,
    AUGMENT_RECIPE_NAMES,
    DEFENSE_NAMES,
    DISTILL_METHOD_NAMES,
    OP_FAMILIES,
    RECIPE_NAMES,
    SYNONYM_ENCODING,
    BUILTIN_TASKS,
    REPORT_TO_NAMES,
)
from rosearch.errors import UserError


logger = logging.getLogger(__name__)


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown, mistyped or impossible."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """Where a run lives and how it behaves globally."""

    name: str = "run"
    output_dir: str = "runs"  # the run writes to <output_dir>/<name>/
    cache_dir: str = ".cache/rosearch"  # tokenised data and teacher outputs, shared across runs
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:N"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    num_threads: int | None = None  # torch intra-op threads; None keeps torch's default
    # `rosearch search` exits non-zero (rc 3) when more than this share of its candidates failed;
    # a search in which every candidate failed always does
    max_failed_share: float = 1.0
    # experiment trackers that receive the run's config, one record per candidate and the
    # best-so-far curve (HF Trainer's spelling): mlflow, tensorboard, wandb. Offline: files under
    # the run directory. results.sqlite stays the record; a failing tracker is only a warning.
    report_to: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


@dataclass(frozen=True)
class DataConfig:
    """Which task and which files; ``data_dir=None`` loads the task through HF ``datasets``."""

    task: str = "sst2"
    data_dir: str | None = None  # GLUE-format directory (e.g. .../glue/SST-2) or IMDB csv dir
    max_length: int = 128  # tokens, after truncation
    train_limit: int | None = None  # use a seeded random subset of this many training examples
    dev_limit: int | None = None  # likewise for the dev split (None: the whole split)
    # The search selects on a seeded validation slice of the *train* split, so that the official dev
    # split stays unseen for reporting. It is drawn from train examples outside the students' subset
    # (data.train_limit) and, where enough remain, outside the teacher's (teacher.train_limit); at most
    # VALIDATION_MAX_SHARE of the train split (RTE 2.5k -> 498, MRPC 3.7k -> 733 examples: a smaller
    # slice would make accuracy differences between students mostly noise, a larger one starves KD).
    # 0 selects on dev as before this field existed (old runs).
    validation_size: int = 1000
    # Only train examples of at least this many words (both texts of a pair) enter the slice. SST-2's
    # train split is mostly phrases (median 7 words) while dev holds whole sentences (median 19): on
    # 2-word phrases an attack has little to swap, so the slice would rank defenses unlike dev does.
    # 0: any example (as before this field existed).
    validation_min_words: int = 0
    # Your own data instead of a built-in task (data.task then only names it): local files
    # (CSV, TSV, JSON/JSONL, Parquet, optionally .gz; relative to data_dir when that is set) or an HF
    # hub dataset, the text column(s) (one, or two for a pair task) and the label column. Label
    # names default to the sorted distinct training labels; without dev_file / dev_split, a seeded
    # (seed 0) stratified dev_share of train is the dev split. See docs/data.md.
    train_file: str | None = None
    dev_file: str | None = None
    dataset_name: str | None = None  # HF hub dataset id, e.g. "ag_news"
    dataset_config: str | None = None
    train_split: str = "train"  # hub split names
    dev_split: str | None = None
    text_columns: tuple[str, ...] = ()
    label_column: str = "label"
    label_names: tuple[str, ...] = ()
    dev_share: float = 0.1


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher: a fine-tuned classifier, or a backbone that ``rosearch teacher`` fine-tunes.

    ``model`` is a local directory, a hub id, or ``pkg:<python_package>/<subdir>`` for a
    checkpoint shipped inside an installed Python package (used offline).
    """

    model: str = "bert-base-uncased"
    finetuned: bool = False  # True: `model` is already fine-tuned on the task; use it as is
    output_dir: str | None = None  # where a fine-tuned teacher is saved (default: under cache_dir)
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    train_limit: int | None = None  # fine-tune on a seeded subset of the training split
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    cache_hidden_layers: tuple[int, ...] = ()  # teacher layers whose hidden states are cached
    # "ascc": fine-tune against the worst point of each token's WordNet / counter-fitted substitution
    # hull as well (rosearch.distill.ascc), a robust teacher for its students to learn from
    adversarial: str | None = None
    adversarial_weight: float = 1.0  # weight of the hull-adversarial cross-entropy beside the clean one
    adversarial_steps: int = 2  # signed-gradient ascent steps on the hull weights per batch


@dataclass(frozen=True)
class SearchSpaceConfig:
    """The space of student genomes: global shapes and the per-cell operation grid."""

    hidden_sizes: tuple[int, ...] = (128, 256)
    embedding_sizes: tuple[int, ...] = (64, 128)  # factorised embedding width E (vocab x E, E->H)
    num_layers: tuple[int, ...] = (2, 3, 4)
    nodes_per_cell: int = 5  # including the input and output nodes
    max_edges: int = 9
    op_families: tuple[str, ...] = (
        "attn", "conv", "sepconv", "dilconv", "glu", "ffn", "identity",
    )
    attention_heads: tuple[int, ...] = (2, 4, 8)
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    ffn_ratios: tuple[int, ...] = (1, 2, 4)
    activations: tuple[str, ...] = ("gelu", "relu", "swish", "tanh")
    param_budget: int | None = None  # maximum student parameters (embedding included)
    embedding_init: Literal["random", "teacher_pca"] = "teacher_pca"
    defenses: tuple[str, ...] = ()  # input defenses (rosearch.defense.DEFENSE_NAMES) every candidate carries
    defense_choices: tuple[str, ...] = ()  # defenses the evolution switches on or off per candidate (a gene)
    # robust-training methods (distill.methods names) the evolution switches on or off per candidate (a gene),
    # on top of distill.methods, which every candidate uses
    training_choices: tuple[str, ...] = ()

    def defenses_used(self) -> tuple[str, ...]:
        """Every defense some candidate of the run may carry, in application order."""
        used = set(self.defenses) | set(self.defense_choices)
        return tuple(n for n in ("word_recognition", "synonym_encoding") if n in used)


@dataclass(frozen=True)
class AugmentConfig:
    """``augment``: TextAttack augmenters over the transfer set; the teacher labels the copies once (cached)."""

    recipes: tuple[str, ...] = ("wordnet", "neighbors", "insert", "char")
    per_example: int = 1  # augmented copies per chosen training example (recipes taken in turn)
    limit: int | None = None  # augment a seeded subset of this many training examples (None: all)
    fraction: float = 0.5  # share of every training batch drawn from the augmented copies
    pct_words: float = 0.1  # share of a text's words one augmentation changes (at least one)

    def check(self, config: Config, methods: set[str]) -> None:
        """Known, distinct augmenters with their resources; sizes and shares that leave both kinds a place."""
        _require(len(self.recipes) > 0, "distill.augment.recipes",
                 f"must list at least one augmenter (known: {', '.join(AUGMENT_RECIPE_NAMES)})")
        for i, recipe in enumerate(self.recipes):
            _require(recipe in AUGMENT_RECIPE_NAMES, f"distill.augment.recipes[{i}]",
                     f"unknown augmenter {recipe!r} (known: {', '.join(AUGMENT_RECIPE_NAMES)})")
            _require(recipe not in self.recipes[:i], f"distill.augment.recipes[{i}]", f"{recipe!r} is listed twice")
        if "augment" in methods and "neighbors" in self.recipes:
            _require(config.attack.neighbors_path is not None, "distill.augment.recipes",
                     "the 'neighbors' augmenter needs the synonym-neighbour table (fix: set attack.neighbors_path, e.g. "
                     "../shared/data/embeddings/counterfitted_neighbors.json.gz, or drop 'neighbors' from the list)")
        _require(self.per_example >= 1, "distill.augment.per_example", f"must be >= 1, got {self.per_example}")
        _positive(self.limit, "distill.augment.limit")
        _require(0.0 < self.pct_words <= 1.0, "distill.augment.pct_words",
                 f"must be in (0, 1], got {self.pct_words}")
        _batch_share(self.fraction, "augment", config.distill.batch_size, methods)


@dataclass(frozen=True)
class MateKDConfig:
    """``mate_kd``: a masked-LM generator rewrites masked tokens to maximise teacher-student divergence."""

    weight: float = 1.0  # weight of the soft KD term on generator-perturbed text
    mask_prob: float = 0.3  # share of real (non-special) tokens the generator rewrites
    generator_steps: int = 1  # generator (maximisation) updates per cycle
    generator_every: int = 10  # student steps per cycle (the generator updates at its start)
    generator_lr: float = 1e-5
    gumbel_temperature: float = 1.0
    generator_layers: int = 2  # teacher layers the generator's encoder keeps
    pretrain_steps: int = 300  # MLM steps that adapt the generator to the transfer set (cached)

    def check(self, config: Config, methods: set[str]) -> None:
        """Positive weights and rates, a mask share in (0, 1], whole step counts."""
        for name in ("weight", "generator_lr", "gumbel_temperature"):
            _require(getattr(self, name) > 0, f"distill.mate_kd.{name}", f"must be > 0, got {getattr(self, name)}")
        _require(0.0 < self.mask_prob <= 1.0, "distill.mate_kd.mask_prob", f"must be in (0, 1], got {self.mask_prob}")
        _require(self.generator_steps >= 0, "distill.mate_kd.generator_steps",
                 f"must be >= 0 (0 freezes the generator), got {self.generator_steps}")
        for name in ("generator_every", "generator_layers"):
            _require(getattr(self, name) >= 1, f"distill.mate_kd.{name}", f"must be >= 1, got {getattr(self, name)}")
        _require(self.pretrain_steps >= 0, "distill.mate_kd.pretrain_steps", f"must be >= 0, got {self.pretrain_steps}")


@dataclass(frozen=True)
class LayerKDConfig:
    """``layer_kd``: TinyBERT-style hidden-state MSE + attention-distribution KL on mapped layers."""

    weight: float = 0.1  # hidden-state MSE weight (replaces distill.hidden_loss_weight)
    attention_weight: float = 1.0  # KL(teacher || student) of head-averaged attention rows

    def check(self, config: Config, methods: set[str]) -> None:
        """Non-negative weights; switched on, at least one term and no second hidden-state weight."""
        for name in ("weight", "attention_weight"):
            _require(getattr(self, name) >= 0, f"distill.layer_kd.{name}", f"must be >= 0, got {getattr(self, name)}")
        if "layer_kd" not in methods:
            return
        _require(self.weight > 0 or self.attention_weight > 0, "distill.layer_kd.weight",
                 "layer_kd needs a hidden-state or an attention term (fix: set distill.layer_kd.weight or "
                 "distill.layer_kd.attention_weight > 0)")
        hidden = config.distill.hidden_loss_weight
        _require(hidden == 0, "distill.hidden_loss_weight",
                 f"is {hidden}, but layer_kd weighs the hidden-state loss itself "
                 "(fix: set distill.hidden_loss_weight=0 and use distill.layer_kd.weight)")


@dataclass(frozen=True)
class RiftConfig:
    """``rift``: class-conditional InfoNCE between projected student and cached teacher features."""

    weight: float = 0.1
    temperature: float = 0.1

    def check(self, config: Config, methods: set[str]) -> None:
        """A positive weight and temperature."""
        for name in ("weight", "temperature"):
            _require(getattr(self, name) > 0, f"distill.rift.{name}", f"must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class AdvFinetuneConfig:
    """``adv_finetune``: after KD, attack the student on training examples and fine-tune on the hits."""

    steps: int = 100
    examples: int = 200  # training examples attacked (seeded sample)
    recipe: str | None = None  # a key of rosearch.attack.recipes.RECIPES (None: attack.recipe)
    lr: float = 1e-4  # constant learning rate of the fine-tuning steps
    fraction: float = 0.5  # share of each fine-tuning batch drawn from adversarial examples

    def check(self, config: Config, methods: set[str]) -> None:
        """Whole positive sizes, a positive rate, a known recipe, a share that leaves both kinds a place."""
        _batch_share(self.fraction, "adv_finetune", config.distill.batch_size, methods)
        _require(self.lr > 0, "distill.adv_finetune.lr", f"must be > 0, got {self.lr}")
        for name in ("steps", "examples"):
            _require(getattr(self, name) >= 1, f"distill.adv_finetune.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.recipe is not None:
            _require(self.recipe in RECIPE_NAMES, "distill.adv_finetune.recipe",
                     f"unknown recipe {self.recipe!r} (known: {', '.join(RECIPE_NAMES)})")


@dataclass(frozen=True)
class AdvTrainConfig:
    """``adv_train``: attack the student every ``every`` KD steps, train on clean + adversarial batches."""

    rounds: int = 2  # attack rounds during KD (round k after k * every steps)
    every: int = 200  # KD steps between rounds; rounds * every must be < distill.max_steps
    examples: int = 64  # training texts attacked per round (a fresh seeded sample each round)
    recipes: tuple[str, ...] = ("deepwordbug",)  # recipes taken in turn over a round's texts
    query_budget: int | None = 200  # model queries per attacked text (None: unlimited)
    fraction: float = 0.25  # share of every batch drawn from the adversarial pool

    def check(self, config: Config, methods: set[str]) -> None:
        """Positive sizes, known recipes, rounds inside the step budget, batch shares."""
        for name in ("rounds", "every", "examples"):
            _require(getattr(self, name) >= 1, f"distill.adv_train.{name}", f"must be >= 1, got {getattr(self, name)}")
        _positive(self.query_budget, "distill.adv_train.query_budget")
        _require(len(self.recipes) > 0, "distill.adv_train.recipes",
                 "must list at least one attack recipe (fix: e.g. [deepwordbug] or [deepwordbug, pwws])")
        for i, recipe in enumerate(self.recipes):
            _require(recipe in RECIPE_NAMES, f"distill.adv_train.recipes[{i}]",
                     f"unknown recipe {recipe!r} (known: {', '.join(RECIPE_NAMES)})")
            _require(recipe not in self.recipes[:i], f"distill.adv_train.recipes[{i}]", f"{recipe!r} is listed twice")
        value = self.fraction
        _require(0.0 < value < 1.0, "distill.adv_train.fraction", f"must be strictly between 0 and 1, got {value}")
        dist = config.distill
        if "adv_train" not in dist.methods:
            return
        last = self.rounds * self.every
        _require(last < dist.max_steps, "distill.adv_train.every",
                 f"{self.rounds} rounds every {self.every} steps end at step {last}, but "
                 f"distill.max_steps={dist.max_steps} leaves no KD step after the last round (fix: fewer "
                 "distill.adv_train.rounds, a smaller distill.adv_train.every, or more distill.max_steps)")
        share = int(round(value * dist.batch_size))
        other = int(round(dist.augment.fraction * dist.batch_size)) if "augment" in dist.methods else 0
        _require(share >= 1 and dist.batch_size - share - other >= 1, "distill.adv_train.fraction",
                 f"{value} of a batch of {dist.batch_size} gives {share} adversarial examples"
                 + (f" and augment takes {other}" if other else "") + f", leaving {dist.batch_size - share - other} clean; "
                 "each kind needs at least one (fix: a smaller fraction, or a larger distill.batch_size)")


@dataclass(frozen=True)
class AsccConfig:
    """``ascc``: KD at the worst point of each token's substitution hull (rosearch.distill.ascc)."""

    weight: float = 1.0  # weight of the hull-adversarial KD term beside the clean one
    steps: int = 2  # signed-gradient ascent steps on the hull weights per batch
    step_size: float = 1.0  # ascent step on the hull logits
    max_candidates: int = 16  # substitutes per token at most (its hull has max_candidates + 1 vertices)
    sources: tuple[str, ...] = ("wordnet", "counterfitted")  # PWWS's and TextFooler's candidate sets

    def check(self, config: Config, methods: set[str]) -> None:
        """Positive sizes and weights, known sources, and the neighbour table when it is a source."""
        for name in ("steps", "max_candidates"):
            _require(getattr(self, name) >= 1, f"distill.ascc.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("weight", "step_size"):
            _require(getattr(self, name) > 0, f"distill.ascc.{name}", f"must be > 0, got {getattr(self, name)}")
        _require(bool(self.sources), "distill.ascc.sources", "is empty (fix: [wordnet, counterfitted])")
        for i, source in enumerate(self.sources):
            _require(source in ("wordnet", "counterfitted"), f"distill.ascc.sources[{i}]",
                     f"unknown source {source!r} (known: wordnet, counterfitted)")
        _require("ascc" not in methods or "counterfitted" not in self.sources or config.attack.neighbors_path is not None,
                 "distill.ascc.sources", "has counterfitted but attack.neighbors_path is unset (fix: set "
                 "attack.neighbors_path to the counter-fitted neighbour table, or use sources: [wordnet])")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation of one student from the cached teacher outputs.

    ``methods`` switches on robust variants of the same trainer (descriptions and papers in
    ``rosearch.distill.methods.METHODS``); each method's knobs are its own section, named like
    the method (``distill.mate_kd.weight``), and are read only while the method is on. The flat
    spelling of earlier versions (``distill.mate_kd_weight``) still loads: :data:`LEGACY_METHOD_KEYS`.
    """

    alpha: float = 0.5  # weight of the soft (KL) term; 1 - alpha weights hard-label CE
    temperature: float = 2.0
    hidden_loss_weight: float = 0.0  # > 0 adds hidden-state MSE on mapped layers
    max_steps: int = 500
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 5e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    length_bucketing: bool = True
    dropout: float = 0.1
    methods: tuple[str, ...] = ()  # any of: augment, mate_kd, layer_kd, rift, adv_finetune, adv_train, ascc
    # one section per method (rosearch.choices.DISTILL_METHOD_NAMES), named like it
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mate_kd: MateKDConfig = field(default_factory=MateKDConfig)
    layer_kd: LayerKDConfig = field(default_factory=LayerKDConfig)
    rift: RiftConfig = field(default_factory=RiftConfig)
    adv_finetune: AdvFinetuneConfig = field(default_factory=AdvFinetuneConfig)
    adv_train: AdvTrainConfig = field(default_factory=AdvTrainConfig)
    ascc: AsccConfig = field(default_factory=AsccConfig)

    def method_config(self, name: str) -> Any:
        """The section of method ``name`` (a name of ``rosearch.choices.DISTILL_METHOD_NAMES``)."""
        if name not in DISTILL_METHOD_NAMES:
            raise KeyError(f"no distillation method {name!r} (known: {', '.join(DISTILL_METHOD_NAMES)})")
        return getattr(self, name)


@dataclass(frozen=True)
class EvolutionConfig:
    """The DEAP evolutionary loop."""

    population_size: int = 8
    generations: int = 3
    mutation_prob: float = 0.8
    crossover_prob: float = 0.3
    tournament_size: int = 3
    elitism: int = 2
    mode: Literal["weighted", "nsga2"] = "weighted"
    max_resample: int = 50  # attempts to draw a valid, unseen child before giving up
    # generational: a generation of population_size children at a time (waits for its slowest candidate);
    # aging: regularized evolution, a new child the moment a worker frees, the oldest leaves (weighted only);
    # random: random genomes only, the baseline. All make population_size x generations evaluations.
    # halving: asynchronous successive halving (ASHA) over the KD step budget: random genomes start at
    # the lowest rung, distill.max_steps / halving_eta^(halving_rungs-1) steps; whenever a worker frees,
    # a candidate in the top 1/halving_eta of its rung (highest rung first) is retrained from scratch at
    # halving_eta times the steps, else a new genome starts. It proposes until the KD steps submitted
    # reach what population_size x generations full-budget evaluations cost; the run ranks by budget first.
    strategy: Literal["generational", "aging", "random", "halving"] = "generational"
    halving_eta: int = 3  # halving: budget ratio between rungs, and 1/eta of a rung is promoted
    halving_rungs: int = 3  # halving: rungs of budgets, the last at distill.max_steps


@dataclass(frozen=True)
class WorkersConfig:
    """Where fitness evaluations run."""

    backend: Literal["ray", "inprocess"] = "ray"
    address: str | None = None  # None: start local Ray; "auto" or "host:port": join a cluster
    num_cpus_per_candidate: float = 1.0
    num_gpus_per_candidate: float = 0.0
    max_retries: int = 2
    timeout_s: float | None = None
    # seconds the driver waits for an explicit workers.address to answer as a Ray cluster (TCP, the
    # GCS handshake and ray.init together) before it gives up with a clear error instead of hanging
    connect_timeout_s: float = 30.0
    # Ray workers' own cache on each node (NLTK data, shipped teacher files); never the driver's
    # run.cache_dir, which a node without a shared file system does not have. None: the node's temp dir.
    cache_dir: str | None = None


@dataclass(frozen=True)
class FitnessConfig:
    """How accuracy, robustness and efficiency combine into one fitness."""

    accuracy_weight: float = 1.0
    robustness_weight: float = 1.0
    efficiency_weight: float = 0.1
    efficiency_metric: Literal["params", "flops", "latency"] = "params"


@dataclass(frozen=True)
class AttackConfig:
    """Adversarial robustness: which TextAttack recipe, on which examples, and when in a search.

    One seeded sample of ``num_examples`` dev examples is attacked per model. In a search
    (``enabled``), the teacher is attacked once on it (cached); its successful adversarial
    texts form the *proxy set* whose accuracy every candidate reports cheaply, and the full
    attack runs on the candidates that ``full_attack`` selects.
    """

    enabled: bool = False  # a search measures robustness (the fitness then has a robustness term)
    recipe: str = "pwws"  # a key of rosearch.attack.recipes.RECIPES (`rosearch attack`; the proxy's default)
    # The panel a search attacks candidates with; robustness = mean (or min, panel_aggregate) accuracy under attack over it, each
    # recipe's figures stored as attack.<recipe>.* ([] = [recipe], as before this field existed).
    recipes: tuple[str, ...] = ("deepwordbug", "pwws")
    # How the panel's accuracies under attack become the one robustness figure the fitness uses:
    # "mean" over the recipes, or "min" (the worst attack: a student must resist each one, so one
    # defense that stops one attack cannot buy the whole robustness term).
    panel_aggregate: Literal["mean", "min"] = "mean"
    num_examples: int = 200  # seeded sample attacked per model (the validation slice; dev when it is off)
    query_budget: int | None = None  # model queries per example (None: unlimited, as in the papers)
    model_batch_size: int = 64  # texts per model forward during an attack
    num_workers: int = 1  # CPU processes sharing one attack's examples (results are identical for any value)
    seed: int = 0  # picks the attacked sample (and seeds the recipes' randomness)
    proxy: bool = False  # also score every candidate on the teacher's adversarial examples (cheap signal)
    proxy_recipe: str | None = None  # recipe that builds the proxy set (default: `recipe`)
    # Which candidates get the panel: all (default; it is the fitness' robustness), top_k (the proxy is
    # the fitness figure), multi_fidelity (every candidate gets the panel's first recipe, which is the
    # fitness figure; the top_k of each generation and of the run get the whole panel), none.
    full_attack: Literal["top_k", "all", "none", "multi_fidelity"] = "all"
    top_k: int = 2  # with top_k/multi_fidelity: the best k new candidates of each generation, and the final top k
    neighbors_path: str | None = None  # counter-fitted synonym-neighbour table (.json or .json.gz)
    nltk_data: str | None = None  # NLTK data dir rosearch provisions (default: <run.cache_dir>/nltk_data)
    wordnet_dir: str | None = None  # WordNet 3.0 database (default: $ROSEARCH_WORDNET_DIR or /usr/share/wordnet)
    sentence_encoder: str | None = None  # offline stand-in for USE in textfooler-local (a model dir or pkg:...)


@dataclass(frozen=True)
class DefenseConfig:
    """How the student's input defenses are built (which ones a candidate carries is part of its
    genome: ``search_space.defenses`` and ``search_space.defense_choices``).

    Word recognition's lexicon and frequency prior are the task's training text; synonym
    clusters come from WordNet (``attack.wordnet_dir``) and ``attack.neighbors_path``.
    """

    max_edit_distance: int = 2  # word recognition: furthest known word an unknown word may map to
    backoff: Literal["neutral", "keep"] = "neutral"  # unknown word with no known word in reach: neutral word, or keep
    neutral_word: str = "unk"  # what `backoff: neutral` maps such words to (a lower-case letter word)
    synonym_sources: tuple[str, ...] = ("wordnet", "counterfitted")  # relations the synonym clusters are built from


@dataclass(frozen=True)
class Config:
    """The whole run. Build it with :func:`load_config` or :func:`config_from_dict`."""

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

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """Stable short hash of the whole config (for run metadata); method knobs hashed flat, as before their sections."""
        blob = json.dumps(flatten_method_keys(self.to_dict()), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def results_fingerprint(self) -> str:
        """Hash of the fields that decide a run's results; a resumed run must keep it.

        Where and how fast candidates run (``workers``, ``run.device``, threads, logging) and how
        many generations to go (``evolution.generations``, so a finished run can be extended)
        are left out: changing them on ``--resume`` is safe. The method sections are hashed in
        their flat spelling (:func:`flatten_method_keys`), so a run stored before they existed keeps
        its fingerprint.
        """
        data = flatten_method_keys(self.to_dict())
        if not config_uses_defenses(self):  # runs made before defenses existed keep their fingerprint
            data.pop("defense")
            for key in ("defenses", "defense_choices"):
                data["search_space"].pop(key)
        data = without_legacy_defaults(data)
        for section, key in RESUMABLE_FIELDS:
            if key is None:
                data.pop(section, None)
            else:
                data[section].pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def without_legacy_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a config as a dict) without the fields that hold their LEGACY_DEFAULTS value: hashed
    this way, a key computed before such a field existed stays the same (results, caches)."""
    data = json.loads(json.dumps(data))
    for (section, key), legacy in LEGACY_DEFAULTS.items():
        if key in data.get(section, {}) and data[section][key] == legacy:
            data[section].pop(key)
    return data


def methods_used(config: Config) -> tuple[str, ...]:
    """Every distillation method some candidate of the run may use: ``distill.methods`` (all of them)
    plus ``search_space.training_choices`` (the training gene). The run prepares inputs for these once."""
    return tuple(config.distill.methods) + tuple(
        m for m in config.search_space.training_choices if m not in config.distill.methods)


def with_methods(config: Config, methods: Sequence[str]) -> Config:
    """``config`` whose ``distill.methods`` is ``methods`` (one candidate's, or a run's whole set)."""
    return dataclasses.replace(config, distill=dataclasses.replace(config.distill, methods=tuple(methods)))


def config_uses_defenses(config: Config) -> bool:
    """Whether any candidate of the run carries a defense, or the defense section is set."""
    default = _to_plain(dataclasses.asdict(DefenseConfig()))
    return bool(config.search_space.defenses_used()) or _to_plain(dataclasses.asdict(config.defense)) != default
VALIDATION_MAX_SHARE = 0.2  # the validation slice takes at most this share of the train split

# Fields added after runs were stored, with the value an old stored config (which lacks them) meant.
# They fill such configs in (:func:`with_legacy_defaults`) and leave the results fingerprint alone
# while they hold that value, so an old run still resumes, reports and exports as it did.
LEGACY_DEFAULTS: dict[tuple[str, str], Any] = {
    ("data", "validation_size"): 0,
    ("data", "validation_min_words"): 0,
    ("attack", "recipes"): [],
    ("search_space", "training_choices"): [],
    ("attack", "panel_aggregate"): "mean",
    ("evolution", "strategy"): "generational",
    ("evolution", "halving_eta"): 3,
    ("evolution", "halving_rungs"): 3,
    ("teacher", "adversarial"): None,
    ("teacher", "adversarial_weight"): 1.0,
    ("teacher", "adversarial_steps"): 2,
    **{("data", key): value for key, value in (
        ("train_file", None), ("dev_file", None), ("dataset_name", None), ("dataset_config", None),
        ("train_split", "train"), ("dev_split", None), ("text_columns", []), ("label_column", "label"),
        ("label_names", []), ("dev_share", 0.1))},
    ("run", "report_to"): [],
    ("distill", "ascc"): {"weight": 1.0, "steps": 2, "step_size": 1.0, "max_candidates": 16,
                          "sources": ["wordnet", "counterfitted"]},
}


# The flat spelling of the method knobs before each method had its own section of distill:
# old key -> (method, field). Files, --set overrides and stored runs may still use it
# (:func:`nest_method_keys`); hashes of a config use it (:func:`flatten_method_keys`), so that keys
# computed before the sections existed stay the same. A method added later needs no entry.
LEGACY_METHOD_KEYS: Mapping[str, tuple[str, str]] = types.MappingProxyType({
    **{f"augment_{name}": ("augment", name) for name in ("recipes", "per_example", "limit", "fraction", "pct_words")},
    **{f"mate_kd_{name}": ("mate_kd", name) for name in (
        "weight", "mask_prob", "generator_steps", "generator_every", "generator_lr", "gumbel_temperature",
        "generator_layers", "pretrain_steps")},
    "layer_kd_weight": ("layer_kd", "weight"),
    "attention_loss_weight": ("layer_kd", "attention_weight"),
    **{f"rift_{name}": ("rift", name) for name in ("weight", "temperature")},
    **{f"adv_finetune_{name}": ("adv_finetune", name) for name in ("steps", "examples", "recipe", "lr", "fraction")},
    **{f"adv_train_{name}": ("adv_train", name) for name in (
        "rounds", "every", "examples", "recipes", "query_budget", "fraction")},
})


def nest_method_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a config as parsed) with the flat method keys (``distill.mate_kd_weight``) moved into
    their method's section (``distill.mate_kd.weight``): files and runs written before the sections load.

    A copy when anything moves (``data`` itself is left as it was); giving one knob in both spellings
    is refused, since nothing says which one was meant.
    """
    dist = data.get("distill")
    if not isinstance(dist, dict) or not any(key in dist for key in LEGACY_METHOD_KEYS):
        return data
    dist = dict(dist)
    moved = []
    for old, (method, name) in LEGACY_METHOD_KEYS.items():
        if old not in dist:
            continue
        section = dist.get(method) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"config field 'distill.{method}': expected a mapping of keys, got {section!r}")
        if name in section:
            raise ConfigError(f"config field 'distill.{old}': is the old spelling of distill.{method}.{name}, which is "
                              f"also set (fix: keep only distill.{method}.{name})")
        dist[method] = {**section, name: dist.pop(old)}
        moved.append(f"distill.{old} -> distill.{method}.{name}")
    more = f" and {len(moved) - 2} more" if len(moved) > 2 else ""
    logger.info("config: %d method knob(s) in the old flat spelling read into their sections (%s%s); "
                "the flat spelling is deprecated", len(moved), ", ".join(moved[:2]), more)
    return {**data, "distill": dist}


def flatten_method_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` (a config as a dict) with the method knobs spelled flat, as before the method
    sections existed: what fingerprints and cache keys hash, so those computed back then stay the same."""
    out = json.loads(json.dumps(data))
    dist = out.get("distill")
    if not isinstance(dist, dict):
        return out
    for old, (method, name) in LEGACY_METHOD_KEYS.items():
        section = dist.get(method)
        if isinstance(section, dict) and name in section:
            dist[old] = section.pop(name)
    for method in DISTILL_METHOD_NAMES:
        if dist.get(method) == {}:
            dist.pop(method)
    return out


def _current_path(parts: list[str]) -> list[str]:
    """An override's key path, an old flat method key (``distill.mate_kd_weight``) spelled as its section's."""
    if len(parts) == 2 and parts[0] == "distill" and parts[1] in LEGACY_METHOD_KEYS:
        method, name = LEGACY_METHOD_KEYS[parts[1]]
        logger.info("config: --set distill.%s is now distill.%s.%s; the flat spelling is deprecated", parts[1], method, name)
        return ["distill", method, name]
    return parts


# Fields whose default changed, with the old default: a run stored under it, resumed with a config
# that does not set the field, goes on with the old value (see :func:`resume_as_stored`).
CHANGED_DEFAULTS: dict[tuple[str, str], Any] = {
    ("attack", "proxy"): True,
    ("attack", "full_attack"): "top_k",
}


def with_legacy_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored config dict with the fields it predates set to what it meant then."""
    out = json.loads(json.dumps(data))
    for (section, key), value in LEGACY_DEFAULTS.items():
        if isinstance(out.get(section), dict) and key not in out[section]:
            out[section][key] = value
    return out


def resume_as_stored(config: Config, stored: dict[str, Any] | None) -> Config:
    """``config`` with the fields an old stored run predates set to what that run meant.

    A resumed run must go on as it started: where the stored config lacks a field and ``config``
    holds the field's default (the user did not choose it), the legacy value is used instead;
    likewise where a default changed (:data:`CHANGED_DEFAULTS`) and the run stored the old one.
    """
    if not stored:
        return config
    changes: dict[str, dict[str, Any]] = {}
    for (section, key), legacy in LEGACY_DEFAULTS.items():
        current = getattr(getattr(config, section), key)
        default = next(f for f in dataclasses.fields(getattr(config, section)) if f.name == key).default
        if key not in (stored.get(section) or {}) and current == default:
            changes.setdefault(section, {})[key] = tuple(legacy) if isinstance(legacy, list) else legacy
    for (section, key), old_default in CHANGED_DEFAULTS.items():
        current = getattr(getattr(config, section), key)
        default = next(f for f in dataclasses.fields(getattr(config, section)) if f.name == key).default
        if (stored.get(section) or {}).get(key) == old_default and current == default:
            changes.setdefault(section, {})[key] = old_default
    if not changes:
        return config
    resumed = dataclasses.replace(config, **{
        section: dataclasses.replace(getattr(config, section), **values) for section, values in changes.items()
    })
    validate(resumed)
    return resumed


RESUMABLE_FIELDS: tuple[tuple[str, str | None], ...] = (
    ("workers", None), ("run", "device"), ("run", "num_threads"), ("run", "log_level"), ("evolution", "generations"),
    ("attack", "model_batch_size"), ("attack", "nltk_data"), ("attack", "num_workers"), ("run", "max_failed_share"),
    ("run", "report_to"),
)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

# YAML 1.2's exponent floats (1e-3, 1.0e6, 2E+5), which PyYAML's YAML 1.1 rule reads as strings
# because it wants a dot and a signed exponent
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads YAML 1.2 exponent floats as numbers (a copy of the
    resolver table: yaml.SafeLoader itself is left as it was)."""


_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """``text`` parsed as YAML, with ``1e-3`` a float as in YAML 1.2 (config files and ``--set`` values)."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML or TOML file (or nothing), apply ``a.b=value`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist (fix: pass --config PATH)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not UTF-8 text ({exc}) (fix: save it as UTF-8)") from exc
        except OSError as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc} (fix: check its permissions)") from exc
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            else:
                data = parse_yaml(text) or {}
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix[1:] or 'YAML'}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    data = nest_method_keys(data)  # before the overrides, which may set the same knob in either spelling
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override in place; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. distill.alpha=0.3)")
    parts = _current_path(key.strip().split("."))
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value {raw!r}: {exc}") from exc
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data (as parsed from YAML)."""
    config = _build(Config, nest_method_keys(data), "")
    validate(config)
    return config


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        where = path or "config"
        raise ConfigError(f"config field {where!r}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config field {path!r}: {value!r} fits none of {options}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config field {path!r}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field {path!r}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field {path!r}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config field {path!r}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config field {path!r}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .inf/.nan would pass every range check below
            raise ConfigError(f"config field {path!r}: must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field {path!r}: expected a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path!r}")  # a bug in this module


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_adversarial_teacher(config: Config) -> None:
    """``teacher.adversarial``: a known kind, positive knobs, a teacher rosearch fine-tunes, its resources."""
    teacher = config.teacher
    if teacher.adversarial is None:
        return
    _require(teacher.adversarial == "ascc", "teacher.adversarial",
             f"unknown kind {teacher.adversarial!r} (known: ascc; or leave it unset for plain fine-tuning)")
    _require(not teacher.finetuned, "teacher.adversarial",
             "asks for adversarial fine-tuning, but teacher.finetuned=true uses the model as it is (fix: set "
             "teacher.finetuned=false so rosearch fine-tunes it, or unset teacher.adversarial)")
    _require(teacher.adversarial_weight > 0, "teacher.adversarial_weight", f"must be > 0, got {teacher.adversarial_weight}")
    _require(teacher.adversarial_steps >= 1, "teacher.adversarial_steps", f"must be >= 1, got {teacher.adversarial_steps}")
    _require(config.attack.neighbors_path is not None, "teacher.adversarial",
             "needs the counter-fitted neighbour table for its substitution hulls (fix: set attack.neighbors_path)")


def _require(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config field {path!r}: {message}")


def _positive(value: float | int | None, path: str) -> None:
    if value is not None:
        _require(value > 0, path, f"must be > 0, got {value!r}")


def _fraction(value: float, path: str) -> None:
    _require(0.0 <= value <= 1.0, path, f"must be between 0 and 1, got {value!r}")


# characters a run name may not hold besides separators: it becomes a directory name, a Markdown heading
# and code span in exported model cards, and an argument users paste into shells
_NAME_FORBIDDEN = "`<>\"|*?$"


def check_path_name(name: str, path: str) -> None:
    """A user-given name that becomes one directory level: it must not climb out of its parent.

    ``..``, ``.``, separators and NUL would let a run write into (and overwrite) ``output_dir``'s
    parent or elsewhere, so they are refused here, before anything touches the disk. Control
    characters (a newline makes a directory nobody can type) and the characters of
    :data:`_NAME_FORBIDDEN` (Markdown and HTML in the model card, shell globs and quotes) are refused too.
    """
    bad = [c for c in ("/", "\\", "\0") if c in name]
    _require(bool(name.strip()) and name not in (".", "..") and not bad, path,
             f"must be a plain directory name (no '..', '/', '\\\\' or NUL, not empty), got {name!r} "
             "(fix: e.g. run.name=sst2-search-1)")
    odd = sorted({c for c in name if unicodedata.category(c).startswith("C") or c in _NAME_FORBIDDEN})
    _require(not odd, path,
             f"must not hold control characters or any of {_NAME_FORBIDDEN}, got {name!r} (it holds "
             f"{', '.join(repr(c) for c in odd)}) (fix: letters, digits, '-', '_' and '.', e.g. run.name=sst2-search-1)")


def validate(config: Config) -> None:
    """Check values that types alone cannot; raise :class:`ConfigError` on the first problem."""
    run, data, teacher = config.run, config.data, config.teacher
    check_path_name(run.name, "run.name")
    _fraction(run.max_failed_share, "run.max_failed_share")
    device = run.device
    _require(
        device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()),
        "run.device", f"must be auto, cpu, cuda or cuda:N, got {device!r}",
    )
    _positive(run.num_threads, "run.num_threads")
    for i, name in enumerate(run.report_to):
        _require(name in REPORT_TO_NAMES, f"run.report_to[{i}]",
                 f"unknown tracker {name!r} (known: {', '.join(REPORT_TO_NAMES)})")
        _require(name not in run.report_to[:i], f"run.report_to[{i}]", f"tracker {name!r} is listed twice")

    _positive(data.max_length, "data.max_length")
    _require(data.max_length <= 4096, "data.max_length", f"{data.max_length} is larger than any supported model")
    _positive(data.train_limit, "data.train_limit")
    _positive(data.dev_limit, "data.dev_limit")
    _require(data.validation_size >= 0, "data.validation_size",
             f"must be >= 0 (0: select on the dev split, as old runs did), got {data.validation_size}")
    _require(data.validation_min_words >= 0, "data.validation_min_words",
             f"must be >= 0 (0: any train example may enter the validation slice), got {data.validation_min_words}")
    if data.data_dir is not None:
        _require(Path(data.data_dir).expanduser().exists(), "data.data_dir",
                 f"directory {data.data_dir!r} does not exist (fix: point it at the task's files, or unset it to use HF datasets)")
    _validate_own_data(data)

    _require(bool(teacher.model), "teacher.model", "must name a directory, hub id or pkg:<package>/<dir>")
    _positive(teacher.epochs, "teacher.epochs")
    _positive(teacher.max_steps, "teacher.max_steps")
    _positive(teacher.train_limit, "teacher.train_limit")
    _positive(teacher.batch_size, "teacher.batch_size")
    _positive(teacher.eval_batch_size, "teacher.eval_batch_size")
    _positive(teacher.learning_rate, "teacher.learning_rate")
    _fraction(teacher.warmup_ratio, "teacher.warmup_ratio")
    _require(teacher.weight_decay >= 0, "teacher.weight_decay", f"must be >= 0, got {teacher.weight_decay}")
    _check_adversarial_teacher(config)
    for i, layer in enumerate(teacher.cache_hidden_layers):
        _require(layer >= 0, f"teacher.cache_hidden_layers[{i}]", f"layer indices are >= 0 (0 = embeddings), got {layer}")

    space = config.search_space
    for name in ("hidden_sizes", "embedding_sizes", "num_layers", "attention_heads", "kernel_sizes", "ffn_ratios"):
        values = getattr(space, name)
        _require(len(values) > 0, f"search_space.{name}", "must list at least one value")
        for i, v in enumerate(values):
            _positive(v, f"search_space.{name}[{i}]")
    _require(space.nodes_per_cell >= 3, "search_space.nodes_per_cell",
             f"a cell needs input, output and at least one operation node (>= 3), got {space.nodes_per_cell}")
    _require(space.max_edges >= space.nodes_per_cell - 1, "search_space.max_edges",
             f"a cell of {space.nodes_per_cell} nodes needs at least {space.nodes_per_cell - 1} edges to connect them, "
             f"got {space.max_edges} (fix: raise max_edges or lower nodes_per_cell)")
    _require(len(space.op_families) > 0, "search_space.op_families", "must list at least one operation family")
    for i, fam in enumerate(space.op_families):
        _require(fam in OP_FAMILIES, f"search_space.op_families[{i}]",
                 f"unknown operation family {fam!r} (known: {', '.join(OP_FAMILIES)})")
    for i, act in enumerate(space.activations):
        _require(act in ACTIVATIONS, f"search_space.activations[{i}]",
                 f"unknown activation {act!r} (known: {', '.join(ACTIVATIONS)})")
    if "attn" in space.op_families:
        for h in space.hidden_sizes:
            for heads in space.attention_heads:
                _require(h % heads == 0, "search_space.hidden_sizes",
                         f"hidden size {h} is not divisible by {heads} attention heads "
                         "(fix: use hidden sizes divisible by every value of search_space.attention_heads)")
    for i, k in enumerate(space.kernel_sizes):
        _require(k % 2 == 1, f"search_space.kernel_sizes[{i}]", f"kernel sizes must be odd (same-length padding), got {k}")
    _positive(space.param_budget, "search_space.param_budget")

    dist = config.distill
    _fraction(dist.alpha, "distill.alpha")
    _positive(dist.temperature, "distill.temperature")
    _require(dist.hidden_loss_weight >= 0, "distill.hidden_loss_weight", f"must be >= 0, got {dist.hidden_loss_weight}")
    if dist.hidden_loss_weight > 0:
        _require(len(teacher.cache_hidden_layers) > 0, "distill.hidden_loss_weight",
                 "hidden-state loss needs cached teacher layers (fix: set teacher.cache_hidden_layers, e.g. [2, 4, 6])")
    for name in ("max_steps", "batch_size", "eval_batch_size", "learning_rate", "max_grad_norm"):
        _positive(getattr(dist, name), f"distill.{name}")
    _fraction(dist.warmup_ratio, "distill.warmup_ratio")
    _fraction(dist.dropout, "distill.dropout")
    _require(dist.weight_decay >= 0, "distill.weight_decay", f"must be >= 0, got {dist.weight_decay}")
    _validate_distill_methods(config)

    evo = config.evolution
    _require(evo.population_size >= 2, "evolution.population_size",
             f"a population needs at least 2 individuals, got {evo.population_size}")
    _require(evo.generations >= 1, "evolution.generations", f"must be >= 1, got {evo.generations}")
    _fraction(evo.mutation_prob, "evolution.mutation_prob")
    _fraction(evo.crossover_prob, "evolution.crossover_prob")
    _require(evo.tournament_size >= 1, "evolution.tournament_size", f"must be >= 1, got {evo.tournament_size}")
    _require(0 <= evo.elitism < evo.population_size, "evolution.elitism",
             f"must be in [0, population_size), got {evo.elitism} with population_size {evo.population_size}")
    _positive(evo.max_resample, "evolution.max_resample")
    _require(not (evo.strategy == "aging" and evo.mode == "nsga2"), "evolution.strategy",
             "aging evolution runs tournaments on one fitness, so it needs evolution.mode=weighted "
             "(fix: set evolution.mode=weighted, or evolution.strategy=generational or random for NSGA-II)")
    _validate_halving(config)

    workers = config.workers
    _require(workers.num_cpus_per_candidate > 0, "workers.num_cpus_per_candidate",
             f"must be > 0, got {workers.num_cpus_per_candidate}")
    _require(workers.num_gpus_per_candidate >= 0, "workers.num_gpus_per_candidate",
             f"must be >= 0, got {workers.num_gpus_per_candidate}")
    _require(workers.max_retries >= 0, "workers.max_retries", f"must be >= 0, got {workers.max_retries}")
    _positive(workers.timeout_s, "workers.timeout_s")
    _require(0 < workers.connect_timeout_s <= 3600, "workers.connect_timeout_s",
             f"must be > 0 and at most 3600 seconds, got {workers.connect_timeout_s!r} (fix: e.g. 30)")
    if workers.backend == "ray" and run.device.startswith("cuda") and workers.num_gpus_per_candidate == 0:
        raise ConfigError(
            f"config field 'workers.num_gpus_per_candidate': run.device={run.device!r} needs a GPU per candidate, "
            "but Ray hides GPUs from tasks that ask for none (fix: set workers.num_gpus_per_candidate, e.g. 0.5)"
        )
    if workers.address is not None:
        _require(workers.backend == "ray", "workers.address", "is only used by the ray backend (fix: set workers.backend=ray)")

    _validate_attack(config)
    _validate_defense(config)

    fit = config.fitness
    for name in ("accuracy_weight", "robustness_weight", "efficiency_weight"):
        _require(getattr(fit, name) >= 0, f"fitness.{name}", f"must be >= 0, got {getattr(fit, name)}")
    _require(
        not (fit.efficiency_metric == "latency" and evo.mode == "weighted" and fit.efficiency_weight > 0),
        "fitness.efficiency_metric",
        "latency has no teacher reference to normalise against in weighted mode "
        "(fix: use params or flops, set fitness.efficiency_weight=0, or evolution.mode=nsga2)",
    )


def _validate_own_data(data: DataConfig) -> None:
    """The fields naming a user's own data: one source, one or two text columns, declared labels that
    make a classifier; none of them with a built-in task, whose files and columns are fixed."""
    own = data.train_file is not None or data.dataset_name is not None
    fields = {"dev_file": None, "dataset_config": None, "train_split": "train", "dev_split": None, "text_columns": (),
              "label_column": "label", "label_names": (), "dev_share": 0.1}
    if not own:
        for name, default in fields.items():
            _require(getattr(data, name) == default, f"data.{name}",
                     f"is only read for your own data, but data.train_file and data.dataset_name are unset, so the built-in "
                     f"task {data.task!r} is used (fix: set data.train_file or data.dataset_name, or drop data.{name})")
        return
    _require(data.task not in BUILTIN_TASKS, "data.task",
             f"{data.task!r} is a built-in task, but data.train_file / data.dataset_name name your own data "
             "(fix: give your data its own name, e.g. data.task=tickets)")
    check_path_name(data.task, "data.task")
    _require(data.train_file is None or data.dataset_name is None, "data.dataset_name",
             "and data.train_file are both set (fix: keep one source: local files or a hub dataset)")
    if data.train_file is not None:
        for name in ("dataset_config", "dev_split"):
            _require(getattr(data, name) is None, f"data.{name}", "is a hub setting, but data.train_file names local "
                     f"files (fix: drop data.{name}, or use data.dataset_name)")
    else:
        _require(data.dev_file is None, "data.dev_file", "is a local file, but data.dataset_name names a hub dataset "
                 "(fix: use data.dev_split, or data.train_file)")
    _require(len(data.text_columns) in (1, 2), "data.text_columns",
             f"must name one text column (or two for a sentence-pair task), got {list(data.text_columns)} "
             "(fix: e.g. data.text_columns=[text])")
    _require(len(set(data.text_columns)) == len(data.text_columns) and all(data.text_columns), "data.text_columns",
             f"names must be distinct and non-empty, got {list(data.text_columns)}")
    _require(bool(data.label_column) and data.label_column not in data.text_columns, "data.label_column",
             f"must name a column other than the text column(s), got {data.label_column!r}")
    if data.label_names:
        _require(len(data.label_names) >= 2, "data.label_names",
                 f"a classifier needs at least two classes, got {list(data.label_names)} (fix: list every class, or drop "
                 "data.label_names to read them off the training labels)")
        _require(len(set(data.label_names)) == len(data.label_names) and all(n.strip() == n and n for n in data.label_names),
                 "data.label_names", f"names must be distinct, non-empty and without surrounding spaces, got "
                 f"{list(data.label_names)}")
    _require(0.0 < data.dev_share <= 0.5, "data.dev_share",
             f"must be in (0, 0.5] (the share of train held out as dev when there is no dev file), got {data.dev_share}")


def halving_budgets(max_steps: int, eta: int, rungs: int) -> tuple[int, ...]:
    """KD step budgets of the successive-halving rungs, lowest first: ``max_steps // eta^k``, k = rungs-1..0."""
    return tuple(max_steps // eta**k for k in range(rungs - 1, -1, -1))


def _validate_halving(config: Config) -> None:
    """Successive halving's rungs: eta >= 2, at least 2 rungs, a lowest budget of at least one KD step,
    enough evaluations to reach the full budget, and methods whose schedules fit the smallest budget."""
    evo, dist = config.evolution, config.distill
    _require(evo.halving_eta >= 2, "evolution.halving_eta", f"must be >= 2 (the budget ratio between rungs), got {evo.halving_eta}")
    _require(evo.halving_rungs >= 2, "evolution.halving_rungs",
             f"must be >= 2, got {evo.halving_rungs} (fix: 2 or more, or evolution.strategy=random for one budget)")
    if evo.strategy != "halving":
        return
    lowest = halving_budgets(dist.max_steps, evo.halving_eta, evo.halving_rungs)[0]
    _require(lowest >= 1, "evolution.halving_rungs",
             f"distill.max_steps={dist.max_steps} / halving_eta^{evo.halving_rungs - 1} = {lowest} steps at the lowest "
             "rung (fix: fewer evolution.halving_rungs, a smaller evolution.halving_eta, or more distill.max_steps)")
    _require(evo.population_size * evo.generations >= evo.halving_rungs, "evolution.generations",
             f"population_size x generations = {evo.population_size * evo.generations} full-budget evaluations of "
             f"work cannot bring a candidate through {evo.halving_rungs} rungs (that takes at least {evo.halving_rungs}; "
             "fix: more evolution.generations or fewer evolution.halving_rungs)")
    if "adv_train" in methods_used(config):
        adv = dist.adv_train
        last = adv.rounds * adv.every
        _require(last < lowest, "distill.adv_train.every",
                 f"{adv.rounds} adv_train rounds every {adv.every} steps end at step {last}, but "
                 f"successive halving's lowest rung trains {lowest} steps (fix: a smaller distill.adv_train.every or "
                 "fewer rounds, fewer evolution.halving_rungs, or evolution.strategy=random)")


def _validate_distill_methods(config: Config) -> None:
    """The robust KD methods of the distill section and their knobs (see rosearch.distill.methods)."""
    dist = config.distill
    for i, name in enumerate(dist.methods):
        _require(name in DISTILL_METHOD_NAMES, f"distill.methods[{i}]",
                 f"unknown method {name!r} (known: {', '.join(DISTILL_METHOD_NAMES)})")
        _require(name not in dist.methods[:i], f"distill.methods[{i}]", f"method {name!r} is listed twice")
    for i, name in enumerate(config.search_space.training_choices):
        field_name = f"search_space.training_choices[{i}]"
        _require(name in DISTILL_METHOD_NAMES, field_name, f"unknown method {name!r} (known: {', '.join(DISTILL_METHOD_NAMES)})")
        _require(name not in config.search_space.training_choices[:i], field_name, f"method {name!r} is listed twice")
        _require(name not in dist.methods, field_name, f"{name!r} is also in distill.methods (every candidate uses "
                 "it), so the search cannot switch it off (fix: list it in one of the two)")
    methods = set(methods_used(config))  # what some candidate may distil with: its knobs must be usable
    for name in DISTILL_METHOD_NAMES:
        dist.method_config(name).check(config, methods)


def _batch_share(value: float, method: str, batch_size: int, methods: set[str]) -> None:
    """``distill.<method>.fraction``: strictly inside (0, 1) and, with the method on, at least one example of each kind."""
    path = f"distill.{method}.fraction"
    _require(0.0 < value < 1.0, path, f"must be strictly between 0 and 1, got {value}")
    share = int(round(value * batch_size))
    _require(method not in methods or 1 <= share <= batch_size - 1, path,
             f"{value} of a batch of {batch_size} leaves {share} examples of one kind and "
             f"{batch_size - share} of the other; both need at least one "
             "(fix: a fraction nearer 0.5, or a larger distill.batch_size)")


def _validate_attack(config: Config) -> None:
    """The attack section: known recipes, positive sizes, and a robustness signal for every candidate."""
    attack = config.attack
    names = RECIPE_NAMES
    for field_name in ("recipe", "proxy_recipe"):
        value = getattr(attack, field_name)
        if value is not None:
            _require(value in names, f"attack.{field_name}", f"unknown recipe {value!r} (known: {', '.join(names)})")
    for i, value in enumerate(attack.recipes):
        _require(value in names, f"attack.recipes[{i}]", f"unknown recipe {value!r} (known: {', '.join(names)})")
        _require(value not in attack.recipes[:i], f"attack.recipes[{i}]", f"recipe {value!r} is listed twice")
    _positive(attack.num_examples, "attack.num_examples")
    _positive(attack.query_budget, "attack.query_budget")
    _positive(attack.model_batch_size, "attack.model_batch_size")
    _positive(attack.num_workers, "attack.num_workers")
    _require(attack.top_k >= 1, "attack.top_k", f"must be >= 1, got {attack.top_k}")
    if attack.neighbors_path is not None:
        _require(Path(attack.neighbors_path).expanduser().is_file(), "attack.neighbors_path",
                 f"file {attack.neighbors_path!r} does not exist (fix: point it at a synonym-neighbour table, "
                 "e.g. ../shared/data/embeddings/counterfitted_neighbors.json.gz)")
    if attack.enabled and config.fitness.robustness_weight > 0 and not attack.proxy and attack.full_attack in ("top_k", "none"):
        raise ConfigError(
            "config field 'attack.proxy': the fitness has a robustness term, so every candidate needs a robustness "
            f"figure, but attack.proxy is off and attack.full_attack={attack.full_attack!r} attacks only some "
            "(fix: set attack.proxy=true, attack.full_attack=all or multi_fidelity, or fitness.robustness_weight=0)"
        )


# Distillation methods that tie the student's tokens to the teacher's (per-token targets) or encode
# their own texts without the defense; a synonym-encoded student sees other tokens, so they cannot
# be combined yet. adv_finetune and adv_train pass their texts through the student's defense.
_TOKEN_ALIGNED_METHODS = ("layer_kd", "augment")


def _validate_defense(config: Config) -> None:
    """Defense genes and the defense section: known names, resources to build from, compatible methods."""
    defense, space = config.defense, config.search_space
    for field_name in ("defenses", "defense_choices"):
        values = getattr(space, field_name)
        unknown = [v for v in values if v not in DEFENSE_NAMES]
        _require(not unknown, f"search_space.{field_name}",
                 f"unknown defense(s) {unknown} (known: {', '.join(DEFENSE_NAMES)})")
        _require(len(set(values)) == len(values), f"search_space.{field_name}", f"names repeat: {list(values)}")
    overlap = sorted(set(space.defense_choices) & set(space.defenses))
    _require(not overlap, "search_space.defense_choices", f"{overlap} are also in search_space.defenses (always on), "
             "so the search cannot switch them off (fix: list each defense in one of the two)")
    _require(1 <= defense.max_edit_distance <= 3, "defense.max_edit_distance",
             f"must be 1, 2 or 3, got {defense.max_edit_distance}")
    _require(defense.neutral_word.isalpha() and defense.neutral_word.islower(), "defense.neutral_word",
             f"must be one lower-case word of letters, got {defense.neutral_word!r}")
    unknown_sources = [s for s in defense.synonym_sources if s not in ("wordnet", "counterfitted")]
    _require(not unknown_sources, "defense.synonym_sources",
             f"unknown source(s) {unknown_sources} (known: wordnet, counterfitted)")
    if SYNONYM_ENCODING in space.defenses_used():
        _require(bool(defense.synonym_sources), "defense.synonym_sources", "is empty, so synonym encoding has no "
                 "synonyms (fix: list wordnet and/or counterfitted)")
        if "counterfitted" in defense.synonym_sources:
            _require(config.attack.neighbors_path is not None, "attack.neighbors_path",
                     "is unset, but synonym encoding reads the counter-fitted neighbour table from it (fix: set it, "
                     "e.g. ../shared/data/embeddings/counterfitted_neighbors.json.gz, or drop counterfitted from "
                     "defense.synonym_sources)")
        clash = [m for m in methods_used(config) if m in _TOKEN_ALIGNED_METHODS]
        _require(not clash and config.distill.hidden_loss_weight == 0, "distill.methods",
                 f"{clash or ['hidden_loss_weight']} align the student's tokens with the teacher's, which synonym "
                 "encoding changes (fix: drop them from distill.methods / search_space.training_choices, or drop "
                 "synonym_encoding from search_space.defenses and defense_choices)")
def attack_panel(attack: AttackConfig) -> tuple[str, ...]:
    """The recipes a search attacks candidates with (``attack.recipes``, or ``attack.recipe`` alone)."""
    return tuple(attack.recipes) or (attack.recipe,)
