"""The models the robustness benchmark attacks: one per row, each with its input defense.

A row is named by a spec (``bench/robustness.py --row SPEC``):

* ``teacher`` — the benchmark config's fine-tuned teacher;
* ``plain_kd`` — a student of the reference genome distilled with plain KD;
* ``defense:<a>[+<b>]``, ``method:<m>[+<n>]`` or both joined by a comma
  (``defense:word_recognition,method:adv_finetune``) — the reference genome distilled with
  those input defenses (trained on defended text, attacked through them) and distill methods;
* ``export:<dir>`` — an exported student directory (its ``defense.json.gz`` when present);
* ``searched:<run dir>`` — the best student of a search (its stored weights, its genome's defenses).

Distilled students are written under the benchmark's work directory, keyed by everything that
determines them (genome, defenses, methods, the distill/data/defense sections, the teacher's
weights), so a re-run loads them instead of distilling again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common import BenchError
from rosearch.config import AsccConfig, Config, DefenseConfig, config_from_dict
from rosearch.defense import DEFENSE_FILE, DEFENSE_NAMES, Defense, load_defense
from rosearch.distill.teacher import teacher_fingerprint
from rosearch.search_space.genome import Genome

logger = logging.getLogger("bench.robustness")

_PREFIXES = ("defense", "method")
REFERENCE_GENOME = Path(__file__).resolve().parent / "reference_genome.json"  # the distilled rows' default genome


@dataclass(frozen=True)
class RowSpec:
    """What one benchmark row is (parsed from its ``--row`` text)."""

    kind: str  # teacher, plain_kd, defense:<names>, method:<names>, both comma-joined, export, searched
    defenses: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    path: Path | None = None  # export: the student dir; searched: the run dir

    @property
    def distilled(self) -> bool:
        return self.kind not in ("teacher", "export", "searched")


@dataclass
class RowModel:
    """A loaded row: the classifier, its tokenizer and defense, and what the table says about it."""

    spec: RowSpec
    name: str
    model: torch.nn.Module
    tokenizer: Any
    defense: Defense | None
    fingerprint: str  # weights + defense: the key of its cached attack results
    params: int
    extra: dict[str, Any]  # JSON-ready facts for the row (genome hash, dev accuracy, ...)


def parse_row(text: str) -> RowSpec:
    """A row spec from its command-line text; a clear error says what is accepted."""
    text = text.strip()
    if text in ("teacher", "plain_kd"):
        return RowSpec(kind=text)
    for prefix in ("export", "searched"):
        if text.startswith(prefix + ":"):
            path = text[len(prefix) + 1:]
            if not path:
                raise BenchError(f"--row {text!r}: give a directory after '{prefix}:'")
            return RowSpec(kind=prefix, path=Path(path).expanduser())
    parts: dict[str, tuple[str, ...]] = {}
    for part in text.split(","):
        prefix, _, names = part.partition(":")
        if prefix not in _PREFIXES or not names or prefix in parts:
            raise BenchError(
                f"--row {text!r} is not a row spec (fix: teacher, plain_kd, export:DIR, searched:RUN_DIR, "
                "defense:NAME[+NAME], method:NAME[+NAME], or defense:...,method:...)"
            )
        parts[prefix] = tuple(names.split("+"))
    defenses = tuple(n for n in DEFENSE_NAMES if n in parts.get("defense", ()))  # application order
    unknown = sorted(set(parts.get("defense", ())) - set(DEFENSE_NAMES))
    if unknown:
        raise BenchError(f"--row {text!r}: unknown defense(s) {unknown} (known: {', '.join(DEFENSE_NAMES)})")
    methods = parts.get("method", ())
    kind = ",".join(f"{p}:{'+'.join(v)}" for p, v in (("defense", defenses), ("method", methods)) if v)
    return RowSpec(kind=kind, defenses=defenses, methods=methods)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(model_dir: Path, defense: Defense | None) -> str:
    """sha256 over the weights (as teacher caches key them) and the defense file's content."""
    parts = [teacher_fingerprint(model_dir)]
    defense_file = model_dir / DEFENSE_FILE
    if defense is not None and defense_file.is_file():
        parts.append(hashlib.sha256(defense_file.read_bytes()).hexdigest())
    return _digest(parts)[:32]


def teacher_dir(config: Config) -> Path:
    """The benchmark config's fine-tuned teacher; an error says how to make it when absent."""
    from rosearch.distill.teacher import resolve_model_path
    from rosearch.prepare.inputs import TEACHER_INFO, teacher_output_dir

    if config.teacher.finetuned:
        return Path(resolve_model_path(config.teacher.model))
    path = teacher_output_dir(config)
    if not (path / TEACHER_INFO).is_file():
        raise BenchError(f"the config's teacher is not fine-tuned yet (no {path / TEACHER_INFO}) "
                         "(fix: run `rosearch teacher --config` with the benchmark's config first)")
    return path


