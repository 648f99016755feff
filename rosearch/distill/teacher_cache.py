"""Teacher outputs computed once per (teacher, split) and cached on disk.

Every candidate student of a search distils from the same teacher over the same split, so the
teacher runs exactly once: its logits and the hidden states that layer losses need are written
to ``<cache_dir>/teacher_outputs/<teacher fp>-<split fp>/`` and later memory-mapped. Hidden
states are stored ragged (only real tokens, float16), aligned with the split's ``offsets``, so a
cache of a base-size teacher over SST-2 stays around a gigabyte per layer rather than padded
multiples of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from rosearch.batching import EncodedSplit
from rosearch.distill.teacher import iter_predictions, teacher_fingerprint
from rosearch.evaluate.accuracy import logits_accuracy

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "teacher_outputs"
META_FILE = "meta.json"
LOGITS_FILE = "logits.npy"
FORMAT_VERSION = 1
_PUBLISH_ATTEMPTS = 3

__all__ = [
    "TeacherCacheError",
    "TeacherOutputs",
    "cache_key",
    "compute_teacher_outputs",
    "load_or_compute_teacher_outputs",
    "load_teacher_outputs",
    "logits_accuracy",
]


class TeacherCacheError(ValueError):
    """Teacher outputs were asked for layers, splits or files they do not have."""


def _hidden_file(layer: int) -> str:
    return f"hidden_{layer}.npy"


@dataclass(frozen=True, eq=False)
class TeacherOutputs:
    """The teacher's view of one split: row ``i`` of ``logits`` is example ``i``; ``hidden[l]``
    holds layer ``l``'s states for the real tokens of every example, sequence ``i`` at rows
    ``split.offsets[i]:split.offsets[i+1]``. Layer 0 is the embedding output."""

    logits: np.ndarray  # float32 [n, C]
    hidden: dict[int, np.ndarray]  # layer -> float16 [total_tokens, D] (np.memmap when loaded)
    layers: tuple[int, ...]
    hidden_size: int
    key: str

    def __post_init__(self) -> None:
        if self.logits.ndim != 2:
            raise TeacherCacheError(f"teacher logits must be [n, C], got shape {self.logits.shape}")
        if set(self.hidden) != set(self.layers):
            raise TeacherCacheError(f"hidden states for layers {sorted(self.hidden)} do not match layers {self.layers}")
        rows = {arr.shape[0] for arr in self.hidden.values()}
        if len(rows) > 1:
            raise TeacherCacheError(f"hidden-state arrays disagree on the token count: {sorted(rows)}")
        for layer, arr in self.hidden.items():
            if arr.ndim != 2 or arr.shape[1] != self.hidden_size:
                raise TeacherCacheError(
                    f"hidden states of layer {layer} must be [total_tokens, {self.hidden_size}], got {arr.shape}"
                )

    def check_split(self, split: EncodedSplit) -> None:
        """Raise unless these outputs have the shape of ``split`` (catches a mixed-up split)."""
        tokens = int(split.offsets[-1])
        if len(self.logits) != len(split) or any(arr.shape[0] != tokens for arr in self.hidden.values()):
            raise TeacherCacheError(
                f"teacher outputs {self.key!r} cover {len(self.logits)} examples but split "
                f"{split.fingerprint!r} has {len(split)} examples / {tokens} tokens (fix: use the outputs "
                "computed for this split)"
            )

    def hidden_batch(
        self,
        layer: int,
        split: EncodedSplit,
        indices: list[int] | np.ndarray,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Layer ``layer`` for ``indices``, zero-padded like :func:`rosearch.batching.collate`.

        Returns [B, T_max, D] where T_max is the longest of the chosen sequences.
        """
        if layer not in self.hidden:
            raise TeacherCacheError(
                f"teacher layer {layer} is not cached (cached: {list(self.layers)}; fix: add it to "
                "teacher.cache_hidden_layers)"
            )
        self.check_split(split)
        states = self.hidden[layer]
        indices = np.asarray(indices, dtype=np.int64)
        lengths = split.lengths[indices]
        width = int(lengths.max()) if len(indices) else 0
        out = np.zeros((len(indices), width, self.hidden_size), dtype=np.float32)  # [B, T, D]
        for row, i in enumerate(indices):
            out[row, : lengths[row]] = states[split.offsets[i]:split.offsets[i + 1]]
        return torch.from_numpy(out).to(device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Computing
# --------------------------------------------------------------------------------------------


def _check_layers(model: torch.nn.Module, layers: tuple[int, ...]) -> tuple[int, ...]:
    depth = int(model.config.num_hidden_layers)
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer <= depth:
            raise TeacherCacheError(
                f"teacher layer {layer!r} does not exist: the teacher has layers 0 (embeddings) to {depth}"
            )
    return tuple(sorted({int(layer) for layer in layers}))


def _compute(
    model: torch.nn.Module,
    split: EncodedSplit,
    layers: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    key: str,
    directory: Path | None,
) -> TeacherOutputs:
    """One pass of the teacher; hidden states go to ``.npy`` memmaps in ``directory`` when given."""
    if len(split) == 0:
        raise TeacherCacheError(f"split {split.fingerprint!r} is empty: there is nothing to run the teacher on")
    if batch_size < 1:
        raise TeacherCacheError(f"batch_size must be >= 1, got {batch_size}")
    hidden_size = int(model.config.hidden_size)
    tokens = int(split.offsets[-1])
    logits = np.zeros((len(split), split.num_labels), dtype=np.float32)
    hidden: dict[int, np.ndarray] = {}
    for layer in layers:
        shape = (tokens, hidden_size)
        hidden[layer] = (
            np.zeros(shape, dtype=np.float16) if directory is None
            else np.lib.format.open_memmap(directory / _hidden_file(layer), mode="w+", dtype=np.float16, shape=shape)
        )
    model.to(device)
    for batch, outputs in iter_predictions(
        model, split, batch_size=batch_size, device=device, output_hidden_states=bool(layers)
    ):
        indices = batch["indices"].cpu().numpy()
        logits[indices] = outputs.logits.float().cpu().numpy()  # [B, C]
        if not layers:
            continue
        mask = batch["attention_mask"].bool()  # [B, T]; padding is on the right
        rows = np.concatenate([np.arange(split.offsets[i], split.offsets[i + 1]) for i in indices])
        for layer in layers:
            states = outputs.hidden_states[layer][mask]  # [sum of lengths, D], sequence by sequence
            hidden[layer][rows] = states.to(torch.float16).cpu().numpy()
    return TeacherOutputs(logits=logits, hidden=hidden, layers=layers, hidden_size=hidden_size, key=key)


def compute_teacher_outputs(
    model: torch.nn.Module,
    split: EncodedSplit,
    *,
    layers: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    key: str = "",
) -> TeacherOutputs:
    """Run the teacher once over ``split`` (no grad, length-bucketed) and keep everything in RAM.

    Results are scattered back by index, so row ``i`` is example ``i`` whatever the batching.
    """
    return _compute(model, split, _check_layers(model, layers), batch_size, device, key, directory=None)


# --------------------------------------------------------------------------------------------
# The on-disk cache
# --------------------------------------------------------------------------------------------


def cache_key(teacher_fp: str, split_fingerprint: str) -> str:
    """Directory name of one (teacher, split) cache. The split fingerprint is hashed because
    subsets extend their parent's fingerprint, so its prefix alone would collide."""
    split_hash = hashlib.sha256(split_fingerprint.encode()).hexdigest()
    return f"{teacher_fp[:16]}-{split_hash[:16]}"


def _read_meta(path: Path, teacher_fp: str, split: EncodedSplit) -> dict | None:
    """The cache's metadata when it is complete and belongs to this teacher and split."""
    meta_file = path / META_FILE
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    expected = {
        "format": FORMAT_VERSION,
        "teacher_fingerprint": teacher_fp,
        "split_fingerprint": split.fingerprint,
        "n": len(split),
        "total_tokens": int(split.offsets[-1]),
    }
    stale = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
    if stale:
        logger.warning("teacher outputs at %s do not match this teacher/split (%s); recomputing", path, stale)
        return None
    return meta


def load_teacher_outputs(path: str | Path, layers: tuple[int, ...] | None = None) -> TeacherOutputs:
    """Open a cache directory written by :func:`load_or_compute_teacher_outputs`.

    Hidden states are memory-mapped read-only, so workers share the page cache instead of each
    holding a copy. ``layers=None`` opens every cached layer.
    """
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise TeacherCacheError(f"{path} is not a complete teacher-output cache (no {META_FILE})")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    cached = tuple(meta["layers"])
    wanted = cached if layers is None else tuple(sorted(set(layers)))
    missing = sorted(set(wanted) - set(cached))
    if missing:
        raise TeacherCacheError(f"teacher-output cache {path} lacks layers {missing} (cached: {list(cached)})")
    return TeacherOutputs(
        logits=np.load(path / LOGITS_FILE, allow_pickle=False),
        hidden={layer: np.load(path / _hidden_file(layer), mmap_mode="r", allow_pickle=False) for layer in wanted},
        layers=wanted,
        hidden_size=int(meta["hidden_size"]),
        key=path.name,
    )


def _write_cache(
    model: torch.nn.Module,
    split: EncodedSplit,
    layers: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    final: Path,
    teacher_fp: str,
) -> None:
    """Compute into a temporary sibling directory, then rename it into place (atomic publish)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        outputs = _compute(model, split, layers, batch_size, device, final.name, directory=tmp)
        for arr in outputs.hidden.values():
            arr.flush()
        np.save(tmp / LOGITS_FILE, outputs.logits)
        meta = {
            "format": FORMAT_VERSION,
            "teacher_fingerprint": teacher_fp,
            "split_fingerprint": split.fingerprint,
            "n": len(split),
            "total_tokens": int(split.offsets[-1]),
            "num_labels": int(outputs.logits.shape[1]),
            "hidden_size": outputs.hidden_size,
            "layers": list(layers),
            "accuracy": logits_accuracy(outputs.logits, split.labels),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        del outputs  # release the memmaps before the directory moves
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, moving an older cache aside first (a directory rename cannot
    replace a non-empty directory). Readers see the old cache, no cache, or the new one."""
    for _ in range(_PUBLISH_ATTEMPTS):
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex}"
            try:
                final.rename(old)
            except FileNotFoundError:
                pass  # another process moved it first
            else:
                shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(final)
            return
        except OSError:
            continue  # another process published in between; move theirs aside and retry
    raise TeacherCacheError(f"could not publish teacher outputs to {final} after {_PUBLISH_ATTEMPTS} attempts")


