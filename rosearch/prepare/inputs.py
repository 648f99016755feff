"""Everything a search needs before its first candidate: data, teacher, cached teacher outputs.

This runs once per run (and is mostly cache hits on a second run); candidates then only read
the resulting :class:`SearchInputs`, which are plain arrays so that a Ray backend can put them
into the object store once and share them with every worker.

The functions here take the whole config: preparing a run is where its sections meet (the teacher is
keyed by the ``teacher`` and ``data`` sections and ``run.seed``, its adversarial fine-tuning reads
``attack``, the validation slice avoids the teacher's and the students' subsets, the proxy set is the
``attack`` section's on the ``data`` section's texts). Everything after it, per candidate, reads
:class:`SearchInputs` and its own sections.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, PretrainedConfig

from rosearch.attack.proxy import load_or_build_proxy_set
from rosearch.attack.runner import sample_attack_examples
from rosearch.data.batching import EncodedSplit
from rosearch.config import Config, ConfigError, TeacherConfig, attack_panel
from rosearch.data.tasks import SPLITS, Example, data_identity, encode_examples, is_custom, load_examples, load_split, task_spec
from rosearch.distill.ascc import training_substitutions
from rosearch.distill.methods import prepare_method_inputs, teacher_cache_request
from rosearch.distill.teacher import (
    TeacherError,
    finetune_teacher,
    is_bare_backbone,
    load_teacher,
    resolve_model_path,
    teacher_fingerprint,
)
from rosearch.distill.teacher_cache import load_or_compute_teacher_outputs
from rosearch.errors import UserError
from rosearch.data.predictions import logits_accuracy
from rosearch.prepare.defense import build_defense_resources, encode_defended_splits
from rosearch.prepare.search_inputs import SearchInputs
from rosearch.files.tokenizer_files import read_tokenizer_files
from rosearch.data.validation import majority_rate, plan_validation, word_count

logger = logging.getLogger(__name__)

TEACHER_INFO = "teacher_info.json"


class ProxySetError(UserError, ValueError):
    """The teacher's attack produced no adversarial example to score candidates on."""


def teacher_output_dir(config: Config) -> Path:
    """Where ``config``'s fine-tuned teacher lives: explicit, or keyed by what determines it."""
    if config.teacher.output_dir:
        return Path(config.teacher.output_dir)
    key = {
        "teacher": _teacher_key_fields(config.teacher),
        "task": config.data.task,
        "data_dir": str(Path(config.data.data_dir).resolve()) if config.data.data_dir else None,
        "max_length": config.data.max_length,
        "seed": config.run.seed,
    }
    if is_custom(config.data):  # a user's data: its files' content, columns and labels decide the teacher
        spec = task_spec(config.data)
        key["own_data"] = [spec.key_fields()] + [data_identity(spec, split, config.data.data_dir) for split in SPLITS]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.teacher.model).strip("-")
    return Path(config.run.cache_dir) / "teachers" / f"{slug}-{config.data.task}-{digest}"


def _teacher_key_fields(teacher: TeacherConfig) -> dict:
    """The teacher settings that decide its weights: not the cached layers or the evaluation batch size,
    and the adversarial knobs only when adversarial fine-tuning is on (a plain teacher never reads them)."""
    fields = dataclasses.asdict(teacher) | {"cache_hidden_layers": None, "eval_batch_size": None}
    if teacher.adversarial is None:
        for name in ("adversarial", "adversarial_weight", "adversarial_steps"):
            fields.pop(name)
    return fields


def teacher_substitutions(config: Config, examples: Sequence[Example]) -> dict[str, tuple[str, ...]]:
    """The substitutes of every word of the teacher's training text (an adversarial teacher's hulls)."""
    return training_substitutions(config.attack, str(config.run.cache_dir), examples, ("wordnet", "counterfitted"),
                                  max_per_word=64)


