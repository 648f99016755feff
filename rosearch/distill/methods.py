"""Robust distillation methods: their names, the once-per-run work they need, and its result.

Every method is an option of the one KD trainer (``DistillConfig.methods``). Some need work
that must not be repeated per candidate — augmenting the transfer set and labelling it with
the teacher, pre-training MATE-KD's generator — so a run does it once in
:func:`prepare_method_inputs` and ships the resulting :class:`MethodInputs` (plain arrays,
strings and frozen dataclasses, so Ray can put it into the object store) to every candidate.
What the teacher contributes on the clean split itself (hidden states, attention, features)
comes from the clean split's teacher-output cache: :func:`teacher_cache_request` says what to
ask it for, so that one teacher pass serves every method.

This module imports nothing heavy at import time: the config validator reads its names.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rosearch.config import methods_used

if TYPE_CHECKING:
    import torch

    from rosearch.batching import EncodedSplit
    from rosearch.config import AttackConfig, Config
    from rosearch.data import Example
    from rosearch.distill.teacher_cache import TeacherOutputs

logger = logging.getLogger(__name__)

METHODS: Mapping[str, str] = types.MappingProxyType({
    "augment": "transfer set augmented with TextAttack augmenters (WordNet / counter-fitted neighbour swaps, "
               "synonym insertion, character edits), labelled by the teacher once; a share of every batch "
               "(Jiao et al., TinyBERT, 2020; Wei & Zou, EDA, 2019; Morris et al., TextAttack, 2020)",
    "mate_kd": "masked-LM generator rewrites masked tokens to maximise teacher-student divergence "
               "(Gumbel-softmax, straight-through), student distils on clean and perturbed text "
               "(Rashid et al., MATE-KD, ACL 2021)",
    "layer_kd": "hidden-state MSE through learned projections + KL of head-averaged attention "
                "distributions on uniformly mapped layers (Jiao et al., TinyBERT, 2020; Wang et al., MiniLM, 2020)",
    "rift": "class-conditional InfoNCE keeping projected student features informative of cached teacher "
            "features within each class (Dong et al., RIFT, NeurIPS 2021)",
    "adv_finetune": "after KD, attack the student on training examples and fine-tune briefly on clean + "
                    "successful adversarial examples with teacher soft labels (adversarial training as in "
                    "Morris et al., TextAttack, 2020)",
    "adv_train": "iterative adversarial training inside KD: every adv_train_every steps, attack the current student "
                 "with cheap recipes on a seeded sample of training texts, label the successful adversarial texts with "
                 "the live teacher, and draw a share of every later batch from that growing pool "
                 "(Madry et al., ICLR 2018; Morris et al., TextAttack, 2020)",
})

# Methods whose inputs prepare_method_inputs builds; layer_kd and rift read the clean teacher outputs only.
NEEDS_METHOD_INPUTS: frozenset[str] = frozenset({"augment", "mate_kd", "adv_finetune", "adv_train"})

AUGMENT_RECIPES: Mapping[str, str] = types.MappingProxyType({
    "wordnet": "WordNet synonym swaps (TextAttack WordNetAugmenter)",
    "neighbors": "swaps with counter-fitted embedding neighbours (the attack.neighbors_path table)",
    "insert": "insertion of a random WordNet synonym of a word of the text (WordInsertionRandomSynonym)",
    "char": "character swap / substitution / deletion / insertion in words (TextAttack CharSwapAugmenter)",
})


class MethodInputsError(ValueError):
    """The trainer was asked for a method whose once-per-run inputs are missing or do not fit."""


@dataclass(frozen=True, eq=False)
class MethodInputs:
    """What the methods of a run need beyond the clean split and its teacher outputs.

    Built once by :func:`prepare_method_inputs`; read by :func:`rosearch.distill.trainer.distill`.
    Paths (``teacher_dir``, ``generator_dir``) must be readable where candidates run (the same
    machine, or a shared file system on a cluster); the tokenizer travels as bytes.
    """

    methods: tuple[str, ...]
    teacher_dir: str  # the live teacher of mate_kd and of adv_finetune's and adv_train's soft labels
    tokenizer_files: Mapping[str, bytes]  # the teacher's tokenizer (rosearch.tokenizer_files)
    cache_dir: str
    max_length: int
    text_columns: tuple[str, ...]  # the task's text columns, for TextAttack datasets
    attack: "AttackConfig"  # resources (WordNet, neighbours) and limits of adv_finetune's and adv_train's attacks
    # augment
    augmented: "EncodedSplit | None" = None  # the augmented copies, encoded
    augmented_outputs: "TeacherOutputs | None" = None  # the teacher's logits on them (cached)
    augmented_sources: tuple[int, ...] = ()  # row of the clean split each copy was made from
    # mate_kd
    generator_dir: str | None = None  # MLM-adapted generator (BertForMaskedLM), cached
    special_token_ids: tuple[int, ...] = ()  # never masked, never generated
    mask_token_id: int | None = None
    # adv_finetune, adv_train
    train_examples: tuple["Example", ...] = ()  # raw text of the clean split, row by row
    timings: dict[str, float] = field(default_factory=dict)  # seconds per preparation stage

    def require(self, method: str) -> None:
        """Raise :class:`MethodInputsError` unless these inputs serve ``method``."""
        missing = {
            "augment": self.augmented is None or self.augmented_outputs is None,
            "mate_kd": self.generator_dir is None or self.mask_token_id is None,
            "adv_finetune": not self.train_examples,
            "adv_train": not self.train_examples,
        }.get(method, False)
        if missing:
            raise MethodInputsError(
                f"distill.methods has {method!r} but the method inputs were prepared for {list(self.methods)} "
                f"(fix: build them with prepare_method_inputs for a config whose distill.methods include {method!r})"
            )


@dataclass(frozen=True)
class TeacherRequest:
    """What the clean split's teacher-output cache must hold for a run's distill settings."""

    layers: tuple[int, ...] = ()  # hidden-state layers (0 = embeddings)
    attention_layers: tuple[int, ...] = ()  # layers (1-based) whose head-mean attention is cached
    features: bool = False  # mean-pooled last hidden state per example

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~rosearch.distill.teacher_cache.load_or_compute_teacher_outputs`."""
        return {"layers": self.layers, "attention_layers": self.attention_layers, "features": self.features}


