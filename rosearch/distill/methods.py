"""Robust distillation methods: their names, the once-per-run work they need, and its result.

Every method is an option of the one KD trainer (``DistillConfig.methods``). Some need work
that must not be repeated per candidate — augmenting the transfer set and labelling it with
the teacher, pre-training MATE-KD's generator — so a run does it once in
:func:`prepare_method_inputs` and ships the resulting :class:`MethodInputs` (plain arrays,
strings and frozen dataclasses, so Ray can put it into the object store) to every candidate.
What the teacher contributes on the clean split itself (hidden states, attention, features)
comes from the clean split's teacher-output cache: :func:`teacher_cache_request` says what to
ask it for, so that one teacher pass serves every method.

The names are also in :mod:`rosearch.choices` (the config validates against those); the
:class:`MethodInputs` dataclass lives in :mod:`rosearch.distill.inputs`, below the methods.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rosearch.config import methods_used
from rosearch.data import encode_examples, get_task
from rosearch.distill.augment import augment_examples
from rosearch.distill.inputs import NEEDS_METHOD_INPUTS, MethodInputs, MethodInputsError
from rosearch.distill.losses import uniform_layer_map
from rosearch.distill.mate_kd import load_or_pretrain_generator
from rosearch.distill.teacher import load_teacher
from rosearch.distill.teacher_cache import load_or_compute_teacher_outputs
from rosearch.tokenizer_files import read_tokenizer_files

if TYPE_CHECKING:
    import torch

    from rosearch.batching import EncodedSplit
    from rosearch.config import Config
    from rosearch.data import Example

__all__ = [
    "AUGMENT_RECIPES", "METHODS", "NEEDS_METHOD_INPUTS", "MethodInputs", "MethodInputsError", "TeacherRequest",
    "layer_kd_teacher_layers", "prepare_method_inputs", "teacher_cache_request",
]

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

AUGMENT_RECIPES: Mapping[str, str] = types.MappingProxyType({
    "wordnet": "WordNet synonym swaps (TextAttack WordNetAugmenter)",
    "neighbors": "swaps with counter-fitted embedding neighbours (the attack.neighbors_path table)",
    "insert": "insertion of a random WordNet synonym of a word of the text (WordInsertionRandomSynonym)",
    "char": "character swap / substitution / deletion / insertion in words (TextAttack CharSwapAugmenter)",
})


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
        if dist.layer_kd.weight > 0:
            layers = kd_layers
        if dist.layer_kd.attention_weight > 0:
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
    task = get_task(config.data.task)
    model, tokenizer = load_teacher(str(teacher_dir), task.num_labels, device)
    timings: dict[str, float] = {}
    fields: dict[str, Any] = {}
    if "augment" in methods:
        start = time.perf_counter()
        fields.update(_prepare_augment(config, model, tokenizer, str(teacher_dir), train_examples, train, device))
        timings["augment_s"] = time.perf_counter() - start
    if "mate_kd" in methods:
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
    dist = config.distill
    augmented = augment_examples(
        train_examples, recipes=dist.augment.recipes, per_example=dist.augment.per_example,
        limit=dist.augment.limit, pct_words=dist.augment.pct_words, seed=config.run.seed,
        attack=config.attack, cache_dir=config.run.cache_dir,
    )
    if not augmented.examples:
        raise MethodInputsError(
            "augmentation produced no copy that differs from its original (fix: raise distill.augment.limit or "
            "distill.augment.pct_words, or add augmenters to distill.augment.recipes)"
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
