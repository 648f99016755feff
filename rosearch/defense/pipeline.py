"""A student's input defenses as one object: built once per run, applied to every text the
student sees (training, evaluation, every attack query), saved with the exported student.

The defense is part of the model a user deploys: the attack wrapper and ``predict`` call it on
raw text before tokenisation, so an attacker querying the student queries the defense too.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rosearch.defense.names import DEFENSE_NAMES, canonical_defenses
from rosearch.defense.registry import DEFENSES
from rosearch.defense.resources import DefenseResources
from rosearch.defense.word_recognition import WordRecognizer

DEFENSE_FILE = "defense.json.gz"  # beside an exported student's config.json
FORMAT_VERSION = 1


class DefenseError(ValueError):
    """A defense file that is missing, damaged or asks for something unknown."""


class Defense:
    """The composition of the named defenses, in :data:`DEFENSE_NAMES` order; ``defense(texts)``.

    Deterministic and idempotent: ``defense(defense(x)) == defense(x)``.
    """

    def __init__(self, names: Sequence[str], resources: DefenseResources) -> None:
        self.names = canonical_defenses(list(names), "defenses")
        self.resources = resources
        self._steps = [DEFENSES[name].build(resources, self.names) for name in self.names]

    def __reduce__(self) -> tuple[Any, ...]:
        # ship names + resources (not the built indexes) to workers; they rebuild in a few seconds
        return (Defense, (self.names, self.resources))

    def apply(self, text: str) -> str:
        for step in self._steps:
            text = step(text)
        return text

    def __call__(self, texts: Iterable[str]) -> list[str]:
        return [self.apply(t) for t in texts]

    def known_words(self) -> frozenset[str]:
        """Words the defense leaves unchanged when it has word recognition (its lexicon); else
        every word of the lexicon (what an adaptive attack treats as real words)."""
        for step in self._steps:
            if isinstance(step, WordRecognizer):
                return step.known
        return frozenset(self.resources.counts)

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"Defense({'+'.join(self.names) or 'none'})"

    def describe(self) -> dict[str, Any]:
        """What the model card and metrics say about the defense."""
        out: dict[str, Any] = {"defenses": list(self.names)}
        for name in self.names:
            out[name] = DEFENSES[name].describe(self.resources)
        return out

    def restricted(self, names: Sequence[str]) -> Defense:
        """The same resources with another set of defenses (a search candidate's choice)."""
        return Defense(names, self.resources)

    def save(self, directory: str | Path) -> Path:
        """Write the defense beside a saved model (``defense.json.gz``); only what it uses."""
        used = {table for name in self.names for table in DEFENSES[name].tables}
        unused = {table: {} for spec in DEFENSES.values() for table in spec.tables if table not in used}
        resources = replace(self.resources, **unused)
        payload = {"format": FORMAT_VERSION, "defenses": list(self.names), "resources": resources.to_dict()}
        path = Path(directory) / DEFENSE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(json.dumps(payload, sort_keys=True).encode("utf-8"), mtime=0))
        tmp.replace(path)
        return path


def load_defense(directory: str | Path) -> Defense | None:
    """The defense saved with the model in ``directory``; None when it has none."""
    path = Path(directory) / DEFENSE_FILE
    if not path.exists():
        return None
    try:
        payload = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
        if payload.get("format") != FORMAT_VERSION:
            raise DefenseError(f"{path}: format {payload.get('format')!r}, this rosearch reads {FORMAT_VERSION} "
                               "(fix: export the student again with this version)")
        return Defense(payload["defenses"], DefenseResources.from_dict(payload["resources"]))
    except DefenseError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise DefenseError(f"{path} is damaged ({type(err).__name__}: {err}) "
                           "(fix: export the student again, or delete the file to use the model undefended)") from None


def defend_pair(defense: Defense | None, texts: Sequence[str | tuple[str, ...]]) -> list[Any]:
    """Apply ``defense`` to single texts or to each side of ``(a, b)`` pairs (identity for None)."""
    if not defense:
        return list(texts)
    return [tuple(defense.apply(t) for t in x) if isinstance(x, (tuple, list)) else defense.apply(x) for x in texts]


__all__ = ["DEFENSE_FILE", "DEFENSE_NAMES", "Defense", "DefenseError", "DefenseResources", "defend_pair", "load_defense"]
