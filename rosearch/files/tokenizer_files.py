"""A tokenizer as a handful of bytes, so it travels to workers that do not share a file system.

Attacks run inside workers and need the teacher's tokenizer (students share it). On a Ray
cluster the teacher directory may exist only on the driver's machine, so the driver reads the
tokenizer's files once and ships them with the run's inputs; a worker writes them to a local
temporary folder (once per content digest) and loads the tokenizer from there.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rosearch.files.shipped_files import materialize_files

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt",
    "added_tokens.json", "spiece.model", "sentencepiece.bpe.model",
)


class TokenizerFilesError(ValueError):
    """A directory holds no tokenizer files."""


def read_tokenizer_files(model_dir: str | Path) -> dict[str, bytes]:
    """The tokenizer files of ``model_dir`` (those of :data:`TOKENIZER_FILES` that exist)."""
    model_dir = Path(model_dir)
    files = {name: (model_dir / name).read_bytes() for name in TOKENIZER_FILES if (model_dir / name).is_file()}
    if not files:
        raise TokenizerFilesError(
            f"{model_dir} holds no tokenizer files (looked for {', '.join(TOKENIZER_FILES[:4])}, ...) "
            "(fix: save the tokenizer next to the model with tokenizer.save_pretrained(dir))"
        )
    return files


def materialize_tokenizer(files: Mapping[str, bytes], root: str | Path | None = None) -> Any:
    """Load the tokenizer whose files are ``files``, writing them under ``root`` (default: temp dir) once."""
    # lazy: transformers takes seconds to import; this module is light (the CLI and workers read tokenizer bytes)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(materialize_files(files, Path(root or tempfile.gettempdir()) / "rosearch-tokenizers")))
