"""Content-keyed disk caches: one key scheme, one entry layout, atomic publishing, forgiving reads.

Every expensive product a run reuses (tokenised splits, teacher outputs, the MATE-KD generator,
augmented copies, the adversarial proxy set) lives under ``run.cache_dir`` as an *entry* of a
*kind* (:class:`CacheKind`): its folder and its format version. An entry's name is a prefix of its
key, a hash of a JSON description of everything that decides its content, the format version
included, so changing an input or bumping a version simply misses. Entries are written to a
temporary sibling and renamed into place, so a crash or a concurrent writer never leaves a half
entry where a reader looks; a missing, corrupt or stale entry reads as a miss, never a crash.

The callers keep only what is theirs: what goes in the key and how the payload is serialised.
The NLTK data written for TextAttack (:mod:`rosearch.attack.resources`) uses only the atomic
writes. This module is a leaf (standard library only), so any layer may use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PUBLISH_ATTEMPTS = 3
# What reading a corrupt or truncated entry raises (json, numpy .npy/.npz, text decoding).
_UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile)


class CachePublishError(OSError):
    """An entry could not be renamed into place (other writers kept replacing it, or the disk refused)."""


class StaleEntry(ValueError):
    """An entry that exists but belongs to another key, format or input: a miss, not an error."""


@dataclass(frozen=True)
class CacheKind:
    """One kind of cached product: its folder under the cache dir and its format version.

    Bump ``version`` when the payload's layout or meaning changes, so that old entries miss.
    """

    folder: str
    version: int
    name_chars: int = 24  # key characters in an entry's name (a read checks the key stored inside)

    def key(self, description: Mapping[str, Any]) -> str:
        """sha256 hex of ``description`` plus the format version (stable across processes)."""
        return content_key(self.version, description)

    def entry(self, cache_dir: str | Path, key: str, *, label: str = "", suffix: str = "") -> Path:
        """``<cache_dir>/<folder>/[<label>-]<key prefix><suffix>``; ``label`` makes names readable."""
        name = key[: self.name_chars]
        return Path(cache_dir) / self.folder / f"{f'{label}-' if label else ''}{name}{suffix}"

    def stamp(self, key: str) -> dict[str, Any]:
        """Fields an entry's metadata stores, so a read can tell it is this key's."""
        return {"format": self.version, "key": key}


# Every kind of cache under run.cache_dir. Bump a kind's version when its payload (or what its
# writer computes) changes; the key hashes the version, and a read checks the stored key.
TOKENISED_SPLITS = CacheKind("data", 1, name_chars=16)  # rosearch.data.tasks: encoded splits (.npz)
TEACHER_OUTPUTS = CacheKind("teacher_outputs", 1)  # rosearch.distill.teacher_cache: a directory per entry
MATE_KD_GENERATOR = CacheKind("mate_kd", 1)  # rosearch.distill.mate_kd: an HF checkpoint directory
AUGMENTED_COPIES = CacheKind("augment", 1)  # rosearch.distill.augment: JSON
PROXY_SET = CacheKind("proxy", 2)  # rosearch.attack.proxy: JSON; 2: failed attacks' hardest variants included
SUPERNET = CacheKind("supernet", 1)  # rosearch.supernet.fidelity: weights.safetensors + meta.json (+ checkpoint.pt while training)


def content_key(version: int, description: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``description`` with ``"format": version`` added.

    Canonical: sorted keys, non-ASCII kept as is; tuples hash like lists. A description that is
    not JSON-able raises ``TypeError``: a key must not depend on ``repr``. This is the scheme
    each cache used on its own before, so keys (and the entry names made of them) carry over.
    """
    if "format" in description:
        raise ValueError("a cache description must not hold a 'format' field: the kind's version goes there")
    blob = json.dumps({**description, "format": version}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_key(stored: Any, key: str) -> None:
    """Raise :class:`StaleEntry` unless an entry's stored key is ``key``."""
    if stored != key:
        raise StaleEntry(f"it holds key {str(stored)[:24]!r}, not {key[:24]!r}")


def read_entry(path: Path, load: Callable[[Path], T], *, what: str, log: logging.Logger | None = None) -> T | None:
    """``load(path)``, or None when the entry is missing, stale or unreadable.

    ``load`` raises :class:`StaleEntry` for an entry of another key/format/input, and whatever
    parsing raises for a corrupt one; both are logged (with the caller's logger) and read as a
    miss, so the caller recomputes and overwrites it.
    """
    log = log or logger
    if not path.exists():
        log.debug("%s: no cache entry at %s", what, path)
        return None
    try:
        return load(path)
    except StaleEntry as err:
        log.info("%s: cache entry %s is stale (%s); recomputing", what, path, err)
    except _UNREADABLE as err:
        log.warning("%s: cache entry %s is unreadable (%s: %s); recomputing", what, path, type(err).__name__, err)
    return None


def _temp_sibling(path: Path) -> Path:
    # A leading dot hides it from nltk's corpus readers and from globs of entries; the suffix is
    # kept last because some writers (numpy.savez) append theirs otherwise.
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; when the block ends normally it replaces
    ``path`` in one rename, otherwise it is removed. Readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(final: Path, *, keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary sibling directory of ``final``; when the block ends normally it is
    renamed to ``final``, otherwise removed.

    A directory rename cannot replace a non-empty directory, so an entry already at ``final``
    (a concurrent writer's, or an older one) is kept when ``keep(final)`` says it serves,
    else moved aside and deleted. Readers see the old entry, none, or the new one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        _publish_dir(tmp, final, keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish_dir(tmp: Path, final: Path, keep: Callable[[Path], bool] | None) -> None:
    """Rename ``tmp`` to ``final``, retrying when other writers publish in between."""
    for _ in range(_PUBLISH_ATTEMPTS):
        try:
            os.rename(tmp, final)
            return
        except OSError:
            pass  # something is at `final`: decide below, then retry
        if keep is not None and keep(final):
            return
        _move_aside(final)
    raise CachePublishError(f"could not publish {final} after {_PUBLISH_ATTEMPTS} attempts (other writers kept replacing it)")


def _move_aside(final: Path) -> None:
    """Rename ``final`` to a hidden unique name and delete it (it may vanish first: another writer's doing)."""
    trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
    try:
        os.rename(final, trash)
    except FileNotFoundError:
        return
    if trash.is_dir():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)
