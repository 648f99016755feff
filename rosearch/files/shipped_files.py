"""A model directory as bytes, so it reaches workers that share no file system with the driver.

Methods that run the teacher live in a worker (MATE-KD, adversarial fine-tuning and training)
and the MATE-KD generator need model directories that may exist only on the driver's machine.
The driver reads such a directory once into ``{file name: bytes}``, which travels with the run's
inputs through Ray's object store; a worker writes it under its own cache folder once per content
digest (atomically: a half-written folder is never used) and loads the model from there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

SHIPPED_SUBDIR = "shipped"


class ShippedFilesError(ValueError):
    """A directory cannot be shipped (missing, empty, or holding sub-folders)."""


def read_model_files(model_dir: str | Path) -> dict[str, bytes]:
    """Every file of the flat directory ``model_dir`` (as ``save_pretrained`` writes it)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ShippedFilesError(f"{model_dir} is not a directory (fix: point at a saved model directory)")
    entries = sorted(model_dir.iterdir())
    nested = [p.name for p in entries if p.is_dir()]
    if nested:
        raise ShippedFilesError(f"{model_dir} holds sub-folders {nested}; only flat model directories can be shipped")
    files = {p.name: p.read_bytes() for p in entries if p.is_file() and not p.name.startswith(".")}
    if not files:
        raise ShippedFilesError(f"{model_dir} holds no files (fix: save the model there with save_pretrained(dir))")
    return files


def files_digest(files: Mapping[str, bytes]) -> str:
    """16 hex chars over the names and contents: the folder name a worker unpacks into."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def materialize_files(files: Mapping[str, bytes], root: str | Path) -> Path:
    """The folder ``<root>/shipped/<digest>`` holding ``files``, written once (atomic rename)."""
    if not files:
        raise ShippedFilesError("no files to write (fix: ship the model directory's files with read_model_files)")
    for name in files:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ShippedFilesError(f"shipped file name {name!r} must be a plain file name")
    folder = Path(root).expanduser() / SHIPPED_SUBDIR / files_digest(files)
    if folder.is_dir():
        return folder
    partial = folder.with_name(f".{folder.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    partial.mkdir(parents=True)
    try:
        for name, content in files.items():
            (partial / name).write_bytes(content)
        os.replace(partial, folder)
    except OSError:
        if not folder.is_dir():  # not "another process published the same content first"
            raise
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return folder