def load_or_compute_teacher_outputs(
    model: torch.nn.Module,
    model_dir: str | Path,
    split: EncodedSplit,
    *,
    layers: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    cache_dir: str | Path,
) -> TeacherOutputs:
    """Teacher outputs for ``split``, from ``cache_dir`` when present, else computed and cached.

    The cache is keyed by :func:`teacher_fingerprint` of ``model_dir`` (which must hold the
    weights ``model`` was loaded from) and the split's fingerprint. A cache missing some of the
    requested layers is recomputed with the union of its layers and the requested ones, so
    alternating requests do not thrash. A hit never runs ``model``.
    """
    wanted = _check_layers(model, layers)
    teacher_fp = teacher_fingerprint(model_dir)
    final = Path(cache_dir) / CACHE_SUBDIR / cache_key(teacher_fp, split.fingerprint)
    meta = _read_meta(final, teacher_fp, split)
    if meta is not None and set(wanted) <= set(meta["layers"]):
        logger.info("teacher outputs: cache hit (%s, layers %s)", final, list(wanted))
    else:
        union = tuple(sorted(set(wanted) | set(meta["layers"] if meta else ())))
        logger.info(
            "teacher outputs: %s; running the teacher over %d examples (layers %s) into %s",
            "cache miss" if meta is None else f"cache has layers {meta['layers']} only",
            len(split), list(union), final,
        )
        _write_cache(model, split, union, batch_size, device, final, teacher_fp)
    outputs = load_teacher_outputs(final, wanted)
    outputs.check_split(split)
    logger.info(
        "teacher accuracy on split %s: %.4f (%d examples)",
        split.fingerprint, logits_accuracy(outputs.logits, split.labels), len(split),
    )
    return outputs
