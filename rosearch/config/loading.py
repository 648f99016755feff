"""Reading a config: a YAML or TOML file, ``section.key=value`` overrides, typed and validated.

Every value is coerced to its field's type here (an unknown key, a wrong type or a non-finite
number is refused with the field's path), then :func:`~rosearch.config.tree.validate` checks what
types alone cannot.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import tomllib
import yaml

from rosearch.config.checks import ConfigError
from rosearch.config.tree import Config, validate

# YAML 1.2's exponent floats (1e-3, 1.0e6, 2E+5), which PyYAML's YAML 1.1 rule reads as strings
# because it wants a dot and a signed exponent
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads YAML 1.2 exponent floats as numbers (a copy of the
    resolver table: yaml.SafeLoader itself is left as it was)."""


_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """``text`` parsed as YAML, with ``1e-3`` a float as in YAML 1.2 (config files and ``--set`` values)."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML or TOML file (or nothing), apply ``a.b=value`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_file(Path(path))
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data)


def _read_file(path: Path) -> dict[str, Any]:
    """The mapping a config file holds; every way it can fail names the file and the fix."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist (fix: pass --config PATH)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text ({exc}) (fix: save it as UTF-8)") from exc
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc} (fix: check its permissions)") from exc
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else parse_yaml(text) or {}
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix[1:] or 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override in place; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. distill.alpha=0.3)")
    parts = key.strip().split(".")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value {raw!r}: {exc}") from exc
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data (as parsed from YAML)."""
    config = _build(Config, data, "")
    validate(config)
    return config


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        where = path or "config"
        raise ConfigError(f"config field {where!r}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config field {path!r}: {value!r} fits none of {options}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config field {path!r}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field {path!r}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    return _scalar(value, hint, path)


def _scalar(value: Any, hint: Any, path: str) -> Any:
    """``value`` as a bool, int, float or str field (no silent conversion between them but int -> float)."""
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field {path!r}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config field {path!r}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config field {path!r}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .inf/.nan would pass every range check
            raise ConfigError(f"config field {path!r}: must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field {path!r}: expected a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path!r}")  # a bug in this package
