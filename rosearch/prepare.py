"""Everything a search needs before its first candidate: data, teacher, cached teacher outputs.

This runs once per run (and is mostly cache hits on a second run); candidates then only read
the resulting :class:`SearchInputs`, which are plain arrays so that a Ray backend can put them
into the object store once and share them with every worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rosearch.batching import EncodedSplit
from rosearch.config import Config
from rosearch.data import Example, get_task, load_split
from rosearch.distill.teacher import finetune_teacher, load_teacher, resolve_model_path
from rosearch.distill.teacher_cache import TeacherOutputs, load_or_compute_teacher_outputs
from rosearch.evaluate.accuracy import logits_accuracy

logger = logging.getLogger(__name__)

TEACHER_INFO = "teacher_info.json"


@dataclass(frozen=True)
class SearchInputs:
    """Read-only inputs shared by every candidate evaluation of a run."""

    train: EncodedSplit
    dev: EncodedSplit
    dev_examples: tuple[Example, ...]  # raw text of the dev split (attacks need it)
    teacher_outputs: TeacherOutputs  # on `train`, computed once
    teacher_embedding_pcs: np.ndarray | None  # [V, E_max] principal-component coordinates of the teacher's word embeddings
    vocab_size: int
    num_labels: int
    max_position_embeddings: int
    type_vocab_size: int
    pad_token_id: int
    teacher_dir: str
    teacher_dev_accuracy: float
    teacher_params: int
    teacher_flops: int  # per example at the dev split's mean length (2 x non-embedding params x T)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


def teacher_output_dir(config: Config) -> Path:
    """Where ``config``'s fine-tuned teacher lives: explicit, or keyed by what determines it."""
    if config.teacher.output_dir:
        return Path(config.teacher.output_dir)
    key = {
        "teacher": dataclasses.asdict(config.teacher) | {"cache_hidden_layers": None, "eval_batch_size": None},
        "task": config.data.task,
        "data_dir": str(Path(config.data.data_dir).resolve()) if config.data.data_dir else None,
        "max_length": config.data.max_length,
        "seed": config.run.seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.teacher.model).strip("-")
    return Path(config.run.cache_dir) / "teachers" / f"{slug}-{config.data.task}-{digest}"


def prepare_teacher(config: Config, device: torch.device) -> tuple[Path, dict]:
    """Return the directory of a fine-tuned teacher for ``config``, fine-tuning it if needed."""
    task = get_task(config.data.task)
    if config.teacher.finetuned:
        path = Path(resolve_model_path(config.teacher.model))
        logger.info("teacher: using fine-tuned %s as is", config.teacher.model)
        return path, {}
    out = teacher_output_dir(config)
    info_path = out / TEACHER_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        logger.info("teacher: reusing %s (dev accuracy %.4f)", out, info.get("dev_accuracy", float("nan")))
        return out, info
    logger.info("teacher: fine-tuning %s on %s -> %s", config.teacher.model, task.name, out)
    model, tokenizer = load_teacher(config.teacher.model, task.num_labels, device)
    data_cfg = dataclasses.replace(config.data, train_limit=config.teacher.train_limit)
    _, train = load_split(data_cfg, "train", tokenizer, config.run.cache_dir, config.run.seed)
    _, dev = load_split(config.data, "dev", tokenizer, config.run.cache_dir, config.run.seed)
    info = finetune_teacher(
        model, train, dev, config.teacher, seed=config.run.seed, device=device, output_dir=out, tokenizer=tokenizer
    )
    return out, info


def teacher_embedding_pcs(model: torch.nn.Module, components: int) -> np.ndarray:
    """Coordinates of the teacher's word embeddings on their top principal components [V, k].

    Computed once per run; a student of embedding width E takes the first E columns.
    """
    weight = model.get_input_embeddings().weight.detach().float().cpu()  # [V, D]
    k = min(components, weight.shape[1])
    centered = weight - weight.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)  # vh: [D, D]
    return (centered @ vh[:k].T).numpy().astype(np.float32)  # [V, k]


def prepare_inputs(config: Config, device: torch.device) -> SearchInputs:
    """Data, teacher and teacher outputs for a run; cached work is reused, not recomputed."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    teacher_dir, info = prepare_teacher(config, device)
    timings["teacher_s"] = time.perf_counter() - start  # ~0 when the fine-tuned teacher is reused

    task = get_task(config.data.task)
    model, tokenizer = load_teacher(str(teacher_dir), task.num_labels, device)
    start = time.perf_counter()
    _, train = load_split(config.data, "train", tokenizer, config.run.cache_dir, config.run.seed)
    dev_examples, dev = load_split(config.data, "dev", tokenizer, config.run.cache_dir, config.run.seed)
    timings["data_s"] = time.perf_counter() - start

    start = time.perf_counter()
    outputs = load_or_compute_teacher_outputs(
        model, teacher_dir, train,
        layers=tuple(config.teacher.cache_hidden_layers),
        batch_size=config.teacher.eval_batch_size, device=device, cache_dir=config.run.cache_dir,
    )
    timings["teacher_outputs_s"] = time.perf_counter() - start
    logger.info("teacher: accuracy %.4f on the %d distillation examples", logits_accuracy(outputs.logits, train.labels), len(train))

    if "dev_accuracy" in info:
        teacher_dev = float(info["dev_accuracy"])
    else:
        dev_outputs = load_or_compute_teacher_outputs(
            model, teacher_dir, dev, layers=(), batch_size=config.teacher.eval_batch_size,
            device=device, cache_dir=config.run.cache_dir,
        )
        teacher_dev = logits_accuracy(dev_outputs.logits, dev.labels)
    logger.info("teacher: dev accuracy %.4f", teacher_dev)

    pcs = None
    if config.search_space.embedding_init == "teacher_pca":
        pcs = teacher_embedding_pcs(model, max(config.search_space.embedding_sizes))
    mcfg = model.config
    teacher_params = sum(p.numel() for p in model.parameters())
    embedding_params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    mean_len = max(1.0, float(np.mean(dev.lengths)))
    inputs = SearchInputs(
        train=train,
        dev=dev,
        dev_examples=tuple(dev_examples),
        teacher_outputs=outputs,
        teacher_embedding_pcs=pcs,
        vocab_size=int(mcfg.vocab_size),
        num_labels=task.num_labels,
        max_position_embeddings=min(int(getattr(mcfg, "max_position_embeddings", 512)), 512),
        type_vocab_size=int(getattr(mcfg, "type_vocab_size", 2) or 2),
        pad_token_id=train.pad_token_id,
        teacher_dir=str(teacher_dir),
        teacher_dev_accuracy=teacher_dev,
        teacher_params=teacher_params,
        teacher_flops=int(2 * (teacher_params - embedding_params) * mean_len),
        timings=timings,
    )
    del model
    return inputs