def layer_kd_teacher_layers(config: "Config", num_teacher_layers: int) -> tuple[int, ...]:
    """Teacher layers layer_kd distils from: ``teacher.cache_hidden_layers`` when set, else the
    layers the deepest student of the search space maps to (uniformly, last to last).

    A shallower student then maps uniformly onto these; caching every teacher layer instead
    would cost memory for layers no student reads.
    """
    from rosearch.distill.losses import uniform_layer_map

    explicit = config.teacher.cache_hidden_layers
    if explicit:
        return tuple(sorted(set(explicit)))
    if num_teacher_layers < 1:
        raise ValueError(f"num_teacher_layers must be >= 1, got {num_teacher_layers}")
    deepest = max(config.search_space.num_layers)
    return tuple(t for _, t in uniform_layer_map(deepest, tuple(range(1, num_teacher_layers + 1))))


def teacher_cache_request(config: "Config", num_teacher_layers: int) -> TeacherRequest:
    """What to cache of the teacher on the clean training split for ``config.distill``.

    Hidden states for ``hidden_loss_weight`` (``teacher.cache_hidden_layers``) or layer_kd's
    MSE; head-averaged attention for layer_kd's attention term (the same layers, minus the
    embeddings); features for rift. Pass ``request.kwargs()`` to the one
    ``load_or_compute_teacher_outputs`` call on the training split.
    """
    dist = config.distill
    methods = set(methods_used(config))
    layers: tuple[int, ...] = tuple(config.teacher.cache_hidden_layers) if dist.hidden_loss_weight > 0 else ()
    attention: tuple[int, ...] = ()
    if "layer_kd" in methods:
        kd_layers = layer_kd_teacher_layers(config, num_teacher_layers)
        if dist.layer_kd_weight > 0:
            layers = kd_layers
        if dist.attention_loss_weight > 0:
            attention = tuple(layer for layer in kd_layers if layer > 0)
    return TeacherRequest(layers=tuple(sorted(set(layers))), attention_layers=attention, features="rift" in methods)


