"""Each finished candidate's trained weights, kept in the run directory.

A worker returns the student's files as bytes (no shared file system needed); the driver writes
them to ``<run_dir>/candidates/<genome_hash>/`` before it records the candidate, so a stored
candidate always has its weights. Full attacks and ``rosearch export`` then load them instead
of distilling again. The files are what ``save_pretrained`` writes (config + safetensors).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch

from rosearch.files.rundir import CANDIDATES_DIR
from rosearch.student.modeling import StudentForSequenceClassification


def candidate_dir(run_dir: str | Path, genome_hash: str) -> Path:
    return Path(run_dir) / CANDIDATES_DIR / genome_hash


def student_files(model: torch.nn.Module) -> dict[str, bytes]:
    """The files ``model.save_pretrained`` writes (safetensors, no pickle), as bytes."""
    with tempfile.TemporaryDirectory(prefix="rosearch-student-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        return {path.name: path.read_bytes() for path in sorted(Path(tmp).iterdir()) if path.is_file()}


def write_candidate_files(run_dir: str | Path, genome_hash: str, files: Mapping[str, bytes]) -> Path:
    """Publish ``files`` as the candidate's folder atomically (a reader never sees half of it)."""
    final = candidate_dir(run_dir, genome_hash)
    partial = final.with_name(f".{genome_hash}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    partial.mkdir(parents=True)
    try:
        for name, content in files.items():
            (partial / name).write_bytes(content)
        if final.exists():  # a re-run of a transiently failed candidate: the new files win
            shutil.rmtree(final)
        os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


def read_candidate_files(run_dir: str | Path, genome_hash: str) -> dict[str, bytes] | None:
    """The stored files of a candidate, or None when the run has none for it (a copy without ``candidates/``)."""
    folder = candidate_dir(run_dir, genome_hash)
    if not (folder / "config.json").is_file():
        return None
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def load_student(files: Mapping[str, bytes], device: torch.device | str = "cpu") -> torch.nn.Module:
    """A student from its files (as returned by :func:`student_files`), in eval mode on ``device``."""
    with tempfile.TemporaryDirectory(prefix="rosearch-student-") as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        model = StudentForSequenceClassification.from_pretrained(tmp, use_safetensors=True)
    return model.to(device).eval()