def _load_dir(model_dir: Path, tokenizer_dir: Path) -> tuple[torch.nn.Module, Any]:
    from rosearch.attack.command import _has_tokenizer, load_classifier

    return load_classifier(model_dir, None if _has_tokenizer(model_dir) else tokenizer_dir)


def _spec_path(spec: RowSpec) -> Path:
    if spec.path is None:
        raise BenchError(f"row {spec.kind!r} needs a directory (fix: --row {spec.kind}:DIR)")
    return spec.path


def _params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def load_teacher_row(spec: RowSpec, config: Config) -> RowModel:
    path = teacher_dir(config)
    model, tokenizer = _load_dir(path, path)
    info_file = path / "teacher_info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    extra = {"model": config.teacher.model, "dev_accuracy_full": info.get("dev_accuracy")}
    return RowModel(spec, "teacher", model, tokenizer, None, model_fingerprint(path, None), _params(model), extra)


def load_export_row(spec: RowSpec, config: Config, name: str | None = None) -> RowModel:
    path = _spec_path(spec)
    if not (path / "config.json").is_file():
        raise BenchError(f"--row {spec.kind}:{path}: not a saved student directory (no config.json there)")
    model, tokenizer = _load_dir(path, teacher_dir(config))
    defense = load_defense(path)
    extra: dict[str, Any] = {"defenses": list(defense.names) if defense else []}
    genome_file = path / "genome.json"
    if genome_file.is_file():
        extra["genome_hash"] = Genome.from_json(genome_file.read_text()).hash()
    return RowModel(spec, name or path.resolve().name, model, tokenizer, defense, model_fingerprint(path, defense),
                    _params(model), extra)


def _lexicon_texts(config: Config) -> list[str]:
    from rosearch.data.tasks import load_examples, task_spec

    return [t for e in load_examples(task_spec(config.data), "train", config.data.data_dir) for t in (e.text_a, e.text_b)
            if t is not None]


def load_searched_row(spec: RowSpec, config: Config, work_dir: Path) -> RowModel:
    """The run's best student, exported once into the work dir (stored weights when the run kept
    them), with its genome's defenses rebuilt from the run's own config when the export has none."""
    from rosearch.prepare.defense import build_defense_resources
    from rosearch.commands.export import export_students, load_run_config
    from rosearch.results.stats import open_store, ranked_records

    run_dir = _spec_path(spec)
    if not (run_dir / "results.sqlite").is_file():
        raise BenchError(f"--run {run_dir}: not a run directory (no results.sqlite there)")
    with open_store(run_dir) as store:
        ranked = ranked_records(store)
    if not ranked:
        raise BenchError(f"--run {run_dir}: the run has no finished candidate yet")
    best = ranked[0].genome_hash
    out = work_dir / "searched" / re.sub(r"[^A-Za-z0-9_.-]+", "-", run_dir.resolve().name)
    # keyed by the best genome, not the run's name alone: another run (or this run, extended) under
    # the same name must not reuse a stale export
    folders = sorted(out.glob(f"rank1-{best[:12]}*")) if out.is_dir() else []
    folder = folders[0] if folders else export_students(run_dir, out, top=1, device=config.run.device)[0]
    if not Genome.from_json((folder / "genome.json").read_text()).hash().startswith(best[:12]):
        raise BenchError(f"--run {run_dir}: the export in {folder} is not the run's best student {best[:12]}")
    genome = Genome.from_json((folder / "genome.json").read_text())
    if genome.defenses and load_defense(folder) is None:
        run_config = load_run_config(run_dir)
        resources = build_defense_resources(run_config, _lexicon_texts(run_config))
        Defense(genome.defenses, resources).save(folder)
        logger.info("searched: rebuilt defenses %s of %s from the run's config", list(genome.defenses), folder.name)
    row = load_export_row(dataclasses.replace(spec, path=folder), config,
                          name=f"searched {run_dir.resolve().name} {genome.hash()[:12]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    row.extra |= {"run": run_dir.resolve().name, "weights": metrics.get("export", {}).get("weights"),
                  "search_metrics": {k: v for k, v in metrics.get("search_metrics", {}).items()
                                     if isinstance(v, (int, float)) and re.search("accuracy|robust", k)}}
    row.spec = spec
    return row


def _row_config(config: Config, spec: RowSpec) -> Config:
    """The benchmark config as this distilled row trains: its methods, every defense prepared."""
    data = config.to_dict()
    data["distill"]["methods"] = list(spec.methods)
    data["search_space"]["defenses"] = list(spec.defenses)
    data["search_space"]["defense_choices"] = []
    data["attack"]["enabled"] = False  # the benchmark attacks; preparation needs no proxy set
    return config_from_dict(data)


# The layout of the sections a student key hashes. It is fixed, so that the stored students stay
# found: the knobs of the first six distill methods are written flat (``mate_kd_weight``), ascc's
# section only when it differs from its defaults, and the data section without the validation
# fields while they are 0, and the defense section without the typo encoding and smoothing knobs at their defaults.
# tests/test_cache_keys.py pins the keys this gives.
_FLAT_METHODS = ("augment", "mate_kd", "layer_kd", "rift", "adv_finetune", "adv_train")
_FLAT_NAMES = {("layer_kd", "attention_weight"): "attention_loss_weight"}


