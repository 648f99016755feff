"""The protocol every robust distillation method follows, and what it is handed at each hook.

A method is one object (:class:`DistillMethod`) with a name, a description and a few hooks, each a
point the driver or the trainer really has:

* :meth:`~DistillMethod.teacher_request` — what the clean split's teacher-output cache must hold
  for it (one teacher pass serves every method);
* :meth:`~DistillMethod.prepare` — once per run, in the driver: work that must not be repeated per
  candidate (augmenting the transfer set, pre-training a generator); it returns fields of the
  :class:`~rosearch.distill.inputs.MethodInputs` shipped to every candidate;
* :meth:`~DistillMethod.batch_share` — how many examples of every batch it supplies (the clean
  stream fills the rest);
* :meth:`~DistillMethod.start` — per student, before the KD loop: a :class:`MethodRun` holding the
  method's state for that one distillation (extra loss terms, batch shares, attack rounds);
* :meth:`~DistillMethod.after_training` — per student, after the KD loop (adversarial fine-tuning).

Every hook has a do-nothing default, so a method overrides only the ones it uses; the registry
in :mod:`rosearch.distill.methods` lists the methods and fixes the order the trainer applies them in.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from rosearch.data.batching import EncodedSplit, batch_indices

if TYPE_CHECKING:
    import torch

    from rosearch.config import Config, DistillConfig
    from rosearch.data.tasks import Example
    from rosearch.defense.pipeline import Defense
    from rosearch.distill.inputs import MethodInputs
    from rosearch.distill.teacher_cache import TeacherOutputs


@dataclass(frozen=True)
class TeacherRequest:
    """What the clean split's teacher-output cache must hold for a run's distill settings."""

    layers: tuple[int, ...] = ()  # hidden-state layers (0 = embeddings)
    attention_layers: tuple[int, ...] = ()  # layers (1-based) whose head-mean attention is cached
    features: bool = False  # mean-pooled last hidden state per example

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~rosearch.distill.teacher_cache.load_or_compute_teacher_outputs`."""
        return {"layers": self.layers, "attention_layers": self.attention_layers, "features": self.features}

    def merged(self, other: "TeacherRequest") -> "TeacherRequest":
        """Both requests in one (sorted, distinct layers)."""
        return TeacherRequest(layers=tuple(sorted(set(self.layers) | set(other.layers))),
                              attention_layers=tuple(sorted(set(self.attention_layers) | set(other.attention_layers))),
                              features=self.features or other.features)


@dataclass(frozen=True, eq=False)
class PrepareContext:
    """What :meth:`DistillMethod.prepare` gets: the run's config, the loaded teacher, the clean split.

    The whole config, because once-per-run work reads beyond ``distill``: ``run`` (seed, cache directory),
    ``data.max_length`` and ``teacher.eval_batch_size`` (augmentation encodes its copies and runs the
    teacher on them), the ``attack`` section (augmentation's recipes, ASCC's substitutions)."""

    config: "Config"
    teacher: nn.Module  # the fine-tuned teacher, loaded once for every method of the run
    tokenizer: Any  # its tokenizer
    teacher_dir: str
    train_examples: tuple["Example", ...]  # the clean training split as raw text, row by row
    train: EncodedSplit  # ... and encoded
    device: "torch.device | str"


@dataclass(frozen=True, eq=False)
class StudentContext:
    """What the per-student hooks get: one distillation's student, data, teacher outputs and settings."""

    student: nn.Module
    train: EncodedSplit  # the clean split (defended, when the student carries a defense)
    teacher: "TeacherOutputs"  # its cached teacher outputs
    teacher_logits: Tensor  # [n, C] the cached teacher logits, on ``device``
    cfg: "DistillConfig"
    inputs: "MethodInputs | None"  # the run's once-per-run method inputs
    first_batch: dict[str, Tensor]  # the first clean batch, collated (for shape probes; no RNG is drawn)
    seed: int
    device: "torch.device"
    defense: "Defense | None" = None  # the student's input defense, if it carries one


