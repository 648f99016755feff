"""The config sections other than ``distill``: each a frozen dataclass that checks its own values.

``check()`` raises :class:`~rosearch.config.checks.ConfigError` on the first value the types alone
cannot rule out; rules that join two sections live in :func:`rosearch.config.tree.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rosearch.choices import (
    ACTIVATIONS,
    BUILTIN_TASKS,
    DEFENSE_NAMES,
    OP_FAMILIES,
    RECIPE_NAMES,
    REPORT_TO_NAMES,
    STRATEGY_NAMES,
)
from rosearch.config.checks import above_zero, at_least, check_path_name, fraction, known_distinct, positive, require

VALIDATION_MAX_SHARE = 0.2  # the validation slice takes at most this share of the train split
SYNONYM_SOURCES = ("wordnet", "counterfitted")  # WordNet relations and the counter-fitted neighbour table


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

    def check(self) -> None:
        check_path_name(self.name, "run.name")
        known_distinct(self.report_to, REPORT_TO_NAMES, "run.report_to", "tracker")
        fraction(self.max_failed_share, "run.max_failed_share")
        device = self.device
        require(device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()),
                "run.device", f"must be auto, cpu, cuda or cuda:N, got {device!r}")
        positive(self.num_threads, "run.num_threads")


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
    # 0: no slice, the search selects on dev.
    validation_size: int = 1000
    # Only train examples of at least this many words (both texts of a pair) enter the slice. SST-2's
    # train split is mostly phrases (median 7 words) while dev holds whole sentences (median 19): on
    # 2-word phrases an attack has little to swap, so the slice would rank defenses unlike dev does.
    # 0: any example.
    validation_min_words: int = 0
    # Your own data instead of a built-in task (data.task then only names it): local files
    # (CSV, TSV, JSON/JSONL, Parquet, optionally .gz; relative to data_dir when that is set) or an HF
    # hub dataset, the text column(s) (one, or two for a pair task) and the label column. Label
    # names default to the sorted distinct training labels; without dev_file / dev_split, a seeded
    # (seed 0) stratified dev_share of train is the dev split. See docs/data-and-tracking.md.
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

    @property
    def own_data(self) -> bool:
        """Whether this names the user's own data rather than a built-in task."""
        return self.train_file is not None or self.dataset_name is not None

    def key_dict(self, data: dict) -> dict:
        """``data`` (this section as a dict) as the benchmark's student keys take it: a built-in task's
        without the own-data fields (they hold their defaults), so its students keep their keys."""
        return data if self.own_data else {k: v for k, v in data.items() if k not in OWN_DATA_FIELDS}

    def check(self) -> None:
        self._check_own_data()
        positive(self.max_length, "data.max_length")
        require(self.max_length <= 4096, "data.max_length", f"{self.max_length} is larger than any supported model")
        positive(self.train_limit, "data.train_limit")
        positive(self.dev_limit, "data.dev_limit")
        require(self.validation_size >= 0, "data.validation_size",
                f"must be >= 0 (0: select on the dev split), got {self.validation_size}")
        require(self.validation_min_words >= 0, "data.validation_min_words",
                f"must be >= 0 (0: any train example may enter the validation slice), got {self.validation_min_words}")
        if self.data_dir is not None:
            require(Path(self.data_dir).expanduser().exists(), "data.data_dir",
                    f"directory {self.data_dir!r} does not exist (fix: point it at the task's files, or unset it to "
                    "use HF datasets)")


    def _check_own_data(self) -> None:
        """The fields naming a user's own data: one source, one or two text columns, declared labels that
        make a classifier; none of them with a built-in task, whose files and columns are fixed."""
        if not self.own_data:
            require(self.task in BUILTIN_TASKS, "data.task", f"unknown task {self.task!r} (known: "
                    f"{', '.join(BUILTIN_TASKS)}; fix: set data.task to one of them, or name your own data with "
                    "data.train_file or data.dataset_name)")
            default = DataConfig()
            for name in OWN_DATA_FIELDS:
                require(getattr(self, name) == getattr(default, name), f"data.{name}",
                        f"is only read for your own data, but data.train_file and data.dataset_name are unset, so the "
                        f"built-in task {self.task!r} is used (fix: set data.train_file or data.dataset_name, or drop "
                        f"data.{name})")
            return
        require(self.task not in BUILTIN_TASKS, "data.task",
                f"{self.task!r} is a built-in task, but data.train_file / data.dataset_name name your own data "
                "(fix: give your data its own name, e.g. data.task=tickets)")
        check_path_name(self.task, "data.task")
        require(self.train_file is None or self.dataset_name is None, "data.dataset_name",
                "and data.train_file are both set (fix: keep one source: local files or a hub dataset)")
        if self.train_file is not None:
            for name in ("dataset_config", "dev_split"):
                require(getattr(self, name) is None, f"data.{name}", "is a hub setting, but data.train_file names "
                        f"local files (fix: drop data.{name}, or use data.dataset_name)")
        else:
            require(self.dev_file is None, "data.dev_file", "is a local file, but data.dataset_name names a hub "
                    "dataset (fix: use data.dev_split, or data.train_file)")
        require(len(self.text_columns) in (1, 2), "data.text_columns",
                f"must name one text column (or two for a sentence-pair task), got {list(self.text_columns)} "
                "(fix: e.g. data.text_columns=[text])")
        require(len(set(self.text_columns)) == len(self.text_columns) and all(self.text_columns), "data.text_columns",
                f"names must be distinct and non-empty, got {list(self.text_columns)}")
        require(bool(self.label_column) and self.label_column not in self.text_columns, "data.label_column",
                f"must name a column other than the text column(s), got {self.label_column!r}")
        if self.label_names:
            require(len(self.label_names) >= 2, "data.label_names",
                    f"a classifier needs at least two classes, got {list(self.label_names)} (fix: list every class, "
                    "or drop data.label_names to read them off the training labels)")
            require(len(set(self.label_names)) == len(self.label_names)
                    and all(n.strip() == n and n for n in self.label_names), "data.label_names",
                    f"names must be distinct, non-empty and without surrounding spaces, got {list(self.label_names)}")
        require(0.0 < self.dev_share <= 0.5, "data.dev_share",
                f"must be in (0, 0.5] (the share of train held out as dev when there is no dev file), got {self.dev_share}")