def prepare_teacher(config: Config, device: torch.device) -> tuple[Path, dict]:
    """Return the directory of a fine-tuned teacher for ``config``, fine-tuning it if needed."""
    task = task_spec(config.data)
    if config.teacher.finetuned:
        path = resolve_model_path(config.teacher.model)
        if is_bare_backbone(AutoConfig.from_pretrained(path)):
            raise TeacherError(
                f"teacher.model={config.teacher.model!r} is a bare backbone without a fine-tuned classifier head "
                "(fix: set teacher.finetuned=false so `rosearch teacher` fine-tunes it first)"
            )
        logger.info("teacher: using fine-tuned %s as is", config.teacher.model)
        return Path(path), {}
    out = teacher_output_dir(config)
    info_path = out / TEACHER_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        logger.info("teacher: reusing %s (dev accuracy %.4f)", out, info.get("dev_accuracy", float("nan")))
        return out, info
    logger.info("teacher: fine-tuning %s on %s -> %s", config.teacher.model, task.name, out)
    model, tokenizer = load_teacher(config.teacher.model, task.num_labels, device)
    data_cfg = dataclasses.replace(config.data, train_limit=config.teacher.train_limit)
    train_examples, train = load_split(data_cfg, "train", tokenizer, config.run.cache_dir, config.run.seed)
    _, dev = load_split(config.data, "dev", tokenizer, config.run.cache_dir, config.run.seed)
    substitutions = teacher_substitutions(config, train_examples) if config.teacher.adversarial else None
    info = finetune_teacher(
        model, train, dev, config.teacher, seed=config.run.seed, device=device, output_dir=out, tokenizer=tokenizer,
        substitutions=substitutions,
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


def teacher_flops(config: PretrainedConfig, seq_len: int) -> int:
    """FLOPs per example of a BERT-style encoder, counted like ``search_space.cost.count_flops``.

    2 x multiply-adds of the Q/K/V/output projections and the FFN per token, the attention
    score and value matmuls (4 T^2 H per layer), and the pooler + classifier once.
    """
    h, layers, ffn = int(config.hidden_size), int(config.num_hidden_layers), int(config.intermediate_size)
    t = seq_len
    per_layer = 2 * t * (4 * h * h + 2 * h * ffn) + 4 * t * t * h
    head = 2 * (h * h + h * int(config.num_labels))
    return layers * per_layer + head


def prepare_inputs(config: Config, device: torch.device) -> SearchInputs:
    """Data, teacher and teacher outputs for a run; cached work is reused, not recomputed."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    teacher_dir, _ = prepare_teacher(config, device)
    timings["teacher_s"] = time.perf_counter() - start  # ~0 when the fine-tuned teacher is reused

    task = task_spec(config.data)
    model, tokenizer = load_teacher(str(teacher_dir), task.num_labels, device)
    mcfg = model.config
    space = config.search_space
    if space.embedding_init == "teacher_pca" and max(space.embedding_sizes) > int(mcfg.hidden_size):
        raise ConfigError(
            f"config field 'search_space.embedding_sizes': {max(space.embedding_sizes)} is wider than the teacher's "
            f"embeddings ({mcfg.hidden_size}), so teacher_pca cannot initialise it "
            f"(fix: keep embedding sizes <= {mcfg.hidden_size}, or set search_space.embedding_init=random)"
        )
    start = time.perf_counter()
    train_examples, train = load_split(config.data, "train", tokenizer, config.run.cache_dir, config.run.seed)
    dev_examples, dev = load_split(config.data, "dev", tokenizer, config.run.cache_dir, config.run.seed)
    val_examples, val = None, None
    if config.data.validation_size > 0:
        train_examples, train, val_examples, val = carve_validation(config, tokenizer, train_examples, train)
    timings["data_s"] = time.perf_counter() - start
    split_stats = {"dev_examples": len(dev), "dev_majority_rate": majority_rate(dev.labels, task.num_labels),
                   "label_names": list(task.label_names)}  # exports name their classes without reading the data
    if val is not None:
        split_stats |= {"val_examples": len(val), "val_majority_rate": majority_rate(val.labels, task.num_labels)}

    start = time.perf_counter()
    # hidden states (hidden_loss_weight / layer_kd), attention (layer_kd) and features (rift): one teacher pass
    request = teacher_cache_request(config, int(mcfg.num_hidden_layers))
    common = dict(batch_size=config.teacher.eval_batch_size, device=device, cache_dir=config.run.cache_dir)
    outputs = load_or_compute_teacher_outputs(model, teacher_dir, train, **request.kwargs(), **common)
    # memory-mapped hidden states become plain arrays: Ray then ships them once, out of band
    outputs = dataclasses.replace(
        outputs,
        hidden={k: np.asarray(v) for k, v in outputs.hidden.items()},
        attention={k: np.asarray(v) for k, v in outputs.attention.items()},
        features=None if outputs.features is None else np.asarray(outputs.features),
    )
    dev_outputs = load_or_compute_teacher_outputs(model, teacher_dir, dev, layers=(), **common)
    timings["teacher_outputs_s"] = time.perf_counter() - start
    teacher_dev = logits_accuracy(dev_outputs.logits, dev.labels)
    logger.info("teacher: accuracy %.4f on the %d distillation examples, %.4f on dev",
                logits_accuracy(outputs.logits, train.labels), len(train), teacher_dev)

    pcs = teacher_embedding_pcs(model, max(space.embedding_sizes)) if space.embedding_init == "teacher_pca" else None
    dev_mean_length = max(1, int(round(float(np.mean(dev.lengths)))))
    start = time.perf_counter()
    method_inputs = prepare_method_inputs(
        config, teacher_dir=str(teacher_dir), train_examples=train_examples, train=train, device=device
    )  # None unless distill.methods has augment, mate_kd or adv_finetune
    timings["methods_s"] = time.perf_counter() - start
    robustness: dict = {}
    if config.attack.enabled:
        start = time.perf_counter()
        attacked = dev_examples if val_examples is None else val_examples  # every attack of a search: the slice
        robustness = prepare_robustness(config, model, tokenizer, teacher_dir, attacked, device)
        timings["robustness_s"] = time.perf_counter() - start
    defense_fields: dict = {}
    if config.search_space.defenses_used():
        start = time.perf_counter()
        defense_fields = prepare_defense_inputs(config, tokenizer, task.num_labels, train_examples, train, dev_examples,
                                                dev, robustness, val_examples, val)
        timings["defense_s"] = time.perf_counter() - start
    inputs = SearchInputs(
        train=train,
        dev=dev,
        teacher_outputs=outputs,
        teacher_embedding_pcs=pcs,
        vocab_size=int(mcfg.vocab_size),
        num_labels=task.num_labels,
        max_position_embeddings=min(int(getattr(mcfg, "max_position_embeddings", 512)), 512),
        type_vocab_size=int(getattr(mcfg, "type_vocab_size", 2) or 2),
        pad_token_id=train.pad_token_id,
        teacher_dir=str(teacher_dir),
        teacher_dev_accuracy=teacher_dev,
        teacher_params=sum(p.numel() for p in model.parameters()),
        teacher_flops=teacher_flops(mcfg, dev_mean_length),
        dev_mean_length=dev_mean_length,
        timings=timings,
        method_inputs=method_inputs,
        val=val,
        task_name=task.name,
        split_stats=split_stats,
        **robustness,
        **defense_fields,
    )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the driver keeps no teacher memory while workers share the GPU
    return inputs


def prepare_defense_inputs(config: Config, tokenizer, num_labels: int, train_examples: list[Example],
                           train: EncodedSplit, dev_examples: list[Example], dev: EncodedSplit, robustness: dict,
                           val_examples: list[Example] | None = None, val: EncodedSplit | None = None) -> dict:
    """The SearchInputs fields of a run whose candidates carry input defenses: the resources
    (lexicon from the task's training split less the validation slice, synonym clusters) and
    every split as each defended student sees it."""
    held_out = {(e.text_a, e.text_b) for e in val_examples or ()}
    lexicon_texts = [t for e in load_examples(task_spec(config.data), "train", config.data.data_dir)
                     if (e.text_a, e.text_b) not in held_out for t in (e.text_a, e.text_b) if t is not None]
    resources = build_defense_resources(config, lexicon_texts)
    splits: dict = {"train": (train_examples, train), "dev": (dev_examples, dev)}
    if val is not None:
        splits["val"] = (val_examples, val)
    if robustness.get("proxy") is not None:
        splits["proxy"] = (robustness["proxy_examples"], robustness["proxy"])
    defended = encode_defended_splits(config, resources, splits, tokenizer, num_labels)
    return {"defense_resources": resources, "defended_splits": defended}
def carve_validation(
    config: Config, tokenizer, train_examples: list[Example], train
) -> tuple[list[Example], object, list[Example], object]:
    """Split the validation slice off the train split (see :mod:`rosearch.data.validation`).

    Returns the students' examples and split (unchanged unless they used nearly all of train)
    and the slice's examples and encoding.
    """
    task = task_spec(config.data)
    everything = load_examples(task_spec(config.data), "train", config.data.data_dir)
    plan = plan_validation(config.data, len(everything), [word_count(e.text_a, e.text_b) for e in everything],
                           seed=config.run.seed, teacher_limit=config.teacher.train_limit)
    val_examples = [everything[i] for i in plan.validation]
    key = hashlib.sha256(json.dumps([train.fingerprint, plan.validation]).encode()).hexdigest()
    val = encode_examples(val_examples, tokenizer, config.data.max_length, f"val-{key}", task.num_labels)
    if plan.student_keep is not None:
        train_examples = [train_examples[i] for i in plan.student_keep]
        train = train.subset(plan.student_keep, f"minus-val{len(plan.validation)}")
    minimum = config.data.validation_min_words
    logger.info("data: validation slice of %d train examples%s (seeded, disjoint from the %d the students distil on%s); "
                "dev (%s examples) is kept for reporting", len(val), f" of >= {minimum} words" if minimum else "", len(train),
                f"; {plan.overlaps_teacher} seen by the teacher" if plan.overlaps_teacher else ", and from the teacher's",
                "all" if config.data.dev_limit is None else config.data.dev_limit)
    return train_examples, train, val_examples, val


def prepare_robustness(
    config: Config, teacher: torch.nn.Module, tokenizer, teacher_dir: Path, pool: list[Example], device: torch.device
) -> dict:  # pool: the validation slice (dev when data.validation_size=0)
    """The SearchInputs fields of a robustness-measuring run: attack sample, tokenizer, proxy set.

    The teacher is attacked once on the seeded sample (cached on disk, keyed by the teacher's
    weights, the recipe and the examples); its successful adversarial texts, encoded, are the
    proxy set every candidate is scored on.
    """
    attack = config.attack
    task = task_spec(config.data)
    examples = tuple(sample_attack_examples(pool, attack.num_examples, attack.seed))
    fields: dict = {"tokenizer_files": read_tokenizer_files(teacher_dir), "attack_examples": examples}
    if not attack.proxy:
        logger.info("robustness: %d examples for full attacks with %s; no proxy set", len(examples),
                    " + ".join(attack_panel(attack)))
        return fields
    proxy = load_or_build_proxy_set(
        teacher, tokenizer, examples, attack, cache_dir=config.run.cache_dir, teacher_key=teacher_fingerprint(teacher_dir),
        max_length=config.data.max_length, device=device, text_columns=task.text_columns,
    )
    if len(proxy) == 0:
        report = proxy.teacher_report
        raise ProxySetError(
            f"the teacher's {proxy.recipe} attack on {len(examples)} examples left no adversarial example for the proxy "
            f"set: it misclassified {report.get('skipped')} of them before any attack (fix: check the teacher, raise "
            "attack.num_examples, or set attack.proxy=false with attack.full_attack=all)"
        )
    adversarial = proxy.examples()
    key = hashlib.sha256(json.dumps([proxy.recipe, proxy.texts_a, proxy.texts_b, proxy.labels]).encode()).hexdigest()
    fields["proxy"] = encode_examples(adversarial, tokenizer, config.data.max_length, f"proxy-{key}", task.num_labels)
    fields["proxy_examples"] = tuple(adversarial)
    fields["teacher_attack"] = dict(proxy.teacher_report)
    logger.info(
        "robustness: proxy set of %d adversarial examples (%s against the teacher on %d examples: accuracy under "
        "attack %.3f)", len(adversarial), proxy.recipe, len(examples),
        float(proxy.teacher_report.get("accuracy_under_attack", float("nan"))),
    )
    return fields
