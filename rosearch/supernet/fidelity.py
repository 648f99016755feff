"""The supernet as a fidelity: trained once per defense set, shipped to workers, sliced per candidate.

Defenses change the text a student reads, so each defense set a candidate may carry gets its own
supernet, trained on the training split as that defense rewrites it (the teacher's targets stay
its outputs on the original text, as for stand-alone students). Training genes are not
represented: every supernet is trained with plain KD, and an inherited figure describes the
architecture and its defenses only (:func:`evaluate_inherited` says so in its metrics).

The trained weights travel as plain numpy arrays inside :class:`~rosearch.prepare.search_inputs.SearchInputs`,
which the Ray backend puts into the object store once; a worker reads them from there (zero-copy)
and never from the driver's cache directory.

Most functions here take the whole config because a supernet is decided across sections: its shape
by ``search_space`` and ``supernet``, its training by ``supernet`` and ``distill`` and ``run.seed``,
its cache entry by all of them under ``run.cache_dir``, and an inherited measurement by ``fitness``
(latency or not) and ``attack``. What reads one section takes that section.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from rosearch.files.cache import SUPERNET, atomic_file, write_text_atomically
from rosearch.config import Config, SearchSpaceConfig, attack_panel
from rosearch.defense.names import canonical_defenses
from rosearch.evaluate.candidate import split_scores
from rosearch.evaluate.efficiency import measure_latency
from rosearch.evaluate.robustness import full_attack_metrics, panel_metrics, proxy_metrics
from rosearch.prepare.search_inputs import SearchInputs
from rosearch.search_space.cost import count_flops, count_parameters
from rosearch.search_space.genome import Genome
from rosearch.search_space.sampling import sample_genome
from rosearch.student.modeling import init_embedding_from_teacher
from rosearch.supernet.network import Supernet, SupernetShape, extract_student
from rosearch.supernet.train import CHECKPOINT_FILE, final_loss, seeded_sampler, train_supernet

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"


@dataclass(frozen=True)
class SupernetWeights:
    """One trained supernet as plain data: what a worker needs to take any student out of it."""

    key: str
    shape: dict[str, Any]  # SupernetShape.to_dict()
    arrays: Mapping[str, np.ndarray] = field(repr=False)  # the supernet's named parameters
    steps: int = 0
    final_loss: float = float("nan")
    train_seconds: float = 0.0

    def tensors(self) -> dict[str, torch.Tensor]:
        """Tensors over the arrays, no copy (the object store's arrays are read-only: they are only read)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return {name: torch.from_numpy(array) for name, array in self.arrays.items()}


def defense_sets(space: SearchSpaceConfig) -> tuple[tuple[str, ...], ...]:
    """Every defense set a candidate of this search ``space`` may carry (the fixed defenses plus any subset of the choices)."""
    out = []
    for n in range(len(space.defense_choices) + 1):
        for chosen in itertools.combinations(space.defense_choices, n):
            out.append(canonical_defenses(tuple(space.defenses) + chosen, "search_space.defenses"))
    return tuple(dict.fromkeys(out))


def supernet_shape(config: Config, inputs: SearchInputs) -> SupernetShape:
    return SupernetShape.of_space(
        config.search_space, share_positions=config.supernet.share_positions, vocab_size=inputs.vocab_size,
        max_position_embeddings=inputs.max_position_embeddings, type_vocab_size=inputs.type_vocab_size,
        num_labels=inputs.num_labels, pad_token_id=inputs.pad_token_id, dropout=config.distill.dropout)


def supernet_key(config: Config, inputs: SearchInputs, defenses: tuple[str, ...]) -> str:
    """Hash of everything that decides the trained weights: the data and teacher targets it distils
    from (content digests), the shape, the sampler's space, the training settings and the seed."""
    defended = inputs.for_defenses(defenses)
    digest = hashlib.sha256()
    for array in (defended.train.input_ids, defended.train.offsets, np.asarray(inputs.teacher_outputs.logits)):
        digest.update(np.ascontiguousarray(array).tobytes())
    distill = config.distill
    return SUPERNET.key({
        "data": digest.hexdigest(), "train": defended.train.fingerprint, "defenses": list(defenses),
        "shape": supernet_shape(config, inputs).to_dict(), "space": json.loads(json.dumps(config.to_dict()["search_space"])),
        "supernet": {k: v for k, v in config.to_dict()["supernet"].items() if k not in ("fidelity", "attack_examples",
                                                                                        "checkpoint_every")},
        "kd": [distill.alpha, distill.temperature, distill.weight_decay, distill.max_grad_norm, distill.length_bucketing],
        "pcs": None if inputs.teacher_embedding_pcs is None else hashlib.sha256(
            np.ascontiguousarray(inputs.teacher_embedding_pcs).tobytes()).hexdigest(),
        "seed": config.run.seed,
    })


def architecture_sampler(search_space: SearchSpaceConfig, inputs: SearchInputs) -> Any:
    """The search's own draw of a genome (its parameter budget included), as a function of an RNG."""
    def param_count(genome: Genome) -> int:
        return count_parameters(genome, vocab_size=inputs.vocab_size, num_labels=inputs.num_labels,
                                max_position_embeddings=inputs.max_position_embeddings,
                                type_vocab_size=inputs.type_vocab_size)

    space = replace(search_space, defense_choices=(), training_choices=())  # architecture only
    return lambda rng: sample_genome(rng, space, param_count=param_count if space.param_budget else None)


def new_supernet(config: Config, inputs: SearchInputs) -> Supernet:
    """A freshly initialised supernet for ``config``'s space (embedding from the teacher's PCs, as students)."""
    torch.manual_seed(config.run.seed)
    net = Supernet(supernet_shape(config, inputs))
    if inputs.teacher_embedding_pcs is not None:
        pcs = inputs.teacher_embedding_pcs[:, : net.shape.max_embedding]
        init_embedding_from_teacher(net, torch.tensor(pcs, dtype=torch.float32))
    return net


def load_or_train_supernet(config: Config, inputs: SearchInputs, defenses: tuple[str, ...], device: torch.device,
                           *, stop_after: int | None = None) -> SupernetWeights | None:
    """The trained supernet of ``defenses``: a cache hit, or a training (resumed from its checkpoint when one
    exists) whose weights are then cached. None when ``stop_after`` ended the training early."""
    key = supernet_key(config, inputs, defenses)
    folder = SUPERNET.entry(config.run.cache_dir, key, label="+".join(defenses) or "plain")
    cached = _read(folder, key)
    if cached is not None:
        logger.info("supernet %s: cache hit %s (%d steps)", "+".join(defenses) or "plain", folder, cached.steps)
        return cached
    defended = inputs.for_defenses(defenses)
    net = new_supernet(config, inputs)
    logger.info("supernet %s: training %d single-path steps, %.1fM shared parameters, into %s",
                "+".join(defenses) or "plain", config.supernet.max_steps,
                sum(p.numel() for p in net.parameters()) / 1e6, folder)
    result = train_supernet(net, defended.train, inputs.teacher_outputs.logits,
                            seeded_sampler(architecture_sampler(config.search_space, inputs), config.run.seed), config.supernet,
                            config.distill, seed=config.run.seed, device=device, checkpoint_dir=folder,
                            stop_after=stop_after)
    if not result.finished:
        return None
    arrays = {name: p.detach().cpu().numpy() for name, p in net.named_parameters()}
    weights = SupernetWeights(key=key, shape=net.shape.to_dict(), arrays=arrays, steps=result.steps_done,
                              final_loss=final_loss(result.loss_history), train_seconds=result.seconds)
    _write(folder, weights, result.loss_history)
    return weights


def _read(folder: Path, key: str) -> SupernetWeights | None:
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        arrays = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("supernet cache entry %s is unreadable (%s); training again", folder, exc)
        return None
    return SupernetWeights(key=key, shape=meta["shape"], arrays=arrays, steps=int(meta["steps"]),
                           final_loss=float(meta["final_loss"]), train_seconds=float(meta["train_seconds"]))


def _write(folder: Path, weights: SupernetWeights, history: tuple[tuple[int, float], ...]) -> None:
    """Weights first, then the metadata that makes the entry a hit; the training checkpoint goes last."""
    with atomic_file(folder / WEIGHTS_FILE) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.arrays.items()}, str(tmp))
    meta = {**SUPERNET.stamp(weights.key), "shape": weights.shape, "steps": weights.steps,
            "final_loss": weights.final_loss, "train_seconds": weights.train_seconds,
            "loss_history": [list(h) for h in history]}
    write_text_atomically(folder / META_FILE, json.dumps(meta, indent=1))
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)  # optimizer state: only a resumed training needs it