# the DataConfig fields that describe a user's own data (a built-in task leaves them at their defaults)
OWN_DATA_FIELDS = ("train_file", "dev_file", "dataset_name", "dataset_config", "train_split", "dev_split",
                   "text_columns", "label_column", "label_names", "dev_share")


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

    def check(self) -> None:
        require(bool(self.model), "teacher.model", "must name a directory, hub id or pkg:<package>/<dir>")
        for name in ("epochs", "max_steps", "train_limit", "batch_size", "eval_batch_size", "learning_rate"):
            positive(getattr(self, name), f"teacher.{name}")
        fraction(self.warmup_ratio, "teacher.warmup_ratio")
        at_least(self, ("weight_decay",), "teacher", 0)
        for i, layer in enumerate(self.cache_hidden_layers):
            require(layer >= 0, f"teacher.cache_hidden_layers[{i}]", f"layer indices are >= 0 (0 = embeddings), got {layer}")
        if self.adversarial is None:
            return
        require(self.adversarial == "ascc", "teacher.adversarial",
                f"unknown kind {self.adversarial!r} (known: ascc; or leave it unset for plain fine-tuning)")
        require(not self.finetuned, "teacher.adversarial",
                "asks for adversarial fine-tuning, but teacher.finetuned=true uses the model as it is (fix: set "
                "teacher.finetuned=false so rosearch fine-tunes it, or unset teacher.adversarial)")
        above_zero(self, ("adversarial_weight",), "teacher")
        at_least(self, ("adversarial_steps",), "teacher", 1)


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
        return tuple(n for n in DEFENSE_NAMES if n in used)

    def check(self) -> None:
        for name in ("hidden_sizes", "embedding_sizes", "num_layers", "attention_heads", "kernel_sizes", "ffn_ratios"):
            values = getattr(self, name)
            require(len(values) > 0, f"search_space.{name}", "must list at least one value")
            for i, v in enumerate(values):
                positive(v, f"search_space.{name}[{i}]")
        require(self.nodes_per_cell >= 3, "search_space.nodes_per_cell",
                f"a cell needs input, output and at least one operation node (>= 3), got {self.nodes_per_cell}")
        require(self.max_edges >= self.nodes_per_cell - 1, "search_space.max_edges",
                f"a cell of {self.nodes_per_cell} nodes needs at least {self.nodes_per_cell - 1} edges to connect "
                f"them, got {self.max_edges} (fix: raise max_edges or lower nodes_per_cell)")
        require(len(self.op_families) > 0, "search_space.op_families", "must list at least one operation family")
        for i, fam in enumerate(self.op_families):
            require(fam in OP_FAMILIES, f"search_space.op_families[{i}]",
                    f"unknown operation family {fam!r} (known: {', '.join(OP_FAMILIES)})")
        for i, act in enumerate(self.activations):
            require(act in ACTIVATIONS, f"search_space.activations[{i}]",
                    f"unknown activation {act!r} (known: {', '.join(ACTIVATIONS)})")
        if "attn" in self.op_families:
            for h in self.hidden_sizes:
                for heads in self.attention_heads:
                    require(h % heads == 0, "search_space.hidden_sizes",
                            f"hidden size {h} is not divisible by {heads} attention heads "
                            "(fix: use hidden sizes divisible by every value of search_space.attention_heads)")
        for i, k in enumerate(self.kernel_sizes):
            require(k % 2 == 1, f"search_space.kernel_sizes[{i}]", f"kernel sizes must be odd (same-length padding), got {k}")
        positive(self.param_budget, "search_space.param_budget")
        for field_name in ("defenses", "defense_choices"):
            values = getattr(self, field_name)
            unknown = [v for v in values if v not in DEFENSE_NAMES]
            require(not unknown, f"search_space.{field_name}",
                    f"unknown defense(s) {unknown} (known: {', '.join(DEFENSE_NAMES)})")
            require(len(set(values)) == len(values), f"search_space.{field_name}", f"names repeat: {list(values)}")
        overlap = sorted(set(self.defense_choices) & set(self.defenses))
        require(not overlap, "search_space.defense_choices", f"{overlap} are also in search_space.defenses (always "
                "on), so the search cannot switch them off (fix: list each defense in one of the two)")


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
    strategy: str = "generational"  # one of rosearch.choices.STRATEGY_NAMES
    halving_eta: int = 3  # halving: budget ratio between rungs, and 1/eta of a rung is promoted
    halving_rungs: int = 3  # halving: rungs of budgets, the last at distill.max_steps

    def check(self) -> None:
        require(self.population_size >= 2, "evolution.population_size",
                f"a population needs at least 2 individuals, got {self.population_size}")
        at_least(self, ("generations", "tournament_size"), "evolution", 1)
        fraction(self.mutation_prob, "evolution.mutation_prob")
        fraction(self.crossover_prob, "evolution.crossover_prob")
        require(0 <= self.elitism < self.population_size, "evolution.elitism",
                f"must be in [0, population_size), got {self.elitism} with population_size {self.population_size}")
        positive(self.max_resample, "evolution.max_resample")
        require(self.strategy in STRATEGY_NAMES, "evolution.strategy",
                f"unknown strategy {self.strategy!r} (known: {', '.join(STRATEGY_NAMES)})")
        require(not (self.strategy == "aging" and self.mode == "nsga2"), "evolution.strategy",
                "aging evolution runs tournaments on one fitness, so it needs evolution.mode=weighted "
                "(fix: set evolution.mode=weighted, or evolution.strategy=generational or random for NSGA-II)")
        require(self.halving_eta >= 2, "evolution.halving_eta",
                f"must be >= 2 (the budget ratio between rungs), got {self.halving_eta}")
        require(self.halving_rungs >= 2, "evolution.halving_rungs",
                f"must be >= 2, got {self.halving_rungs} (fix: 2 or more, or evolution.strategy=random for one budget)")


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

    def check(self) -> None:
        require(self.num_cpus_per_candidate > 0, "workers.num_cpus_per_candidate",
                f"must be > 0, got {self.num_cpus_per_candidate}")
        at_least(self, ("num_gpus_per_candidate", "max_retries"), "workers", 0)
        positive(self.timeout_s, "workers.timeout_s")
        require(0 < self.connect_timeout_s <= 3600, "workers.connect_timeout_s",
                f"must be > 0 and at most 3600 seconds, got {self.connect_timeout_s!r} (fix: e.g. 30)")
        if self.address is not None:
            require(self.backend == "ray", "workers.address", "is only used by the ray backend (fix: set workers.backend=ray)")