def prepare_method_inputs(
    config: "Config",
    *,
    teacher_dir: str,
    train_examples: Sequence["Example"],
    train: "EncodedSplit",
    device: "torch.device | str",
) -> MethodInputs | None:
    """The once-per-run work of every method a candidate may use; None when none needs any.

    Those methods are :func:`rosearch.config.methods_used`: ``distill.methods`` plus the training gene's
    ``search_space.training_choices``, prepared once whichever candidates end up using them.

    ``train_examples`` and ``train`` are the clean training split as raw text and encoded, row
    by row (what :func:`rosearch.data.load_split` returns). Everything here is cached on disk
    under ``config.run.cache_dir``, so a second run (or a resumed one) only loads:
    augmentation → ``augment/<key>.json`` and the teacher's logits on the copies (the teacher-
    output cache, keyed by the augmented split's fingerprint); the MATE-KD generator →
    ``mate_kd/<key>/``.
    """
    methods = methods_used(config)
    if not set(methods) & NEEDS_METHOD_INPUTS:
        return None
    if len(train_examples) != len(train):
        raise MethodInputsError(
            f"train_examples has {len(train_examples)} rows but the encoded split has {len(train)} "
            "(fix: pass the examples load_split returned with this split)"
        )
    from rosearch.data import get_task
    from rosearch.distill.teacher import load_teacher
    from rosearch.tokenizer_files import read_tokenizer_files

    task = get_task(config.data.task)
    model, tokenizer = load_teacher(str(teacher_dir), task.num_labels, device)
    timings: dict[str, float] = {}
    fields: dict[str, Any] = {}
    if "augment" in methods:
        start = time.perf_counter()
        fields.update(_prepare_augment(config, model, tokenizer, str(teacher_dir), train_examples, train, device))
        timings["augment_s"] = time.perf_counter() - start
    if "mate_kd" in methods:
        from rosearch.distill.mate_kd import load_or_pretrain_generator

        start = time.perf_counter()
        fields["generator_dir"] = str(load_or_pretrain_generator(
            model, str(teacher_dir), train, config.distill, special_token_ids=tuple(tokenizer.all_special_ids),
            mask_token_id=_mask_token_id(tokenizer), seed=config.run.seed, device=device, cache_dir=config.run.cache_dir,
        ))
        fields["special_token_ids"] = tuple(sorted(set(tokenizer.all_special_ids)))
        fields["mask_token_id"] = _mask_token_id(tokenizer)
        timings["mate_kd_generator_s"] = time.perf_counter() - start
    if "adv_finetune" in methods or "adv_train" in methods:
        fields["train_examples"] = tuple(train_examples)
    del model
    logger.info("method inputs for %s ready (%s)", ", ".join(methods),
                ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) or "nothing to build")
    return MethodInputs(
        methods=methods,
        teacher_dir=str(teacher_dir),
        tokenizer_files=read_tokenizer_files(teacher_dir),
        cache_dir=str(config.run.cache_dir),
        max_length=config.data.max_length,
        text_columns=tuple(task.text_columns),
        attack=config.attack,
        timings=timings,
        **fields,
    )


def _mask_token_id(tokenizer: Any) -> int:
    if tokenizer.mask_token_id is None:
        raise MethodInputsError(
            f"mate_kd needs a tokenizer with a mask token, {type(tokenizer).__name__} has none "
            "(fix: use a BERT-family teacher, or drop mate_kd from distill.methods)"
        )
    return int(tokenizer.mask_token_id)


def _prepare_augment(
    config: "Config",
    model: Any,
    tokenizer: Any,
    teacher_dir: str,
    train_examples: Sequence["Example"],
    train: "EncodedSplit",
    device: "torch.device | str",
) -> dict[str, Any]:
    """Augmented copies (cached texts), encoded, with the teacher's logits on them (cached)."""
    from rosearch.data import encode_examples
    from rosearch.distill.augment import augment_examples
    from rosearch.distill.teacher_cache import load_or_compute_teacher_outputs

    dist = config.distill
    augmented = augment_examples(
        train_examples, recipes=dist.augment_recipes, per_example=dist.augment_per_example,
        limit=dist.augment_limit, pct_words=dist.augment_pct_words, seed=config.run.seed,
        attack=config.attack, cache_dir=config.run.cache_dir,
    )
    if not augmented.examples:
        raise MethodInputsError(
            "augmentation produced no copy that differs from its original (fix: raise distill.augment_limit or "
            "distill.augment_pct_words, or add augmenters to distill.augment_recipes)"
        )
    split = encode_examples(
        list(augmented.examples), tokenizer, config.data.max_length, f"{train.fingerprint}-augment-{augmented.key[:16]}",
        train.num_labels,
    )
    outputs = load_or_compute_teacher_outputs(
        model, teacher_dir, split, layers=(), batch_size=config.teacher.eval_batch_size, device=device,
        cache_dir=config.run.cache_dir,
    )
    return {"augmented": split, "augmented_outputs": outputs, "augmented_sources": augmented.sources}
