"""The small checks every config section is built from, and the error they raise.

A failed check names the field by its dotted path and says how to fix it, so that nothing starts
running on a bad config.
"""

from __future__ import annotations

import unicodedata

from rosearch.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown, mistyped or impossible."""


def require(ok: bool, path: str, message: str) -> None:
    """Raise :class:`ConfigError` on field ``path`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"config field {path!r}: {message}")


def positive(value: float | int | None, path: str) -> None:
    """``value`` is unset (None) or > 0."""
    if value is not None:
        require(value > 0, path, f"must be > 0, got {value!r}")


def fraction(value: float, path: str) -> None:
    """``value`` lies in [0, 1]."""
    require(0.0 <= value <= 1.0, path, f"must be between 0 and 1, got {value!r}")


def at_least(owner: object, names: tuple[str, ...], prefix: str, low: int) -> None:
    """Each of ``owner``'s fields ``names`` is >= ``low`` (whole counts: steps, examples, layers)."""
    for name in names:
        value = getattr(owner, name)
        require(value >= low, f"{prefix}.{name}", f"must be >= {low}, got {value}")


def above_zero(owner: object, names: tuple[str, ...], prefix: str) -> None:
    """Each of ``owner``'s fields ``names`` is > 0 (weights, rates, temperatures)."""
    for name in names:
        value = getattr(owner, name)
        require(value > 0, f"{prefix}.{name}", f"must be > 0, got {value}")


def known_distinct(values: tuple[str, ...], known: tuple[str, ...], path: str, what: str) -> None:
    """Every one of ``values`` is one of ``known``, none listed twice."""
    for i, value in enumerate(values):
        require(value in known, f"{path}[{i}]", f"unknown {what} {value!r} (known: {', '.join(known)})")
        require(value not in values[:i], f"{path}[{i}]", f"{what} {value!r} is listed twice")


# characters a run name may not hold besides separators: it becomes a directory name, a Markdown heading
# and code span in exported model cards, and an argument users paste into shells
_NAME_FORBIDDEN = "`<>\"|*?$"


def check_path_name(name: str, path: str) -> None:
    """A user-given name that becomes one directory level: it must not climb out of its parent.

    ``..``, ``.``, separators and NUL would let a run write into (and overwrite) ``output_dir``'s
    parent or elsewhere, so they are refused here, before anything touches the disk. Control
    characters (a newline makes a directory nobody can type) and the characters of
    :data:`_NAME_FORBIDDEN` (Markdown and HTML in the model card, shell globs and quotes) are refused too.
    """
    bad = [c for c in ("/", "\\", "\0") if c in name]
    require(bool(name.strip()) and name not in (".", "..") and not bad, path,
            f"must be a plain directory name (no '..', '/', '\\\\' or NUL, not empty), got {name!r} "
            "(fix: e.g. run.name=sst2-search-1)")
    odd = sorted({c for c in name if unicodedata.category(c).startswith("C") or c in _NAME_FORBIDDEN})
    require(not odd, path,
            f"must not hold control characters or any of {_NAME_FORBIDDEN}, got {name!r} (it holds "
            f"{', '.join(repr(c) for c in odd)}) (fix: letters, digits, '-', '_' and '.', e.g. run.name=sst2-search-1)")
