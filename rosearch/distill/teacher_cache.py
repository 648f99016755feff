"""Teacher outputs computed once per (teacher, split) and cached on disk.

Every candidate student of a search distils from the same teacher over the same split, so the
teacher runs exactly once: its logits and the hidden states that layer losses need are written
to ``<cache_dir>/teacher_outputs/<key>/`` (:mod:`rosearch.files.cache`; the key hashes the teacher's
and the split's fingerprints) and later memory-mapped. Hidden states are stored ragged (only
real tokens, float16), aligned with the split's ``offsets``, so a cache of a base-size teacher
over SST-2 stays around a gigabyte per layer rather than padded multiples of it.

Robust KD methods add two optional products of the same pass: head-averaged attention
probabilities of chosen layers (``layer_kd``; ragged too, the real T_i x T_i block of sequence
i, float16, so a layer costs 2 * sum(T_i^2) bytes: ~8 MB for 16k SST-2 sentences) and one
feature vector per example, the mean-pooled last hidden state (``rift``). An entry
without them reads as having neither, so a request for them computes them once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rosearch.data.batching import EncodedSplit, iterate_batches
from rosearch.runtime.progress import phase_bar
from rosearch.files.cache import TEACHER_OUTPUTS, CachePublishError, StaleEntry, atomic_dir, check_key, read_entry
from rosearch.distill.teacher import iter_predictions, model_inputs, teacher_fingerprint
from rosearch.errors import UserError
from rosearch.data.predictions import logits_accuracy

logger = logging.getLogger(__name__)

CACHE_SUBDIR = TEACHER_OUTPUTS.folder
META_FILE = "meta.json"
LOGITS_FILE = "logits.npy"

__all__ = [
    "TeacherCacheError",
    "TeacherOutputs",
    "cache_key",
    "compute_teacher_outputs",
    "load_or_compute_teacher_outputs",
    "load_teacher_outputs",
    "logits_accuracy",
]


class TeacherCacheError(UserError, ValueError):
    """Teacher outputs were asked for layers, splits or files they do not have."""


FEATURES_FILE = "features.npy"


def _hidden_file(layer: int) -> str:
    return f"hidden_{layer}.npy"


def _attention_file(layer: int) -> str:
    return f"attention_{layer}.npy"


def attention_offsets(split: EncodedSplit) -> np.ndarray:
    """Start of sequence i's T_i x T_i attention block in a ragged attention array (int64 [n + 1])."""
    offsets = np.zeros(len(split) + 1, dtype=np.int64)
    np.cumsum(split.lengths.astype(np.int64) ** 2, out=offsets[1:])
    return offsets


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
    # layer (1-based) -> float16 [sum of T_i^2]: head-mean attention probabilities, row-major per sequence
    attention: dict[int, np.ndarray] = field(default_factory=dict)
    attention_layers: tuple[int, ...] = ()
    features: np.ndarray | None = None  # float32 [n, D]: mean-pooled last hidden state per example

    def __post_init__(self) -> None:
        if self.logits.ndim != 2:
            raise TeacherCacheError(f"teacher logits must be [n, C], got shape {self.logits.shape}")
        if set(self.attention) != set(self.attention_layers):
            raise TeacherCacheError(
                f"attention for layers {sorted(self.attention)} does not match attention_layers {self.attention_layers}"
            )
        if self.features is not None and self.features.shape != (len(self.logits), self.hidden_size):
            raise TeacherCacheError(
                f"teacher features must be [{len(self.logits)}, {self.hidden_size}], got {self.features.shape}"
            )
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
        squares = int(attention_offsets(split)[-1]) if self.attention else 0
        if (
            len(self.logits) != len(split)
            or any(arr.shape[0] != tokens for arr in self.hidden.values())
            or any(arr.shape[0] != squares for arr in self.attention.values())
        ):
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
        """Layer ``layer`` for ``indices``, zero-padded like :func:`rosearch.data.batching.collate`.

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

    def attention_batch(
        self,
        layer: int,
        split: EncodedSplit,
        indices: list[int] | np.ndarray,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Head-mean attention of layer ``layer`` for ``indices``, zero-padded to [B, T_max, T_max]."""
        if layer not in self.attention:
            raise TeacherCacheError(
                f"teacher attention of layer {layer} is not cached (cached: {list(self.attention_layers)}; fix: "
                "request it with attention_layers=... when computing the teacher outputs)"
            )
        self.check_split(split)
        flat = self.attention[layer]
        starts = attention_offsets(split)
        indices = np.asarray(indices, dtype=np.int64)
        lengths = split.lengths[indices]
        width = int(lengths.max()) if len(indices) else 0
        out = np.zeros((len(indices), width, width), dtype=np.float32)  # [B, T, T]
        for row, (i, n) in enumerate(zip(indices, lengths)):
            out[row, :n, :n] = flat[starts[i]:starts[i + 1]].reshape(n, n)
        return torch.from_numpy(out).to(device=device, dtype=dtype)

    def features_batch(
        self, indices: list[int] | np.ndarray, *, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """The cached teacher features of ``indices`` (float32 [B, D])."""
        if self.features is None:
            raise TeacherCacheError(
                f"teacher outputs {self.key!r} hold no features (fix: request them with features=True when "
                "computing the teacher outputs)"
            )
        rows = np.asarray(self.features[np.asarray(indices, dtype=np.int64)], dtype=np.float32)
        return torch.from_numpy(rows).to(device)


# --------------------------------------------------------------------------------------------
# Computing
# --------------------------------------------------------------------------------------------


def _check_layers(model: torch.nn.Module, layers: tuple[int, ...], *, first: int = 0) -> tuple[int, ...]:
    depth = int(model.config.num_hidden_layers)
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not first <= layer <= depth:
            what = "layers 0 (embeddings) to" if first == 0 else "attention in layers 1 to"
            raise TeacherCacheError(f"teacher layer {layer!r} does not exist: the teacher has {what} {depth}")
    return tuple(sorted({int(layer) for layer in layers}))


def _eager_attention(model: torch.nn.Module) -> None:
    """Make the teacher return attention probabilities: fused SDPA kernels compute none, so switch
    to the eager implementation where the model can switch (models on transformers' attention
    interface); older model classes fall back to eager by themselves when asked for attentions."""
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    if getattr(model.config, "_attn_implementation", "eager") == "eager" or not callable(can_switch):
        return
    if can_switch():
        model.set_attn_implementation("eager")


def _array(directory: Path | None, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A zeroed array in RAM, or an ``.npy`` memmap in ``directory`` when given."""
    if directory is None:
        return np.zeros(shape, dtype=dtype)
    return np.lib.format.open_memmap(directory / name, mode="w+", dtype=dtype, shape=shape)


def _predictions(
    model: torch.nn.Module, split: EncodedSplit, batch_size: int, device: torch.device | str, hidden: bool, attentions: bool
) -> Iterator[tuple[dict[str, torch.Tensor], Any]]:
    """:func:`iter_predictions`, plus attention probabilities when ``attentions`` (no grad, eval mode)."""
    if not attentions:
        yield from iter_predictions(model, split, batch_size=batch_size, device=device, output_hidden_states=hidden)
        return
    model.eval()
    with torch.no_grad():
        for batch in iterate_batches(split, batch_size, shuffle=False, bucketing=True, device=device):
            yield batch, model(**model_inputs(batch), output_hidden_states=hidden, output_attentions=True)


def _compute(
    model: torch.nn.Module,
    split: EncodedSplit,
    layers: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    key: str,
    directory: Path | None,
    attention_layers: tuple[int, ...] = (),
    features: bool = False,
) -> TeacherOutputs:
    """One pass of the teacher; hidden states, attention and features go to ``.npy`` memmaps in
    ``directory`` when given."""
    if len(split) == 0:
        raise TeacherCacheError(f"split {split.fingerprint!r} is empty: there is nothing to run the teacher on")
    if batch_size < 1:
        raise TeacherCacheError(f"batch_size must be >= 1, got {batch_size}")
    hidden_size = int(model.config.hidden_size)
    tokens = int(split.offsets[-1])
    logits = np.zeros((len(split), split.num_labels), dtype=np.float32)
    hidden = {layer: _array(directory, _hidden_file(layer), (tokens, hidden_size), np.float16) for layer in layers}
    att_starts = attention_offsets(split)
    attention = {
        layer: _array(directory, _attention_file(layer), (int(att_starts[-1]),), np.float16) for layer in attention_layers
    }
    feats = _array(directory, FEATURES_FILE, (len(split), hidden_size), np.float32) if features else None
    model.to(device)
    if attention_layers:
        _eager_attention(model)
    with phase_bar(f"teacher outputs ({len(split)} examples)", len(split)) as advance:
        _fill(model, split, batch_size, device, layers, features, attention_layers, logits, hidden, feats, attention,
              att_starts, advance)
    return TeacherOutputs(
        logits=logits, hidden=hidden, layers=layers, hidden_size=hidden_size, key=key,
        attention=attention, attention_layers=attention_layers, features=feats,
    )


def _fill(model: torch.nn.Module, split: EncodedSplit, batch_size: int, device: torch.device | str,
          layers: tuple[int, ...], features: bool, attention_layers: tuple[int, ...], logits: np.ndarray,
          hidden: dict, feats: np.ndarray | None, attention: dict, att_starts: np.ndarray, advance: Any) -> None:
    """The teacher's pass over ``split``, written into the arrays (``advance`` counts examples)."""
    for batch, outputs in _predictions(model, split, batch_size, device, bool(layers) or features, bool(attention_layers)):
        indices = batch["indices"].cpu().numpy()
        advance(len(indices))
        logits[indices] = outputs.logits.float().cpu().numpy()  # [B, C]
        mask = batch["attention_mask"].bool()  # [B, T]; padding is on the right
        if layers:
            rows = np.concatenate([np.arange(split.offsets[i], split.offsets[i + 1]) for i in indices])
            for layer in layers:
                states = outputs.hidden_states[layer][mask]  # [sum of lengths, D], sequence by sequence
                hidden[layer][rows] = states.to(torch.float16).cpu().numpy()
        if feats is not None:
            last = outputs.hidden_states[-1].float()  # [B, T, D]
            weights = mask.unsqueeze(-1).to(last.dtype)  # [B, T, 1]
            feats[indices] = ((last * weights).sum(1) / weights.sum(1).clamp_min(1.0)).cpu().numpy()  # [B, D]
        for layer in attention_layers:
            if outputs.attentions is None:
                raise TeacherCacheError(
                    f"teacher {type(model).__name__} returned no attentions with output_attentions=True "
                    "(fix: load it with attn_implementation='eager', or drop the attention loss)"
                )
            probs = outputs.attentions[layer - 1].float().mean(dim=1).to(torch.float16).cpu().numpy()  # [B, T, T]
            for row, i in enumerate(indices):
                n = int(split.lengths[i])
                attention[layer][att_starts[i]:att_starts[i + 1]] = probs[row, :n, :n].reshape(-1)


def compute_teacher_outputs(
    model: torch.nn.Module,
    split: EncodedSplit,
    *,
    layers: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    key: str = "",
    attention_layers: tuple[int, ...] = (),
    features: bool = False,
) -> TeacherOutputs:
    """Run the teacher once over ``split`` (no grad, length-bucketed) and keep everything in RAM.

    Results are scattered back by index, so row ``i`` is example ``i`` whatever the batching.
    """
    return _compute(
        model, split, _check_layers(model, layers), batch_size, device, key, directory=None,
        attention_layers=_check_layers(model, attention_layers, first=1), features=features,
    )


# --------------------------------------------------------------------------------------------
# The on-disk cache
# --------------------------------------------------------------------------------------------


def cache_key(teacher_fp: str, split_fingerprint: str) -> str:
    """Key of one (teacher, split) cache; its directory name is a prefix of it. The whole split
    fingerprint is hashed because subsets extend their parent's, so a prefix of it would collide."""
    return TEACHER_OUTPUTS.key({"teacher": teacher_fp, "split": split_fingerprint})


def _read_meta(path: Path, key: str, split: EncodedSplit) -> dict:
    """The cache's metadata; :class:`StaleEntry` unless it is complete and belongs to this key and split."""
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    check_key(meta.get("key"), key)
    expected = {"n": len(split), "total_tokens": int(split.offsets[-1])}
    stale = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
    if stale:
        raise StaleEntry(f"it does not match this split ({stale})")
    _cached_products(meta)  # a meta without the product lists is unreadable, not a crash later
    return meta


def _cached_products(meta: dict) -> tuple[set[int], set[int], bool]:
    """(hidden layers, attention layers, features) a cache holds; older caches hold no attention/features."""
    return set(meta["layers"]), set(meta.get("attention_layers", ())), bool(meta.get("features", False))


def _covers(meta: dict | None, layers: tuple[int, ...], attention_layers: tuple[int, ...], features: bool) -> bool:
    """Whether a cache with ``meta`` holds every requested product."""
    if meta is None:
        return False
    held, held_attention, held_features = _cached_products(meta)
    return set(layers) <= held and set(attention_layers) <= held_attention and (held_features or not features)


def load_teacher_outputs(
    path: str | Path,
    layers: tuple[int, ...] | None = None,
    *,
    attention_layers: tuple[int, ...] | None = None,
    features: bool | None = None,
) -> TeacherOutputs:
    """Open a cache directory written by :func:`load_or_compute_teacher_outputs`.

    Hidden states, attention and features are memory-mapped read-only, so workers share the
    page cache instead of each holding a copy. ``None`` opens everything cached of that kind.
    """
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise TeacherCacheError(f"{path} is not a complete teacher-output cache (no {META_FILE})")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    cached, cached_attention, cached_features = _cached_products(meta)
    wanted = tuple(sorted(cached)) if layers is None else tuple(sorted(set(layers)))
    missing = sorted(set(wanted) - cached)
    if missing:
        raise TeacherCacheError(f"teacher-output cache {path} lacks layers {missing} (cached: {sorted(cached)})")
    wanted_attention = tuple(sorted(cached_attention)) if attention_layers is None else tuple(sorted(set(attention_layers)))
    missing = sorted(set(wanted_attention) - cached_attention)
    if missing:
        raise TeacherCacheError(
            f"teacher-output cache {path} lacks attention of layers {missing} (cached: {sorted(cached_attention)})"
        )
    if features and not cached_features:
        raise TeacherCacheError(f"teacher-output cache {path} holds no features")
    load_features = cached_features if features is None else features

    def mapped(name: str) -> np.ndarray:
        return np.load(path / name, mmap_mode="r", allow_pickle=False)

    return TeacherOutputs(
        logits=np.load(path / LOGITS_FILE, allow_pickle=False),
        hidden={layer: mapped(_hidden_file(layer)) for layer in wanted},
        layers=wanted,
        hidden_size=int(meta["hidden_size"]),
        key=path.name,
        attention={layer: mapped(_attention_file(layer)) for layer in wanted_attention},
        attention_layers=wanted_attention,
        features=mapped(FEATURES_FILE) if load_features else None,
    )


def _write_cache(
    model: torch.nn.Module,
    split: EncodedSplit,
    layers: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    final: Path,
    key: str,
    teacher_fp: str,
    attention_layers: tuple[int, ...] = (),
    features: bool = False,
) -> None:
    """Compute into a temporary sibling directory, then rename it into place (atomic publish).

    An entry a concurrent writer published meanwhile is kept when it holds everything computed
    here; an older, smaller one is replaced.
    """

    def serves(path: Path) -> bool:
        meta = read_entry(path, lambda p: _read_meta(p, key, split), what="teacher outputs", log=logger)
        return _covers(meta, layers, attention_layers, features)

    try:
        with atomic_dir(final, keep=serves) as tmp:
            outputs = _compute(
                model, split, layers, batch_size, device, final.name, directory=tmp,
                attention_layers=attention_layers, features=features,
            )
            meta = _finish(outputs, tmp, split)
            del outputs  # release the memmaps before the directory moves
            meta = {**TEACHER_OUTPUTS.stamp(key), "teacher_fingerprint": teacher_fp, **meta}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except CachePublishError as err:
        raise TeacherCacheError(f"could not publish teacher outputs: {err}") from err


def _finish(outputs: TeacherOutputs, directory: Path, split: EncodedSplit) -> dict[str, Any]:
    """Flush the memmaps, write the logits; the metadata describing them."""
    for arr in (*outputs.hidden.values(), *outputs.attention.values()):
        arr.flush()
    if outputs.features is not None:
        outputs.features.flush()
    np.save(directory / LOGITS_FILE, outputs.logits)
    return {
        "split_fingerprint": split.fingerprint,
        "n": len(split),
        "total_tokens": int(split.offsets[-1]),
        "num_labels": int(outputs.logits.shape[1]),
        "hidden_size": outputs.hidden_size,
        "layers": list(outputs.layers),
        "attention_layers": list(outputs.attention_layers),
        "features": outputs.features is not None,
        "accuracy": logits_accuracy(outputs.logits, split.labels),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def load_or_compute_teacher_outputs(
    model: torch.nn.Module,
    model_dir: str | Path,
    split: EncodedSplit,
    *,
    layers: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    cache_dir: str | Path,
    attention_layers: tuple[int, ...] = (),
    features: bool = False,
) -> TeacherOutputs:
    """Teacher outputs for ``split``, from ``cache_dir`` when present, else computed and cached.

    The cache is keyed by :func:`teacher_fingerprint` of ``model_dir`` (which must hold the
    weights ``model`` was loaded from) and the split's fingerprint. A cache missing some of the
    requested hidden layers, attention layers or the features is recomputed with the union of
    what it holds and what is requested, so alternating requests do not thrash. A hit never
    runs ``model``. The result holds exactly what was requested.
    """
    wanted = _check_layers(model, layers)
    wanted_attention = _check_layers(model, attention_layers, first=1)
    teacher_fp = teacher_fingerprint(model_dir)
    key = cache_key(teacher_fp, split.fingerprint)
    final = TEACHER_OUTPUTS.entry(cache_dir, key)
    meta = read_entry(final, lambda p: _read_meta(p, key, split), what="teacher outputs", log=logger)
    held = _cached_products(meta) if meta is not None else (set(), set(), False)
    if _covers(meta, wanted, wanted_attention, features):
        logger.info("teacher outputs: cache hit (%s, layers %s)", final, list(wanted))
    else:
        union = tuple(sorted(set(wanted) | held[0]))
        union_attention = tuple(sorted(set(wanted_attention) | held[1]))
        logger.info(
            "teacher outputs: %s; running the teacher over %d examples (layers %s, attention %s, features %s) into %s",
            "cache miss" if meta is None else "the cache lacks part of the request",
            len(split), list(union), list(union_attention), features or held[2], final,
        )
        _write_cache(
            model, split, union, batch_size, device, final, key, teacher_fp,
            attention_layers=union_attention, features=features or held[2],
        )
    outputs = load_teacher_outputs(final, wanted, attention_layers=wanted_attention, features=features)
    outputs.check_split(split)
    logger.info(
        "teacher accuracy on split %s: %.4f (%d examples)",
        split.fingerprint, logits_accuracy(outputs.logits, split.labels), len(split),
    )
    return outputs