def _key_sections(config: Config) -> dict[str, Any]:
    """The data, distill and defense sections as a student key hashes them (see above)."""
    data = config.to_dict()
    distill = data["distill"]
    for method in _FLAT_METHODS:
        for name, value in distill.pop(method).items():
            distill[_FLAT_NAMES.get((method, name), f"{method}_{name}")] = value
    if config.distill.ascc == AsccConfig():
        distill.pop("ascc")
    for name in ("validation_size", "validation_min_words"):
        if data["data"][name] == 0:
            data["data"].pop(name)
    defaults = DefenseConfig()
    for name in ("typo_edit_distance", "typo_min_ratio", "typo_anchor_count",  # students from before typo encoding
                 "smoothing_copies", "smoothing_rate"):  # and before smoothing
        if getattr(config.defense, name) == getattr(defaults, name):
            data["defense"].pop(name)
    return {"distill": distill, "data": config.data.key_dict(data["data"]), "defense": data["defense"]}


def student_key(config: Config, genome: Genome, teacher_key: str) -> str:
    """What determines a distilled student: genome (with defenses), sections that train it, teacher."""
    return _digest({"genome": genome.to_json(), **_key_sections(config), "seed": config.run.seed,
                    "teacher": teacher_key})[:16]


def _reference_genome_hash() -> str:
    """The hash of :data:`REFERENCE_GENOME`: rows of another ``--genome`` are named by theirs."""
    return Genome.from_json(REFERENCE_GENOME.read_text()).hash()


def load_distilled_row(spec: RowSpec, config: Config, genome: Genome, work_dir: Path) -> RowModel:
    """The reference genome distilled as ``spec`` says, from the cache or trained now."""
    from rosearch.evaluate.candidate import evaluate_candidate
    from rosearch.prepare.inputs import prepare_inputs
    from rosearch.runtime.settings import resolve_device
    from rosearch.search import candidate_seed
    from rosearch.files.tokenizer_files import read_tokenizer_files

    row_config = _row_config(config, spec)
    bare = genome.hash()
    label = "reference genome" if bare == _reference_genome_hash() else f"genome {bare[:12]}"
    genome = Genome(genome.hidden_size, genome.embedding_size, genome.cells, spec.defenses)
    teacher = teacher_dir(config)
    key = student_key(row_config, genome, teacher_fingerprint(teacher))
    folder = work_dir / "students" / f"{spec.kind.replace(':', '-').replace(',', '_')}-{key}"
    if not (folder / "metrics.json").is_file():
        device = resolve_device(config.run.device)
        inputs = prepare_inputs(row_config, device)
        seed = candidate_seed(config.run.seed, genome.hash())  # the seed a search gives this genome
        logger.info("distil %s: genome %s, defenses %s, methods %s, %d steps", spec.kind, genome.hash()[:12],
                    list(spec.defenses) or "none", list(spec.methods) or "none", row_config.distill.max_steps)
        model, metrics = evaluate_candidate(genome, inputs, row_config.distill, seed=seed, device=device)
        partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            model.to("cpu").save_pretrained(partial)
            for name, content in read_tokenizer_files(inputs.teacher_dir).items():
                (partial / name).write_bytes(content)
            defense = inputs.defense(genome.defenses)
            if defense is not None:
                defense.save(partial)
            (partial / "genome.json").write_text(genome.to_json() + "\n")
            (partial / "metrics.json").write_text(json.dumps(
                metrics.to_dict() | {"teacher_dev_accuracy": inputs.teacher_dev_accuracy, "methods": list(spec.methods),
                                     "seed": seed}, indent=2) + "\n")
            partial.replace(folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    else:
        logger.info("distil %s: reusing %s", spec.kind, folder.name)
    name = f"plain KD ({label})" if spec.kind == "plain_kd" else f"{label}, {spec.kind}"
    row = load_export_row(RowSpec(kind="export", path=folder), config, name=name)
    metrics = json.loads((folder / "metrics.json").read_text())
    row.spec = spec
    row.extra |= {"methods": list(spec.methods), "dev_accuracy_full": metrics.get("dev_accuracy"),
                  "distill_steps": metrics.get("steps"), "train_seconds": metrics.get("train_seconds")}
    return row


def load_row(spec: RowSpec, config: Config, genome: Genome, work_dir: Path) -> RowModel:
    """The model of one row, ready to attack (on the CPU, in eval mode)."""
    if spec.kind == "teacher":
        row = load_teacher_row(spec, config)
    elif spec.kind == "export":
        row = load_export_row(spec, config)
    elif spec.kind == "searched":
        row = load_searched_row(spec, config, work_dir)
    else:
        row = load_distilled_row(spec, config, genome, work_dir)
    row.model.eval()
    return row
