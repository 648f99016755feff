"""What the robust distillation methods of a run hand to every candidate: :class:`MethodInputs`.

Built once per run by :func:`rosearch.distill.methods.prepare_method_inputs`, read by the trainer
and the methods (:mod:`~rosearch.distill.mate_kd`, :mod:`~rosearch.distill.adversarial`,
:mod:`~rosearch.distill.adv_train`). It sits below all of them, so they import it, never
``methods`` (which imports them to do the preparation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rosearch.files.shipped_files import materialize_files

if TYPE_CHECKING:
    from rosearch.data.batching import EncodedSplit
    from rosearch.config import AttackConfig
    from rosearch.data.tasks import Example
    from rosearch.distill.teacher_cache import TeacherOutputs

class MethodInputsError(ValueError):
    """The trainer was asked for a method whose once-per-run inputs are missing or do not fit."""


@dataclass(frozen=True, eq=False)
class MethodInputs:
    """What the methods of a run need beyond the clean split and its teacher outputs.

    Built once by :func:`prepare_method_inputs`; read by :func:`rosearch.distill.trainer.distill`.
    On Ray the teacher's and the generator's files travel as bytes too (``teacher_files``,
    ``generator_files``): a worker unpacks them under its own ``cache_dir`` and never reads the
    driver's ``teacher_dir`` / ``generator_dir`` (:meth:`teacher_path`, :meth:`generator_path`).
    """

    methods: tuple[str, ...]
    teacher_dir: str  # the live teacher of mate_kd and of adv_finetune's and adv_train's soft labels
    tokenizer_files: Mapping[str, bytes]  # the teacher's tokenizer (rosearch.files.tokenizer_files)
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
    # ascc
    substitutions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # training word -> its substitutes
    timings: dict[str, float] = field(default_factory=dict)  # seconds per preparation stage
    # Ray: the live teacher's / MATE-KD generator's directory as {file: bytes} ({}: use the paths above)
    teacher_files: Mapping[str, bytes] = field(default_factory=dict)
    generator_files: Mapping[str, bytes] = field(default_factory=dict)

    def teacher_path(self) -> str:
        """The live teacher's directory where this runs: unpacked from shipped bytes, else ``teacher_dir``."""
        return str(materialize_files(self.teacher_files, self.cache_dir)) if self.teacher_files else self.teacher_dir

    def generator_path(self) -> str | None:
        """The MATE-KD generator's directory where this runs (see :meth:`teacher_path`)."""
        return str(materialize_files(self.generator_files, self.cache_dir)) if self.generator_files else self.generator_dir

    def require(self, method: str) -> None:
        """Raise :class:`MethodInputsError` unless these inputs serve ``method``."""
        missing = {
            "augment": self.augmented is None or self.augmented_outputs is None,
            "mate_kd": self.generator_dir is None or self.mask_token_id is None,
            "adv_finetune": not self.train_examples,
            "adv_train": not self.train_examples,
            "ascc": not self.substitutions,
        }.get(method, False)
        if missing:
            raise MethodInputsError(
                f"distill.methods has {method!r} but the method inputs were prepared for {list(self.methods)} "
                f"(fix: build them with prepare_method_inputs for a config whose distill.methods include {method!r})"
            )
