"""The read-only inputs every candidate evaluation of a run shares.

Plain arrays and numbers only, so that a Ray backend puts them into the object store once and
every worker maps them without a copy. Built by :func:`rosearch.prepare.inputs.prepare_inputs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rosearch.data.batching import EncodedSplit
from rosearch.data.tasks import Example
from rosearch.defense.pipeline import Defense, DefenseResources, copies_per_text
from rosearch.distill.teacher_cache import TeacherOutputs


@dataclass(frozen=True)
class SearchInputs:
    """Data, cached teacher outputs and the teacher's reference numbers for one run."""

    train: EncodedSplit
    dev: EncodedSplit
    teacher_outputs: TeacherOutputs  # on `train`, computed once
    teacher_embedding_pcs: np.ndarray | None  # [V, E_max] principal-component coordinates of the teacher's word embeddings
    vocab_size: int
    num_labels: int
    max_position_embeddings: int
    type_vocab_size: int
    pad_token_id: int
    teacher_dir: str
    teacher_dev_accuracy: float
    teacher_params: int
    teacher_flops: int  # per example at `dev_mean_length`, counted like search_space.cost.count_flops
    dev_mean_length: int  # tokens; the sequence length of FLOPs and latency figures
    timings: dict[str, float] = field(default_factory=dict)  # seconds per preparation stage
    tokenizer_files: Mapping[str, bytes] = field(default_factory=dict)  # the teacher's tokenizer, for attacks in workers
    attack_examples: tuple[Example, ...] = ()  # the seeded dev sample every full attack uses (raw text)
    proxy: EncodedSplit | None = None  # the teacher's successful adversarial examples, encoded (attack.proxy)
    proxy_examples: tuple[Example, ...] = ()  # the same adversarial examples as raw text (for defended students)
    teacher_attack: dict[str, Any] | None = None  # the teacher's attack report on `attack_examples`
    method_inputs: Any = None  # rosearch.distill.methods.MethodInputs when distill.methods need once-per-run work
    defense_resources: DefenseResources | None = None  # lexicon + synonym clusters, when candidates carry defenses
    # "+".join(defenses) -> split name ("train", "dev", "proxy") -> that split with the defenses applied (every
    # split but train holds each example's `copies(names)` smoothing copies, consecutive)
    defended_splits: Mapping[str, Mapping[str, EncodedSplit]] = field(default_factory=dict)

    def defense(self, names: tuple[str, ...]) -> Defense | None:
        """The input defense of a candidate carrying ``names`` (None for an undefended one)."""
        if not names:
            return None
        if self.defense_resources is None:
            raise ValueError(f"a candidate carries defenses {list(names)} but the run prepared none "
                             "(fix: list them in search_space.defenses or search_space.defense_choices)")
        return Defense(names, self.defense_resources)

    def copies(self, names: tuple[str, ...]) -> int:
        """Rows per example in the evaluation splits of a candidate carrying ``names`` (1 unless it smooths)."""
        if not names or self.defense_resources is None:
            return 1
        return copies_per_text(names, self.defense_resources)

    def for_defenses(self, names: tuple[str, ...]) -> SearchInputs:
        """These inputs as a student carrying ``names`` sees them: train, dev and proxy defended."""
        if not names:
            return self
        key = "+".join(names)
        splits = self.defended_splits.get(key)
        if splits is None:
            raise ValueError(f"no defended splits for {key!r} (prepared: {sorted(self.defended_splits)}; fix: list "
                             "the defenses in search_space.defenses or search_space.defense_choices)")
        return replace(self, **{name: split for name, split in splits.items()})
    val: EncodedSplit | None = None  # the validation slice selection uses (data.validation_size; None: dev)
    task_name: str = ""  # data.task, for the task's metrics (F1 on MRPC/QQP)
    split_stats: dict[str, Any] = field(default_factory=dict)  # sizes and majority-class rates of val and dev
    # supernet.fidelity=supernet: "+".join(defenses) -> rosearch.supernet.fidelity.SupernetWeights (plain arrays,
    # so the object store ships them to every worker once)
    supernets: Mapping[str, Any] | None = None

    @property
    def selection(self) -> EncodedSplit:
        """The split candidates are selected on: the validation slice, or dev when the run has none."""
        return self.dev if self.val is None else self.val