def prepare_supernets(config: Config, inputs: SearchInputs, device: torch.device) -> SearchInputs:
    """``inputs`` carrying one trained supernet per defense set of the run (trained now or read from the cache)."""
    start = time.perf_counter()
    supernets = {}
    for defenses in defense_sets(config.search_space):
        weights = load_or_train_supernet(config, inputs, defenses, device)
        if weights is None:
            raise RuntimeError("supernet training stopped before its last step")
        supernets["+".join(defenses)] = weights
    return replace(inputs, supernets=supernets, timings=dict(inputs.timings) | {"supernet_s": time.perf_counter() - start})


def evaluate_inherited(genome: Genome, inputs: SearchInputs, config: Config, *, device: torch.device | str,
                       name: str) -> dict[str, Any]:
    """A candidate's figures with weights inherited from its defense set's supernet: validation and dev
    accuracy, size, proxy accuracy, and the attack panel on ``supernet.attack_examples`` of the attack
    sample; seconds of each part. No training; the training gene is not represented (see module docstring)."""
    if not inputs.supernets:
        raise ValueError("supernet.fidelity=supernet but the run prepared no supernet (fix: prepare_supernets)")
    key = "+".join(genome.defenses)
    weights = inputs.supernets.get(key)
    if weights is None:
        raise ValueError(f"no supernet for defenses {key or 'none'!r} (prepared: {sorted(inputs.supernets)})")
    start = time.perf_counter()
    model = extract_student(SupernetShape.from_dict(weights.shape), weights.tensors(), genome, device=device)
    extract_seconds = time.perf_counter() - start
    defended = inputs.for_defenses(genome.defenses)
    start = time.perf_counter()
    copies = inputs.copies(genome.defenses)  # a smoothed candidate's dev holds each example's copies
    batch_size = config.distill.eval_batch_size
    dev_accuracy, dev_f1 = split_scores(model, defended.dev, inputs.task_name, batch_size=batch_size, device=device,
                                        copies=copies)
    metrics: dict[str, Any] = {"genome_hash": genome.hash(), "dev_accuracy": dev_accuracy, "fidelity": "supernet",
                               "supernet_key": weights.key[:24], "supernet_steps": weights.steps}
    if dev_f1 is not None:
        metrics["dev_f1"] = dev_f1
    if defended.val is not None:
        metrics["val_accuracy"], val_f1 = split_scores(model, defended.val, inputs.task_name, batch_size=batch_size,
                                                       device=device, copies=copies)
        if val_f1 is not None:
            metrics["val_f1"] = val_f1
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["extract_seconds"] = extract_seconds
    metrics["params"] = count_parameters(genome, vocab_size=inputs.vocab_size, num_labels=inputs.num_labels,
                                         max_position_embeddings=inputs.max_position_embeddings,
                                         type_vocab_size=inputs.type_vocab_size)
    metrics["flops"] = count_flops(genome, seq_len=inputs.dev_mean_length, num_labels=inputs.num_labels)
    if config.fitness.efficiency_metric == "latency":  # only when selection needs it: it costs seconds
        metrics |= measure_latency(model, seq_len=inputs.dev_mean_length, device=device, vocab_size=inputs.vocab_size)
    if genome.training:
        metrics["training_gene_ignored"] = list(genome.training)
    metrics |= proxy_metrics(model, inputs, batch_size=batch_size, device=device, defenses=genome.defenses)
    if config.attack.enabled and config.attack.full_attack != "none":
        n = config.supernet.attack_examples
        sample = inputs if n is None else replace(inputs, attack_examples=inputs.attack_examples[:n])
        start = time.perf_counter()
        metrics |= full_attack_metrics(model, sample, config.attack, config.data, cache_dir=config.run.cache_dir,
                                      device=device, name=name, defenses=genome.defenses)
        metrics["attack_wall_seconds"] = time.perf_counter() - start
        metrics |= panel_metrics(metrics, attack_panel(config.attack), config.attack.panel_aggregate)
    return metrics