@dataclass(frozen=True)
class FitnessConfig:
    """How accuracy, robustness and efficiency combine into one fitness."""

    accuracy_weight: float = 1.0
    robustness_weight: float = 1.0
    efficiency_weight: float = 0.1
    efficiency_metric: Literal["params", "flops", "latency"] = "params"
    # Weighted mode: a candidate whose selection accuracy (validation slice, else dev) is below this
    # ranks after every candidate at or above it, so robustness cannot be bought with clean accuracy
    # past the floor (e.g. 3 points under plain KD's accuracy on the slice). None: no floor.
    accuracy_floor: float | None = None

    def check(self) -> None:
        at_least(self, ("accuracy_weight", "robustness_weight", "efficiency_weight"), "fitness", 0)
        if self.accuracy_floor is not None:
            require(not isinstance(self.accuracy_floor, bool) and isinstance(self.accuracy_floor, (int, float))
                    and 0 < self.accuracy_floor <= 1, "fitness.accuracy_floor",
                    f"must be an accuracy in (0, 1], got {self.accuracy_floor!r} (fix: e.g. 0.84, or unset it)")


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
    # The panel a search attacks candidates with; robustness = mean (or min, panel_aggregate) accuracy under
    # attack over it, each recipe's figures stored as attack.<recipe>.* ([] = [recipe]).
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

    def check(self) -> None:
        for field_name in ("recipe", "proxy_recipe"):
            value = getattr(self, field_name)
            if value is not None:
                require(value in RECIPE_NAMES, f"attack.{field_name}",
                        f"unknown recipe {value!r} (known: {', '.join(RECIPE_NAMES)})")
        known_distinct(self.recipes, RECIPE_NAMES, "attack.recipes", "recipe")
        for name in ("num_examples", "query_budget", "model_batch_size", "num_workers"):
            positive(getattr(self, name), f"attack.{name}")
        at_least(self, ("top_k",), "attack", 1)
        if self.neighbors_path is not None:
            require(Path(self.neighbors_path).expanduser().is_file(), "attack.neighbors_path",
                    f"file {self.neighbors_path!r} does not exist (fix: point it at a synonym-neighbour table, "
                    "e.g. ../shared/data/embeddings/counterfitted_neighbors.json.gz)")


