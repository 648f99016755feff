"""Output paths: a command writes only where nothing is, or over an earlier output of its own kind.

Like ``git`` and ``rsync``, rosearch never overwrites what it did not create: ``report --out``
replaces only an HTML report it wrote (recognised by its generator tag), ``stats --out`` only a
folder of its own CSV tables, ``export --out`` only a folder of exported students, ``attack --out``
only a folder of attack reports, and a search starts only in an empty directory or a run
directory. Anything else, above all a run's ``results.sqlite``, is refused with exit code 2
before any work is done, and the message names the path, what is there and the fix.

Standard library only: the checks run before the commands import their heavy libraries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from rosearch.errors import UserError

REPORT_GENERATOR = "rosearch report"  # <meta name="generator" content="..."> of every report rosearch writes
_REPORT_MARKERS = (f'<meta name="generator" content="{REPORT_GENERATOR}', "<title>rosearch report: ")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SHOWN = 3  # foreign entries named in a refusal


class OutputPathError(UserError, ValueError):
    """An output path exists and holds something rosearch did not write there (it would be overwritten)."""


def _what_is(path: Path) -> str:
    """A few words on what ``path`` holds, for the refusal message."""
    if path.is_dir():
        return "a directory"
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError:
        return "a file"
    if head == _SQLITE_MAGIC:
        return "a SQLite file (a run's results store?)" if path.name != "results.sqlite" else "a run's results store"
    return "a file"


def is_rosearch_report(path: Path) -> bool:
    """True for an HTML report ``rosearch report`` wrote (its generator tag, or older reports' title)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return head.startswith("<!DOCTYPE html>") and any(marker in head for marker in _REPORT_MARKERS)


def check_output_file(path: Path, flag: str, kind: str, ours: Callable[[Path], bool], suffix: str = ".html") -> None:
    """Refuse ``path`` when it exists and ``ours`` does not recognise it as an earlier output of this kind
    (``suffix``: the kind's file suffix, for the example in the message)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_file() and ours(path):
        return
    example = path.parent / (f"new-{path.name}" if path.suffix == suffix else f"report{suffix}")
    raise OutputPathError(
        f"{flag} {path}: it exists and is {_what_is(path)}, not {kind} rosearch wrote; writing there would "
        f"destroy it (fix: pass {flag} a new file name, e.g. {example}"
        f"{'' if path.is_dir() else ', or move the file away first'})"
    )


def check_output_dir(path: Path, flag: str, kind: str, ours: Callable[[Path], bool]) -> None:
    """Refuse ``path`` when it is a file, or a non-empty directory with an entry ``ours`` does not
    recognise as part of an earlier output of this kind (an empty directory is always fine)."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise OutputPathError(
            f"{flag} {path}: it exists and is {_what_is(path)}, not a directory; writing there would destroy it "
            f"(fix: pass {flag} a new directory)"
        )
    foreign = _foreign(path.iterdir(), ours)
    if foreign:
        raise OutputPathError(
            f"{flag} {path}: the directory holds {listing(foreign)}, which {'is' if len(foreign) == 1 else 'are'} "
            f"not part of {kind} rosearch wrote; writing there could overwrite {'it' if len(foreign) == 1 else 'them'} "
            f"(fix: pass {flag} a new or empty directory)"
        )


def foreign_entries(path: Path, ours: Callable[[Path], bool]) -> list[Path]:
    """The entries of directory ``path`` that ``ours`` does not recognise (empty when ``path`` is absent)."""
    return _foreign(path.iterdir(), ours) if path.is_dir() else []


def _foreign(entries: Iterable[Path], ours: Callable[[Path], bool]) -> list[Path]:
    return sorted(entry for entry in entries if not ours(entry))


def listing(entries: list[Path]) -> str:
    """``'a', 'b/' and 3 more``: the entries a refusal names."""
    names = ", ".join(repr(e.name + ("/" if e.is_dir() else "")) for e in entries[:_SHOWN])
    return names + (f" and {len(entries) - _SHOWN} more" if len(entries) > _SHOWN else "")


def publish_modes(folder: Path) -> None:
    """Give every file of ``folder`` the same mode a plain ``open()`` would (0666 less the umask).

    safetensors writes ``model.safetensors`` as 0600 while the tokenizer and config files get
    0644; a folder meant for sharing would then be half unreadable to its group and others.
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)
