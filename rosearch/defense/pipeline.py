"""A student's input defenses as one object: built once per run, applied to every text the
student sees (training, evaluation, every attack query), saved with the exported student.

The defense is part of the model a user deploys: the attack wrapper and ``predict`` call it on
raw text before tokenisation, so an attacker querying the student queries the defense too.
With smoothing, every text becomes :attr:`Defense.copies_per_text` texts (:func:`defend_copies`)
and the model's answer is :func:`smoothed_logits` of theirs; training sees :meth:`Defense.apply`.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rosearch.defense.names import DEFENSE_NAMES, canonical_defenses
from rosearch.defense.registry import DEFENSES, CopyStep
from rosearch.defense.resources import DefenseResources
from rosearch.defense.smoothing import mean_probability_logits
from rosearch.defense.word_recognition import WordRecognizer

DEFENSE_FILE = "defense.json.gz"  # beside an exported student's config.json
FORMAT_VERSION = 1


class DefenseError(ValueError):
    """A defense file that is missing, damaged or asks for something unknown."""


class Defense:
    """The composition of the named defenses, in :data:`DEFENSE_NAMES` order; ``defense(texts)``.

    Deterministic and idempotent: ``defense(defense(x)) == defense(x)``. :meth:`copies` is
    deterministic too (a smoothing defense seeds its copies by the text).
    """

    def __init__(self, names: Sequence[str], resources: DefenseResources) -> None:
        self.names = canonical_defenses(list(names), "defenses")
        self.resources = resources
        self._steps = [DEFENSES[name].build(resources, self.names) for name in self.names]
        self._spreads = [_spread(name, resources) for name in self.names]
        self.copies_per_text = math.prod(spread.copies for spread in self._spreads if spread is not None)

    def __reduce__(self) -> tuple[Any, ...]:
        # ship names + resources (not the built indexes) to workers; they rebuild in a few seconds
        return (Defense, (self.names, self.resources))

    def apply(self, text: str) -> str:
        for step in self._steps:
            text = step(text)
        return text

    def __call__(self, texts: Iterable[str]) -> list[str]:
        return [self.apply(t) for t in texts]

    def copies(self, text: str) -> list[str]:
        """The :attr:`copies_per_text` texts the model answers ``text`` with (``[apply(text)]`` without smoothing)."""
        texts = [text]
        for step, spread in zip(self._steps, self._spreads):
            texts = [step(t) for t in texts]
            if spread is not None:
                texts = [copy for t in texts for copy in spread(t)]
        return texts

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


def _spread(name: str, resources: DefenseResources) -> CopyStep | None:
    spec = DEFENSES[name]
    return None if spec.spread is None else spec.spread(resources)


def copies_per_text(names: Sequence[str], resources: DefenseResources) -> int:
    """How many copies of each text the defense ``names`` answers with (1 without smoothing); cheap: it
    builds only the copying steps."""
    return math.prod(spread.copies for spread in (_spread(n, resources) for n in names) if spread is not None)


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


def defend_copies(defense: Defense | None, texts: Sequence[str | tuple[str, ...]]) -> list[Any]:
    """Every text's (or ``(a, b)`` pair's) copies, consecutive: ``copies_per_text`` rows per input, whose
    logits :func:`smoothed_logits` turns back into one row each (identity for None)."""
    if not defense:
        return list(texts)
    if defense.copies_per_text == 1:
        return defend_pair(defense, texts)
    out: list[Any] = []
    for x in texts:
        out.extend(zip(*(defense.copies(t) for t in x)) if isinstance(x, (tuple, list)) else defense.copies(x))
    return out


def smoothed_logits(defense: Defense | None, logits: Any) -> Any:
    """Logits ``[n * copies_per_text, C]`` of :func:`defend_copies`'s rows -> ``[n, C]``: the log of the
    mean probability over each text's copies (``logits`` itself, untouched, with one copy per text)."""
    return logits if not defense else mean_probability_logits(logits, defense.copies_per_text)


def defend_pair(defense: Defense | None, texts: Sequence[str | tuple[str, ...]]) -> list[Any]:
    """Apply ``defense`` to single texts or to each side of ``(a, b)`` pairs (identity for None)."""
    if not defense:
        return list(texts)
    return [tuple(defense.apply(t) for t in x) if isinstance(x, (tuple, list)) else defense.apply(x) for x in texts]


__all__ = ["DEFENSE_FILE", "DEFENSE_NAMES", "Defense", "DefenseError", "DefenseResources", "copies_per_text", "defend_copies",
           "defend_pair", "load_defense", "smoothed_logits"]