@dataclass(frozen=True)
class DefenseConfig:
    """How the student's input defenses are built (which ones a candidate carries is part of its
    genome: ``search_space.defenses`` and ``search_space.defense_choices``).

    Word recognition's lexicon and frequency prior are the task's training text; synonym
    clusters come from WordNet (``attack.wordnet_dir``) and ``attack.neighbors_path``; smoothing
    swaps words for their ``attack.neighbors_path`` neighbours.
    """

    max_edit_distance: int = 2  # word recognition: furthest known word an unknown word may map to
    backoff: Literal["neutral", "keep"] = "neutral"  # unknown word with no known word in reach: neutral word, or keep
    neutral_word: str = "unk"  # what `backoff: neutral` maps such words to (a lower-case letter word)
    synonym_sources: tuple[str, ...] = SYNONYM_SOURCES  # relations the synonym clusters are built from
    typo_edit_distance: int = 1  # typo encoding: lexicon words this many edits apart are confusable
    typo_min_ratio: float = 2.0  # typo encoding: a word joins a confusable head at least this many times as frequent
    typo_anchor_count: int = 50  # typo encoding: words seen this often in training keep their own code
    smoothing_copies: int = 8  # smoothing: copies of each text the student classifies (k forward passes, one batch)
    smoothing_rate: float = 0.3  # smoothing: chance each word of a copy is swapped for a random neighbour

    def check(self) -> None:
        require(1 <= self.max_edit_distance <= 3, "defense.max_edit_distance",
                f"must be 1, 2 or 3, got {self.max_edit_distance}")
        require(1 <= self.typo_edit_distance <= 2, "defense.typo_edit_distance",
                f"must be 1 or 2, got {self.typo_edit_distance}")
        require(self.typo_min_ratio >= 1, "defense.typo_min_ratio",
                f"must be >= 1 (a word only joins a more frequent one), got {self.typo_min_ratio}")
        require(self.typo_anchor_count >= 1, "defense.typo_anchor_count", f"must be >= 1, got {self.typo_anchor_count}")
        # the same bounds as rosearch.defense.smoothing.check_smoothing, which also guards a loaded defense file
        require(not isinstance(self.smoothing_copies, bool) and isinstance(self.smoothing_copies, int)
                and 1 <= self.smoothing_copies <= 256, "defense.smoothing_copies",
                f"must be an integer from 1 to 256 (the copies of each text the student classifies; "
                f"1 = no smoothing), got {self.smoothing_copies!r}")
        require(not isinstance(self.smoothing_rate, bool) and isinstance(self.smoothing_rate, (int, float))
                and 0 <= self.smoothing_rate <= 1, "defense.smoothing_rate",
                f"must be a number from 0 to 1 (the chance each word is swapped for a neighbour), "
                f"got {self.smoothing_rate!r}")
        require(self.neutral_word.isalpha() and self.neutral_word.islower(), "defense.neutral_word",
                f"must be one lower-case word of letters, got {self.neutral_word!r}")
        unknown = [s for s in self.synonym_sources if s not in SYNONYM_SOURCES]
        require(not unknown, "defense.synonym_sources", f"unknown source(s) {unknown} (known: wordnet, counterfitted)")


