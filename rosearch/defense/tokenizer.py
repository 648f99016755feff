"""A fast tokenizer that applies the student's input defenses before tokenising, so a plain
``transformers.pipeline("text-classification", model=DIR)`` (after
``rosearch.student.modeling.register_auto_classes()``) queries the defended student.

An exported defended student names this class in ``tokenizer_config.json``; the tokenizer reads
``defense.json.gz`` from the directory it is loaded from. Pre-split words
(``is_split_into_words=True``) pass undefended: the defenses work on raw text.

A smoothing defense makes every text k rows (its copies, consecutive) and adds
``smoothing_copies`` (k per text) to the encoding; the student's forward then answers one row
per text, the log of the copies' mean probability, so ``pipeline`` and
``model(**tokenizer(texts, return_tensors="pt"))`` give the smoothed model. A caller that applies
the defense itself (``rosearch predict``) sets ``defend_inputs = False``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from rosearch.defense.pipeline import DEFENSE_FILE, DefenseError, defend_copies, load_defense

DEFENDED_TOKENIZER_CLASS = "DefendedTokenizerFast"


@functools.cache
def defended_tokenizer_class() -> type:
    """The tokenizer class (created on first use: importing this module does not import transformers)."""
    # lazy: transformers takes seconds to import; defense is a light leaf package (the tokenizer class is made on use)
    from transformers import BatchEncoding, PreTrainedTokenizerFast

    class DefendedTokenizerFast(PreTrainedTokenizerFast):
        """A ``PreTrainedTokenizerFast`` whose every raw text passes the saved input defense first."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._defense: Any = None
            self.defend_inputs = True  # False: the caller passes texts it defended itself

        @property
        def defense(self) -> Any:
            if self._defense is None:
                defense = load_defense(self.name_or_path) if self.name_or_path else None
                if defense is None:
                    raise DefenseError(
                        f"{self.name_or_path!r} names {DEFENDED_TOKENIZER_CLASS} but holds no {DEFENSE_FILE} "
                        "(fix: export the student again with rosearch, or copy the file back)")
                self._defense = defense
            return self._defense

        def _batch_encode_plus(self, batch_text_or_text_pairs: Any, *args: Any, is_split_into_words: bool = False,
                               **kwargs: Any) -> Any:
            if is_split_into_words or not self.defend_inputs:
                return super()._batch_encode_plus(batch_text_or_text_pairs, *args,
                                                  is_split_into_words=is_split_into_words, **kwargs)
            texts = list(batch_text_or_text_pairs)
            encoding = super()._batch_encode_plus(defend_copies(self.defense, texts), *args, **kwargs)
            copies = self.defense.copies_per_text
            if copies > 1:  # the student's forward joins each text's k rows back into one answer
                counts = BatchEncoding({"smoothing_copies": [copies] * len(texts)}, tensor_type=kwargs.get("return_tensors"))
                encoding["smoothing_copies"] = counts["smoothing_copies"]
            return encoding

        def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
            out = super().save_pretrained(save_directory, *args, **kwargs)
            self.defense.save(save_directory)  # the class is only usable with its defense beside it
            return out

    DefendedTokenizerFast.__name__ = DefendedTokenizerFast.__qualname__ = DEFENDED_TOKENIZER_CLASS
    return DefendedTokenizerFast


def mark_tokenizer_defended(directory: str | Path) -> None:
    """Make the tokenizer saved in ``directory`` load as :func:`defended_tokenizer_class`."""
    path = Path(directory) / "tokenizer_config.json"
    if not (Path(directory) / "tokenizer.json").is_file():
        raise DefenseError(f"{directory} has no tokenizer.json: only fast tokenizers can carry the defense")
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = DEFENDED_TOKENIZER_CLASS
    config.pop("auto_map", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
