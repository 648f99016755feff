"""Checks that take seconds and run before minutes of teacher and data preparation.

Everything that can be known from the config, the genome files, the run directory and the
teacher's ``config.json`` (read as JSON, no weights loaded) is checked here, so a bad input
fails at once with a message that names the field or file and says how to fix it, instead of
a traceback after the teacher was fine-tuned and the data tokenised.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rosearch.config import Config, ConfigError, DataConfig, DistillConfig, TeacherConfig, WorkersConfig, methods_used
from rosearch.data.tasks import SPLITS, load_examples, resolve_file, task_spec
from rosearch.files.model_paths import resolve_model_path
from rosearch.search_space import labels
from rosearch.search_space.cost import count_parameters
from rosearch.search_space.genome import Genome, InvalidGenomeError

logger = logging.getLogger(__name__)

BYTES_PER_PARAM_TRAINING = 16  # fp32 weights + gradients + two AdamW moments
ACTIVATION_FACTOR = 24  # float32 tensors kept per token, per hidden unit and layer for backward (rough)


class GenomeFileError(InvalidGenomeError):  # a UserError through InvalidGenomeError
    """A ``--genome`` file is missing, malformed, outside the search space or too large."""


@dataclass(frozen=True)
class TeacherShape:
    """What a student built for this teacher needs to know, read from its ``config.json``."""

    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    type_vocab_size: int


def teacher_shape(teacher: TeacherConfig) -> TeacherShape | None:
    """The teacher's shape from its ``config.json``; None for a hub id not on disk (checked later)."""
    path = Path(resolve_model_path(teacher.model)) / "config.json"  # TeacherError for a missing local dir
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TeacherShape(
            vocab_size=int(data["vocab_size"]), hidden_size=int(data.get("hidden_size") or data["dim"]),
            max_position_embeddings=int(data.get("max_position_embeddings", 512)),
            type_vocab_size=int(data.get("type_vocab_size", 2) or 2),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"config field 'teacher.model': {path} is not a readable model config ({type(exc).__name__}: {exc}) "
            "(fix: point teacher.model at a saved Hugging Face checkpoint)"
        ) from exc


def check_data_files(data: DataConfig) -> None:
    """Every split file ``data.data_dir`` must hold exists, before the teacher loads and before any run
    directory is created (otherwise a missing ``train.tsv`` would surface minutes later, leaving an empty run)."""
    spec = task_spec(data)  # a user's task without label_names reads its training labels here
    if not spec.preset:  # a user's data is read whole now: columns, labels and texts fail before any work
        for split in SPLITS:
            load_examples(spec, split, data.data_dir)
        return
    if data.data_dir is None:
        return  # the HF hub: checked when it is loaded
    for split in SPLITS:
        resolve_file(spec, split, data.data_dir)  # DataError naming the file and data.data_dir


def check_teacher_fit(config: Config, shape: TeacherShape | None) -> None:
    """``data.max_length`` and ``search_space.embedding_sizes`` against the teacher's shape (the whole config:
    the check crosses the data, search-space and teacher sections)."""
    if shape is None:
        return
    if config.data.max_length > shape.max_position_embeddings:
        raise ConfigError(
            f"config field 'data.max_length': {config.data.max_length} tokens, but the teacher "
            f"{config.teacher.model!r} has only {shape.max_position_embeddings} positions "
            f"(fix: set data.max_length <= {shape.max_position_embeddings})"
        )
    space = config.search_space
    if space.embedding_init == "teacher_pca" and max(space.embedding_sizes) > shape.hidden_size:
        raise ConfigError(
            f"config field 'search_space.embedding_sizes': {max(space.embedding_sizes)} is wider than the teacher's "
            f"embeddings ({shape.hidden_size}), so teacher_pca cannot initialise it "
            f"(fix: keep embedding sizes <= {shape.hidden_size}, or set search_space.embedding_init=random)"
        )