@dataclass(frozen=True)
class SupernetConfig:
    """The supernet fidelity: candidates evaluated with weights inherited from one weight-sharing network.

    ``fidelity: standalone`` (the default) distils every candidate from scratch; ``supernet`` trains
    one supernet per defense set once (single-path sampling, cached by content key, resumable) and
    evaluates each candidate with its slice of the shared weights: seconds instead of minutes, at the
    price of a figure that ranks like the stand-alone one only as far as ``bench/supernet.py`` shows.
    """

    fidelity: Literal["standalone", "supernet"] = "standalone"
    max_steps: int = 4000  # single-path KD steps of the supernet's one training
    batch_size: int = 32
    learning_rate: float = 1.0e-3
    warmup_ratio: float = 0.05
    checkpoint_every: int = 200  # steps between checkpoints (a killed training resumes from the last)
    share_positions: bool = True  # one operation per (layer, label) for every node position; False: per position
    attack_examples: int | None = None  # attack-sample examples each inherited evaluation attacks (None: all)

    def check(self) -> None:
        at_least(self, ("max_steps", "batch_size", "checkpoint_every"), "supernet", 1)
        above_zero(self, ("learning_rate",), "supernet")
        positive(self.attack_examples, "supernet.attack_examples")
        require(0.0 <= self.warmup_ratio < 1.0, "supernet.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