class MethodRun:
    """One method's state during one distillation; the trainer calls these hooks (defaults do nothing).

    Per step, in this order: :meth:`before_step`; the clean forward inside :meth:`recording`; the
    clean KD loss, then :meth:`mix` of every batch-sharing method, the core hidden-state loss, and
    the sum of every :meth:`loss` that is not None. After the loop: :meth:`stats`, then :meth:`close`.
    """

    modules: tuple[nn.Module, ...] = ()  # trainable parts, optimised with the student and dropped afterwards
    needs_hidden: bool = False  # the clean forward must return hidden states
    extra_seconds: float = 0.0  # time spent outside the KD loop's own work (attacks), not in its throughput

    def before_step(self, student: nn.Module, completed_steps: int) -> None:
        """Before each step (``completed_steps`` KD steps done)."""

    def recording(self) -> contextlib.AbstractContextManager:
        """Around the clean forward (e.g. to capture attention)."""
        return contextlib.nullcontext()

    def mix(self, student: nn.Module, loss: Tensor, count: int) -> tuple[Tensor, int]:
        """The KD loss of the batch grown by this method's share: ``loss`` over ``count`` examples so far."""
        return loss, count

    def loss(self, student: nn.Module, batch: dict[str, Tensor], out: Any, indices: list[int],
             step: int) -> Tensor | None:
        """This method's weighted extra term on the clean batch (None: it adds none)."""
        return None

    def stats(self) -> dict[str, float]:
        """Numbers for ``DistillResult.method_stats``."""
        return {}

    def close(self) -> None:
        """Release what the run holds (a live teacher) before any after-training step."""


class DistillMethod:
    """One robust distillation method (module docstring); subclasses override the hooks they use."""

    name: str = ""
    description: str = ""  # what it does, with its papers
    runs_teacher: bool = False  # loads the teacher itself in the worker (Ray ships its files: no shared file system)

    def teacher_request(self, config: "Config", num_teacher_layers: int) -> TeacherRequest:
        """What the clean teacher-output cache must hold for this method.

        The whole config: a request may depend on the method's ``distill`` knobs, the ``teacher``
        section's cached layers and the deepest student of the ``search_space``."""
        return TeacherRequest()

    def needs_inputs(self) -> bool:
        """Whether :meth:`prepare` builds once-per-run inputs every student needs."""
        return False

    def prepare(self, ctx: PrepareContext) -> dict[str, Any]:
        """Once per run: fields of :class:`~rosearch.distill.inputs.MethodInputs` (cached on disk where costly)."""
        return {}

    def batch_share(self, cfg: "DistillConfig") -> int:
        """Examples of every batch this method supplies (0: none)."""
        return 0

    def hidden_weight(self, cfg: "DistillConfig", teacher: "TeacherOutputs") -> float | None:
        """The weight of the core hidden-state loss, when this method takes it over (None: it does not).

        Raises when ``teacher`` cannot serve it, before the trainer builds the layer projections.
        """
        return None

    def start(self, ctx: StudentContext) -> MethodRun | None:
        """Per student, before the KD loop: this method's state for one distillation (None: nothing to do)."""
        return None

    def after_training(self, ctx: StudentContext) -> dict[str, float] | None:
        """Per student, after the KD loop and after every run is closed: more training, with its stats."""
        return None


def forward(student: nn.Module, batch: dict[str, Tensor], hidden: bool = False) -> Any:
    """The student's forward on a collated batch (its id, mask and segment inputs only)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "token_type_ids" in batch:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return student(**inputs, output_hidden_states=hidden)


def batch_stream(split: EncodedSplit, batch_size: int, rng: random.Random, bucketing: bool) -> Iterator[list[int]]:
    """Endless stream of batch index lists; each pass over ``split`` is a fresh shuffle from ``rng``."""
    while True:
        yield from batch_indices(split.lengths, batch_size, shuffle=True, rng=rng, bucketing=bucketing)