def available_memory_bytes() -> int | None:
    """Memory this process can still get (MemAvailable), or None where it is unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_memory_bytes(genome: Genome, params: int, *, batch_tokens: int) -> int:
    """A rough floor on the memory of distilling ``genome``: optimiser state plus activations of a batch of
    ``batch_tokens`` tokens (:func:`tokens_per_batch`)."""
    return _training_bytes(params, genome.hidden_size, genome.num_layers, batch_tokens)


def tokens_per_batch(distill: DistillConfig, data: DataConfig) -> int:
    """Tokens of one distillation batch at most: ``distill.batch_size`` x ``data.max_length``."""
    return distill.batch_size * data.max_length


def _training_bytes(params: int, hidden_size: int, num_layers: int, tokens: int) -> int:
    activations = tokens * hidden_size * num_layers * ACTIVATION_FACTOR * 4
    return params * BYTES_PER_PARAM_TRAINING + activations


def local_concurrency(workers: WorkersConfig, cpus: int | None = None) -> int | None:
    """How many candidates train at once on this machine: 1 in-process, the CPU slots of a local Ray
    instance; None on a cluster (candidates run on its nodes, whose memory the driver cannot see)."""
    if workers.backend == "inprocess":
        return 1
    if workers.address is not None:
        return None
    return max(1, int((cpus or os.cpu_count() or 1) // workers.num_cpus_per_candidate))


def check_search_memory(config: Config, memory_limit: int | None = None, cpus: int | None = None) -> None:
    """Warn when the largest students ``search_space.param_budget`` allows, as many as train at once on
    this machine, need more memory than it has: each candidate is checked alone by nobody, and Ray
    kills (and retries) one that runs out. Only with a budget: without one the largest student is unknown.

    The whole config: the largest student comes from the search space, its batch from the distill and
    data sections, and how many train at once from the workers section."""
    space = config.search_space
    slots = local_concurrency(config.workers, cpus)
    if space.param_budget is None or slots is None:
        return
    limit = available_memory_bytes() if memory_limit is None else memory_limit
    each = _training_bytes(space.param_budget, max(space.hidden_sizes), max(space.num_layers),
                           tokens_per_batch(config.distill, config.data))
    if limit is not None and each * slots > limit:
        logger.warning(
            "search: %d candidates train at once on this machine (workers.num_cpus_per_candidate=%g), and the largest "
            "students search_space.param_budget=%s allows need ~%.1f GiB each, %.1f GiB together, more than the "
            "%.1f GiB available; some may be killed for memory and retried (fix: raise workers.num_cpus_per_candidate "
            "to run fewer at once, or lower search_space.param_budget)", slots, config.workers.num_cpus_per_candidate,
            f"{space.param_budget:,}", each / 2**30, each * slots / 2**30, limit / 2**30)


def check_genome(genome: Genome, config: Config, shape: TeacherShape | None, where: str,
                 memory_limit: int | None = None) -> int | None:
    """Search-space membership, ``param_budget`` and the memory ceiling; returns the parameter count.

    The whole config: a genome is checked against the search space, the methods the run prepares
    (``distill.methods`` and the training choices), the task's labels and the batch it distils with."""
    space = config.search_space
    for value, field_name, name in ((genome.hidden_size, "hidden_sizes", "hidden size H"),
                                    (genome.embedding_size, "embedding_sizes", "embedding width E"),
                                    (genome.num_layers, "num_layers", "depth L")):
        allowed = getattr(space, field_name)
        if value not in allowed:
            raise GenomeFileError(
                f"{where}: {name}={value} is outside search_space.{field_name}={list(allowed)} "
                f"(fix: add {value} to search_space.{field_name}, or use a genome of this search space)"
            )
    grid = set(labels.op_labels(space.op_families, space.attention_heads, space.kernel_sizes, space.ffn_ratios,
                                space.activations))
    outside = [op for op in genome.op_labels_used() if op not in grid]
    if outside:
        raise GenomeFileError(
            f"{where}: operations {outside} are outside the search space (search_space.op_families, "
            "attention_heads, kernel_sizes, ffn_ratios, activations) (fix: widen those fields, or edit the genome)"
        )
    prepared = methods_used(config)
    unprepared = [m for m in genome.training if m not in prepared]
    if unprepared:
        raise GenomeFileError(
            f"{where}: training methods {unprepared} are in neither distill.methods {list(config.distill.methods)} nor "
            f"search_space.training_choices {list(space.training_choices)}, so the run does not prepare them "
            "(fix: add them to search_space.training_choices, or drop them from the genome's training list)"
        )
    if shape is None:
        return None
    params = count_parameters(
        genome, vocab_size=shape.vocab_size, num_labels=task_spec(config.data).num_labels,
        max_position_embeddings=min(shape.max_position_embeddings, 512), type_vocab_size=shape.type_vocab_size,
    )
    if space.param_budget is not None and params > space.param_budget:
        raise GenomeFileError(
            f"{where}: {params:,} parameters exceed search_space.param_budget={space.param_budget:,} "
            "(fix: a smaller genome, or raise search_space.param_budget)"
        )
    limit = available_memory_bytes() if memory_limit is None else memory_limit
    need = training_memory_bytes(genome, params, batch_tokens=tokens_per_batch(config.distill, config.data))
    if limit is not None and need > limit:
        raise GenomeFileError(
            f"{where}: distilling {params:,} parameters needs at least ~{need / 2**30:.1f} GiB, more than the "
            f"{limit / 2**30:.1f} GiB available on this machine (what every other process, a search's candidates "
            "included, leaves free now) (fix: a smaller genome, or a smaller distill.batch_size / data.max_length)"
        )
    return params


def load_genome_files(paths: list[str] | list[Path], config: Config, shape: TeacherShape | None,
                      memory_limit: int | None = None) -> list[Genome]:
    """Read, parse and check every ``--genome`` file before any preparation (against the whole config, as
    :func:`check_genome`)."""
    genomes = []
    for raw in paths:
        path = Path(raw)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GenomeFileError(f"--genome {str(path)!r} cannot be read ({exc}) (fix: pass a genome JSON file, "
                                  "e.g. <run_dir>/best_genome.json)") from exc
        try:
            genome = Genome.from_json(text)
        except InvalidGenomeError as exc:
            raise GenomeFileError(f"--genome {str(path)!r} is not a valid genome: {exc}") from exc
        check_genome(genome, config, shape, f"--genome {str(path)!r}", memory_limit)
        genomes.append(genome)
    return genomes
