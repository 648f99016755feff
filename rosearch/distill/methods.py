"""The registry of robust distillation methods, and the driver's once-per-run work for them.

Every method is an option of the one KD trainer (``DistillConfig.methods``) and one unit: a
:class:`~rosearch.distill.protocol.DistillMethod` in its own module, its knobs in its own section
of the config (``distill.<name>``). Adding a method is its module, its config section and one line
of :data:`REGISTRY` (plus its name in :mod:`rosearch.choices`, which the config validates against).

Some methods need work that must not be repeated per candidate — augmenting the transfer set and
labelling it with the teacher, pre-training MATE-KD's generator — so a run does it once in
:func:`prepare_method_inputs` and ships the resulting :class:`MethodInputs` (plain arrays, strings
and frozen dataclasses, so Ray can put it into the object store) to every candidate. What the
teacher contributes on the clean split itself (hidden states, attention, features) comes from the
clean split's teacher-output cache: :func:`teacher_cache_request` says what to ask it for, so that
one teacher pass serves every method.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rosearch.choices import DISTILL_METHOD_NAMES
from rosearch.config import methods_used
from rosearch.data.tasks import task_spec
from rosearch.distill.adv_train import ADV_TRAIN
from rosearch.distill.ascc import ASCC
from rosearch.distill.adversarial import ADV_FINETUNE
from rosearch.distill.augment import AUGMENT
from rosearch.distill.inputs import MethodInputs, MethodInputsError
from rosearch.distill.layer_kd import LAYER_KD, layer_kd_teacher_layers
from rosearch.distill.mate_kd import MATE_KD
from rosearch.distill.protocol import DistillMethod, PrepareContext, TeacherRequest
from rosearch.distill.rift import RIFT
from rosearch.distill.teacher import load_teacher
from rosearch.files.shipped_files import read_model_files
from rosearch.files.tokenizer_files import read_tokenizer_files

if TYPE_CHECKING:
    import torch

    from rosearch.data.batching import EncodedSplit
    from rosearch.config import Config
    from rosearch.data.tasks import Example

__all__ = [
    "AUGMENT_RECIPES", "METHODS", "NEEDS_METHOD_INPUTS", "REGISTRY", "MethodInputs", "MethodInputsError",
    "TeacherRequest", "layer_kd_teacher_layers", "methods_in_order", "prepare_method_inputs", "teacher_cache_request",
]

logger = logging.getLogger(__name__)

# Every method, in the order the driver and the trainer apply them: batch shares (augment, then
# adv_train), extra loss terms summed in this order (layer_kd, rift, mate_kd, ascc), after-training steps
# last. It is the order of the trainer before methods were units, so results stay bit-identical.
REGISTRY: tuple[DistillMethod, ...] = (AUGMENT, ADV_TRAIN, LAYER_KD, RIFT, MATE_KD, ASCC, ADV_FINETUNE)

# The methods by name, in rosearch.choices order (how configs, listings and reports name them).
METHODS: Mapping[str, DistillMethod] = types.MappingProxyType(
    {name: next(m for m in REGISTRY if m.name == name) for name in DISTILL_METHOD_NAMES})

# Methods whose inputs prepare_method_inputs builds; layer_kd and rift read the clean teacher outputs only.
NEEDS_METHOD_INPUTS: frozenset[str] = frozenset(m.name for m in REGISTRY if m.needs_inputs())

AUGMENT_RECIPES: Mapping[str, str] = types.MappingProxyType({
    "wordnet": "WordNet synonym swaps (TextAttack WordNetAugmenter)",
    "neighbors": "swaps with counter-fitted embedding neighbours (the attack.neighbors_path table)",
    "insert": "insertion of a random WordNet synonym of a word of the text (WordInsertionRandomSynonym)",
    "char": "character swap / substitution / deletion / insertion in words (TextAttack CharSwapAugmenter)",
})


def methods_in_order(names: Sequence[str]) -> tuple[DistillMethod, ...]:
    """The registered methods among ``names``, in :data:`REGISTRY` order (the order they are applied in)."""
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown distillation method(s) {unknown} (known: {', '.join(METHODS)})")
    return tuple(m for m in REGISTRY if m.name in names)


def teacher_cache_request(config: "Config", num_teacher_layers: int) -> TeacherRequest:
    """What to cache of the teacher on the clean training split for ``config.distill``.

    Hidden states for ``hidden_loss_weight`` (``teacher.cache_hidden_layers``), and whatever each
    method some candidate may use asks for (layer_kd: hidden states and attention; rift: features).
    Pass ``request.kwargs()`` to the one ``load_or_compute_teacher_outputs`` call on the training split.
    The whole config: the methods a candidate may use are ``distill.methods`` plus the search space's
    training choices, and each method's request reads its own sections (:meth:`DistillMethod.teacher_request`).
    """
    dist = config.distill
    request = TeacherRequest(layers=tuple(sorted(set(config.teacher.cache_hidden_layers)))
                             if dist.hidden_loss_weight > 0 else ())
    for method in methods_in_order(methods_used(config)):
        request = request.merged(method.teacher_request(config, num_teacher_layers))
    return request


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
    by row (what :func:`rosearch.data.tasks.load_split` returns). Everything costly is cached on disk
    under ``config.run.cache_dir`` by the method that builds it, so a second run (or a resumed one)
    only loads: augmentation → ``augment/<key>.json`` and the teacher's logits on the copies (the
    teacher-output cache, keyed by the augmented split's fingerprint); the MATE-KD generator →
    ``mate_kd/<key>/``.

    The whole config: the methods come from ``distill`` and ``search_space``, the task from ``data``,
    the cache from ``run``, whether to ship the teacher's files from ``workers``, the attack resources
    from ``attack``, and each method's own work reads more (:class:`~rosearch.distill.protocol.PrepareContext`).
    """
    methods = methods_used(config)
    preparing = [m for m in methods_in_order(methods) if m.needs_inputs()]
    if not preparing:
        return None
    if len(train_examples) != len(train):
        raise MethodInputsError(
            f"train_examples has {len(train_examples)} rows but the encoded split has {len(train)} "
            "(fix: pass the examples load_split returned with this split)"
        )
    task = task_spec(config.data)
    model, tokenizer = load_teacher(str(teacher_dir), task.num_labels, device)
    ctx = PrepareContext(config=config, teacher=model, tokenizer=tokenizer, teacher_dir=str(teacher_dir),
                         train_examples=tuple(train_examples), train=train, device=device)
    timings: dict[str, float] = {}
    fields: dict[str, Any] = {}
    for method in preparing:
        start = time.perf_counter()
        fields.update(method.prepare(ctx))
        timings[f"{method.name}_s"] = time.perf_counter() - start
    if config.workers.backend == "ray" and any(m.runs_teacher for m in methods_in_order(methods)):  # no shared FS
        fields["teacher_files"] = read_model_files(teacher_dir)
        if "mate_kd" in methods:
            fields["generator_files"] = read_model_files(fields["generator_dir"])
    del ctx, model
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
