"""The ``distill`` section: plain knowledge distillation and one sub-section per robust method.

``distill.methods`` switches on robust variants of the same trainer (descriptions and papers in
``rosearch.distill.methods.METHODS``); each method's knobs are its own section, named like the
method (``distill.mate_kd.weight``), and are read only while the method is on. A method section
checks itself with ``check(distill, attack, methods)``: some of its limits depend on the batch
size or the step budget, some on the attack's resources, and some only apply while one of
``methods`` (every method some candidate may use) is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rosearch.choices import AUGMENT_RECIPE_NAMES, DISTILL_METHOD_NAMES, RECIPE_NAMES
from rosearch.config.checks import above_zero, at_least, fraction, known_distinct, positive, require
from rosearch.config.sections import AttackConfig


def _batch_share(value: float, method: str, batch_size: int, methods: set[str]) -> None:
    """``distill.<method>.fraction``: strictly inside (0, 1) and, with the method on, at least one example of each kind."""
    path = f"distill.{method}.fraction"
    require(0.0 < value < 1.0, path, f"must be strictly between 0 and 1, got {value}")
    share = int(round(value * batch_size))
    require(method not in methods or 1 <= share <= batch_size - 1, path,
            f"{value} of a batch of {batch_size} leaves {share} examples of one kind and "
            f"{batch_size - share} of the other; both need at least one "
            "(fix: a fraction nearer 0.5, or a larger distill.batch_size)")


@dataclass(frozen=True)
class AugmentConfig:
    """``augment``: TextAttack augmenters over the transfer set; the teacher labels the copies once (cached)."""

    recipes: tuple[str, ...] = ("wordnet", "neighbors", "insert", "char")
    per_example: int = 1  # augmented copies per chosen training example (recipes taken in turn)
    limit: int | None = None  # augment a seeded subset of this many training examples (None: all)
    fraction: float = 0.5  # share of every training batch drawn from the augmented copies
    pct_words: float = 0.1  # share of a text's words one augmentation changes (at least one)

    def check(self, distill: DistillConfig, attack: AttackConfig, methods: set[str]) -> None:
        """Known, distinct augmenters with their resources; sizes and shares that leave both kinds a place."""
        require(len(self.recipes) > 0, "distill.augment.recipes",
                f"must list at least one augmenter (known: {', '.join(AUGMENT_RECIPE_NAMES)})")
        known_distinct(self.recipes, AUGMENT_RECIPE_NAMES, "distill.augment.recipes", "augmenter")
        if "augment" in methods and "neighbors" in self.recipes:
            require(attack.neighbors_path is not None, "distill.augment.recipes",
                    "the 'neighbors' augmenter needs the synonym-neighbour table (fix: set attack.neighbors_path, e.g. "
                    "../shared/data/embeddings/counterfitted_neighbors.json.gz, or drop 'neighbors' from the list)")
        at_least(self, ("per_example",), "distill.augment", 1)
        positive(self.limit, "distill.augment.limit")
        require(0.0 < self.pct_words <= 1.0, "distill.augment.pct_words", f"must be in (0, 1], got {self.pct_words}")
        _batch_share(self.fraction, "augment", distill.batch_size, methods)


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

    def check(self, distill: DistillConfig, attack: AttackConfig, methods: set[str]) -> None:
        """Positive weights and rates, a mask share in (0, 1], whole step counts."""
        above_zero(self, ("weight", "generator_lr", "gumbel_temperature"), "distill.mate_kd")
        require(0.0 < self.mask_prob <= 1.0, "distill.mate_kd.mask_prob", f"must be in (0, 1], got {self.mask_prob}")
        require(self.generator_steps >= 0, "distill.mate_kd.generator_steps",
                f"must be >= 0 (0 freezes the generator), got {self.generator_steps}")
        at_least(self, ("generator_every", "generator_layers"), "distill.mate_kd", 1)
        at_least(self, ("pretrain_steps",), "distill.mate_kd", 0)


@dataclass(frozen=True)
class LayerKDConfig:
    """``layer_kd``: TinyBERT-style hidden-state MSE + attention-distribution KL on mapped layers."""

    weight: float = 0.1  # hidden-state MSE weight (in place of distill.hidden_loss_weight)
    attention_weight: float = 1.0  # KL(teacher || student) of head-averaged attention rows

    def check(self, distill: DistillConfig, attack: AttackConfig, methods: set[str]) -> None:
        """Non-negative weights; switched on, at least one term and no second hidden-state weight."""
        at_least(self, ("weight", "attention_weight"), "distill.layer_kd", 0)
        if "layer_kd" not in methods:
            return
        require(self.weight > 0 or self.attention_weight > 0, "distill.layer_kd.weight",
                "layer_kd needs a hidden-state or an attention term (fix: set distill.layer_kd.weight or "
                "distill.layer_kd.attention_weight > 0)")
        hidden = distill.hidden_loss_weight
        require(hidden == 0, "distill.hidden_loss_weight",
                f"is {hidden}, but layer_kd weighs the hidden-state loss itself "
                "(fix: set distill.hidden_loss_weight=0 and use distill.layer_kd.weight)")


@dataclass(frozen=True)
class RiftConfig:
    """``rift``: class-conditional InfoNCE between projected student and cached teacher features."""

    weight: float = 0.1
    temperature: float = 0.1

    def check(self, distill: DistillConfig, attack: AttackConfig, methods: set[str]) -> None:
        """A positive weight and temperature."""
        above_zero(self, ("weight", "temperature"), "distill.rift")


@dataclass(frozen=True)
class AdvFinetuneConfig:
    """``adv_finetune``: after KD, attack the student on training examples and fine-tune on the hits."""

    steps: int = 100
    examples: int = 200  # training examples attacked (seeded sample)
    recipe: str | None = None  # a key of rosearch.attack.recipes.RECIPES (None: attack.recipe)
    lr: float = 1e-4  # constant learning rate of the fine-tuning steps
    fraction: float = 0.5  # share of each fine-tuning batch drawn from adversarial examples

    def check(self, distill: DistillConfig, attack: AttackConfig, methods: set[str]) -> None:
        """Whole positive sizes, a positive rate, a known recipe, a share that leaves both kinds a place."""
        _batch_share(self.fraction, "adv_finetune", distill.batch_size, methods)
        above_zero(self, ("lr",), "distill.adv_finetune")
        at_least(self, ("steps", "examples"), "distill.adv_finetune", 1)
        if self.recipe is not None:
            require(self.recipe in RECIPE_NAMES, "distill.adv_finetune.recipe",
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

    def check(self, distill: DistillConfig, attack: AttackConfig, methods: set[str]) -> None:
        """Positive sizes, known recipes, rounds inside the step budget, batch shares."""
        at_least(self, ("rounds", "every", "examples"), "distill.adv_train", 1)
        positive(self.query_budget, "distill.adv_train.query_budget")
        require(len(self.recipes) > 0, "distill.adv_train.recipes",
                "must list at least one attack recipe (fix: e.g. [deepwordbug] or [deepwordbug, pwws])")
        known_distinct(self.recipes, RECIPE_NAMES, "distill.adv_train.recipes", "recipe")
        value = self.fraction
        require(0.0 < value < 1.0, "distill.adv_train.fraction", f"must be strictly between 0 and 1, got {value}")
        if "adv_train" not in distill.methods:
            return
        last = self.rounds * self.every
        require(last < distill.max_steps, "distill.adv_train.every",
                f"{self.rounds} rounds every {self.every} steps end at step {last}, but "
                f"distill.max_steps={distill.max_steps} leaves no KD step after the last round (fix: fewer "
                "distill.adv_train.rounds, a smaller distill.adv_train.every, or more distill.max_steps)")
        share = int(round(value * distill.batch_size))
        other = int(round(distill.augment.fraction * distill.batch_size)) if "augment" in distill.methods else 0
        require(share >= 1 and distill.batch_size - share - other >= 1, "distill.adv_train.fraction",
                f"{value} of a batch of {distill.batch_size} gives {share} adversarial examples"
                + (f" and augment takes {other}" if other else "") + f", leaving {distill.batch_size - share - other} clean; "
                "each kind needs at least one (fix: a smaller fraction, or a larger distill.batch_size)")


@dataclass(frozen=True)
class AsccConfig:
    """``ascc``: KD at the worst point of each token's substitution hull (rosearch.distill.ascc)."""

    weight: float = 1.0  # weight of the hull-adversarial KD term beside the clean one
    steps: int = 2  # signed-gradient ascent steps on the hull weights per batch
    step_size: float = 1.0  # ascent step on the hull logits
    max_candidates: int = 16  # substitutes per token at most (its hull has max_candidates + 1 vertices)
    sources: tuple[str, ...] = ("wordnet", "counterfitted")  # PWWS's and TextFooler's candidate sets

    def check(self, distill: DistillConfig, attack: AttackConfig, methods: set[str]) -> None:
        """Positive sizes and weights, known sources, and the neighbour table when it is a source."""
        at_least(self, ("steps", "max_candidates"), "distill.ascc", 1)
        above_zero(self, ("weight", "step_size"), "distill.ascc")
        require(bool(self.sources), "distill.ascc.sources", "is empty (fix: [wordnet, counterfitted])")
        known_distinct(self.sources, ("wordnet", "counterfitted"), "distill.ascc.sources", "source")
        require("ascc" not in methods or "counterfitted" not in self.sources or attack.neighbors_path is not None,
                "distill.ascc.sources", "has counterfitted but attack.neighbors_path is unset (fix: set "
                "attack.neighbors_path to the counter-fitted neighbour table, or use sources: [wordnet])")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation of one student from the cached teacher outputs (see the module docstring)."""

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

    def check(self) -> None:
        """The KD knobs and the method list; each method section checks itself (see the module docstring)."""
        fraction(self.alpha, "distill.alpha")
        positive(self.temperature, "distill.temperature")
        at_least(self, ("hidden_loss_weight", "weight_decay"), "distill", 0)
        for name in ("max_steps", "batch_size", "eval_batch_size", "learning_rate", "max_grad_norm"):
            positive(getattr(self, name), f"distill.{name}")
        fraction(self.warmup_ratio, "distill.warmup_ratio")
        fraction(self.dropout, "distill.dropout")
        known_distinct(self.methods, DISTILL_METHOD_NAMES, "distill.methods", "method")
