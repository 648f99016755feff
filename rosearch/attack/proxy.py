"""The adversarial proxy set: the teacher's adversarial examples, built once.

A full attack per candidate is the most expensive part of a robustness-aware search. The
teacher is attacked once on the seeded attack sample; the texts that fooled it, plus the
hardest variants its search found where the teacher held out, with their original labels,
become a fixed proxy set on which every candidate's accuracy is a cheap robustness signal
(transfer attacks). Keeping the failed attacks' variants makes the set as large as the
examples the teacher got right, so it is never empty for a good teacher, and the teacher's
own proxy accuracy is exactly ``1 - attack success rate``. The set is cached on disk, keyed
by everything that decides it, so later runs and other workers reuse it without attacking again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from rosearch.attack.runner import run_attack
from rosearch.files.cache import PROXY_SET, check_key, read_entry, write_text_atomically
from rosearch.config import AttackConfig
from rosearch.data.tasks import Example

logger = logging.getLogger(__name__)

PROXY_SUBDIR = PROXY_SET.folder


@dataclass(frozen=True)
class ProxySet:
    """Perturbed texts of the teacher's attacks (successful, and failed attacks' final variants), original labels."""

    recipe: str
    texts_a: tuple[str, ...]
    texts_b: tuple[str | None, ...]
    labels: tuple[int, ...]
    teacher_report: dict  # the teacher's AttackReport.to_dict() without per-example rows

    def __len__(self) -> int:
        return len(self.labels)

    def examples(self) -> list[Example]:
        """The proxy set as :class:`~rosearch.data.tasks.Example` objects (for tokenising/evaluating)."""
        return [Example(text_a=a, text_b=b, label=y) for a, b, y in zip(self.texts_a, self.texts_b, self.labels)]


def proxy_key(teacher_key: str, recipe: str, examples: Sequence[Example], cfg: AttackConfig, max_length: int) -> str:
    """Hash of everything that decides the proxy set (teacher, recipe, its resources, examples,
    budget, seed, truncation length); 24 hex characters, the file name and the stored key."""
    return PROXY_SET.key({
        "teacher": teacher_key, "recipe": recipe, "query_budget": cfg.query_budget,
        "seed": cfg.seed, "max_length": max_length, "neighbors": cfg.neighbors_path,
        "sentence_encoder": cfg.sentence_encoder,
        "examples": [[e.text_a, e.text_b, e.label] for e in examples],
    })[:24]


def _load(path: Path, key: str) -> ProxySet:
    """The proxy set cached at ``path``; :class:`~rosearch.files.cache.StaleEntry` when it is another key's."""
    data = json.loads(path.read_text(encoding="utf-8"))
    check_key(data.get("key"), key)
    proxy = ProxySet(
        recipe=str(data["recipe"]), texts_a=tuple(data["texts_a"]), texts_b=tuple(data["texts_b"]),
        labels=tuple(int(y) for y in data["labels"]), teacher_report=dict(data["teacher_report"]),
    )
    if not len(proxy.texts_a) == len(proxy.texts_b) == len(proxy.labels):
        raise ValueError("column lengths differ")
    return proxy


def _save(path: Path, key: str, proxy: ProxySet) -> None:
    data = {
        **PROXY_SET.stamp(key), "recipe": proxy.recipe, "texts_a": list(proxy.texts_a),
        "texts_b": list(proxy.texts_b), "labels": list(proxy.labels), "teacher_report": proxy.teacher_report,
    }
    write_text_atomically(path, json.dumps(data, ensure_ascii=False, indent=1))


def load_or_build_proxy_set(teacher: nn.Module, tokenizer: Any, examples: Sequence[Example], cfg: AttackConfig, *,
                            cache_dir: str | Path, teacher_key: str, max_length: int, device: torch.device | str,
                            text_columns: tuple[str, ...]) -> ProxySet:
    """The proxy set for ``teacher`` on ``examples``: a cache hit from
    ``<cache_dir>/proxy/<key>.json``, or an attack with ``cfg.proxy_recipe or cfg.recipe`` whose
    successful adversarial texts (original labels kept) are then cached atomically."""
    recipe = cfg.proxy_recipe or cfg.recipe
    key = proxy_key(teacher_key, recipe, examples, cfg, max_length)
    path = PROXY_SET.entry(cache_dir, key, suffix=".json")
    cached = read_entry(path, lambda p: _load(p, key), what="attack: proxy set", log=logger)
    if cached is not None:
        logger.info("attack: proxy set cache hit %s (%d adversarial examples, %s)", path, len(cached), recipe)
        return cached
    logger.info("attack: proxy set cache miss; attacking the teacher with %s on %d examples", recipe, len(examples))
    outcome = run_attack(teacher, tokenizer, examples, cfg, recipe=recipe, cache_dir=cache_dir, model_name=teacher_key,
                         max_length=max_length, device=device, text_columns=text_columns)
    texts_a: list[str] = []
    texts_b: list[str | None] = []
    labels: list[int] = []
    for example, columns in zip(examples, outcome.perturbed_columns):
        if columns is None:
            continue
        texts_a.append(columns[0])
        texts_b.append(columns[1] if len(columns) > 1 else None)
        labels.append(example.label)
    summary = outcome.report.to_dict()
    summary.pop("examples")
    proxy = ProxySet(recipe=recipe, texts_a=tuple(texts_a), texts_b=tuple(texts_b), labels=tuple(labels),
                     teacher_report=summary)
    _save(path, key, proxy)
    logger.info("attack: proxy set of %d adversarial examples (%d fooled the teacher) written to %s",
                len(proxy), outcome.report.successful, path)
    return proxy
