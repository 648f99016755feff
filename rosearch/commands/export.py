"""Export a run's best students as standalone Hugging Face model folders.

Each folder holds what ``from_pretrained`` needs (``config.json`` + ``model.safetensors``, no
pickle), the teacher's tokenizer, the genome, the search's metrics and a model card naming the
exact run. The weights are the ones the search measured when the run kept them
(``candidates/<hash>/``); without them (a copy of the run without that folder) the student is
distilled again with the run's stored config and the candidate's own seed, which reproduces the
search's training when the rosearch code is the same (on CPU the search's per-candidate thread count is used too). Every folder
is reloaded through the Auto API after writing and must give the in-memory model's logits.

Loading an export (``import rosearch`` alone does not register the student classes)::

    from rosearch.student.modeling import register_auto_classes
    register_auto_classes()
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rosearch.config import Config, ConfigError, config_from_dict
from rosearch.data.tasks import task_spec
from rosearch.defense.pipeline import Defense, defend_pair, load_defense
from rosearch.defense.tokenizer import mark_tokenizer_defended
from rosearch.errors import UserError
from rosearch.evaluate.candidate import evaluate_candidate
from rosearch.files.model_paths import resolve_model_path
from rosearch.files.outputs import check_output_dir, publish_modes
from rosearch.prepare.inputs import prepare_inputs, teacher_output_dir
from rosearch.records.artifacts import load_student, read_candidate_files
from rosearch.commands.export_onnx import add_onnx_variants
from rosearch.records.ranking import budget_of
from rosearch.records.tracking import log_exported
from rosearch.results.stats import open_store, ranked_records, read_run_json, results_path, teacher_reference
from rosearch.records.store import CandidateRecord
from rosearch.files.rundir import CONFIG_FILE
from rosearch.runtime.settings import resolve_device
from rosearch.search import candidate_seed
from rosearch.prepare.search_inputs import SearchInputs
from rosearch.search_space.genome import Genome
from rosearch.student.modeling import StudentForSequenceClassification, register_auto_classes

logger = logging.getLogger(__name__)

LOGITS_ATOL = 1e-6  # reload check: the same weights on the same device give the same logits
CHECK_TEXTS = (
    "a gripping, beautifully acted film",
    "the plot is dull and the ending falls flat",
    "not bad at all",
    "it was a movie",
)
# config fields that hold file system paths, relative to the directory the run was started from
_PATH_FIELDS = (
    ("run", "cache_dir"), ("data", "data_dir"), ("teacher", "output_dir"), ("attack", "neighbors_path"),
    ("attack", "nltk_data"), ("attack", "wordnet_dir"), ("attack", "sentence_encoder"),
)


class ExportError(UserError, ValueError):
    """A student cannot be exported as asked, or its export does not reload to the same model."""


_HASH = re.compile(r"[0-9a-f]{16,64}")  # a genome hash as the search stores it (sha256 hex); names folders and seeds
_FOLDER = re.compile(r"\.?rank[0-9]+-[0-9a-f]{12}(\.[0-9a-f]{8}\.partial)?")


def is_export_entry(path: Path) -> bool:
    """True for what ``export`` leaves in its ``--out`` folder: student folders (with their genome.json),
    and the hidden ``.partial`` folder of an export that was interrupted."""
    return path.is_dir() and _FOLDER.fullmatch(path.name) is not None and (
        path.name.endswith(".partial") or (path / "genome.json").is_file())


def check_genome_hashes(records: list[CandidateRecord], store_path: Path) -> None:
    """Refuse rows whose ``genome_hash`` is not the hex digest the search writes (a hand-edited store):
    it names the exported folder and seeds the student, so it must be plain hex."""
    for record in records:
        if not isinstance(record.genome_hash, str) or _HASH.fullmatch(record.genome_hash) is None:
            try:
                expected = f"; this genome's hash is {Genome.from_json(record.genome_json).hash()}"
            except (UserError, ValueError, TypeError):
                expected = ""
            raise ExportError(
                f"{store_path}: candidate {record.genome_hash!r} has a genome_hash that is not a hexadecimal digest "
                f"(the store was edited by hand?){expected} (fix: restore results.sqlite from a snapshot, or set the "
                "row's genome_hash back to its genome's hash)"
            )


# --------------------------------------------------------------------------------------------
# The run's config
# --------------------------------------------------------------------------------------------


def run_root(run_dir: Path, output_dir: str, name: str) -> Path:
    """The directory the run was started from: ``run_dir`` minus its ``<output_dir>/<name>`` tail.

    Relative paths in the stored config are relative to it. When the run folder was moved or
    renamed the tail does not match and the current directory is assumed.
    """
    tail = Path(output_dir) / name
    resolved = run_dir.resolve()
    if not tail.is_absolute() and ".." not in tail.parts and resolved.parts[-len(tail.parts):] == tail.parts:
        return Path(*resolved.parts[: -len(tail.parts)])
    logger.info("run %s does not end in %s; resolving its relative paths against %s", run_dir, tail, Path.cwd())
    return Path.cwd()


def _stored_config(run_dir: Path) -> dict:
    with open_store(run_dir) as store:
        raw = store.run_config()
    raw = raw if raw is not None else read_run_json(run_dir, CONFIG_FILE)
    if not raw:
        raise ExportError(f"run {run_dir} stored no config (neither in its results nor in config.json)")
    return raw


def stored_run_root(run_dir: Path) -> Path:
    """The directory the run was started from, per the run's own stored (relative) output path."""
    run = _stored_config(run_dir).get("run") or {}
    return run_root(run_dir, str(run.get("output_dir", "runs")), str(run.get("name", run_dir.name)))


def load_run_config(run_dir: str | Path) -> Config:
    """The run's :class:`Config`, as stored with its results, usable from any working directory.

    Relative paths are resolved against the directory the run was started from.
    """
    run_dir = results_path(run_dir).parent
    data = json.loads(json.dumps(_stored_config(run_dir)))  # a deep copy: the paths below are rebased in it
    run = data.setdefault("run", {})
    root = stored_run_root(run_dir)
    for section, key in _PATH_FIELDS:
        value = (data.get(section) or {}).get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            data[section][key] = str(root / value)
    teacher = data.get("teacher") or {}
    model = teacher.get("model")
    # a fine-tuned teacher given by relative path: rebased (the path is not part of any cache key then)
    if teacher.get("finetuned") and isinstance(model, str) and not model.startswith("pkg:") and (root / model).is_dir():
        teacher["model"] = str(root / model)
    run["output_dir"], run["name"] = str(run_dir.resolve().parent), run_dir.resolve().name
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ExportError(f"the stored config of {run_dir} is not valid for this rosearch: {exc} (fix: run the "
                          "search again with this rosearch)") from exc


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the body with ``count`` intra-op threads (None: unchanged), then restore the old count."""
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def search_threads(config: Config) -> int | None:
    """The thread count the search trained its candidates with (CPU float sums depend on it)."""
    if config.workers.backend == "ray":
        return max(1, int(config.workers.num_cpus_per_candidate))  # as workers.ray_backend limits each task
    return config.run.num_threads


class _Distiller:
    """Distils students with the run's config; prepares the run's inputs once, on first use."""

    def __init__(self, config: Config, device: torch.device) -> None:
        self.config, self.device = config, device
        self._inputs = None

    @property
    def inputs(self) -> SearchInputs:
        if self._inputs is None:
            logger.info("export: preparing the run's data and teacher outputs (mostly cache hits)")
            self._inputs = prepare_inputs(self.config, self.device)
        return self._inputs

    def teacher_reference(self) -> dict[str, Any]:
        """The teacher's numbers as the prepared inputs know them (the keys of ``run_info.json``)."""
        inputs = self.inputs
        return {"teacher_dir": inputs.teacher_dir, "teacher_dev_accuracy": inputs.teacher_dev_accuracy,
                "teacher_params": inputs.teacher_params, "teacher_flops": inputs.teacher_flops,
                "dev_mean_length": inputs.dev_mean_length}

    def distil(self, record: CandidateRecord, max_steps: int | None) -> tuple[torch.nn.Module, float]:
        """The student of ``record`` trained as the search trained it (``max_steps`` overrides the budget)."""
        config = self.config
        if max_steps is not None:
            config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, max_steps=max_steps))
        genome = Genome.from_json(record.genome_json)
        seed = candidate_seed(config.run.seed, record.genome_hash)
        with torch_threads(search_threads(config) if self.device.type == "cpu" else None):
            model, metrics = evaluate_candidate(genome, self.inputs, config.distill, seed=seed, device=self.device)
        return model, metrics.dev_accuracy


# --------------------------------------------------------------------------------------------
# Writing one student
# --------------------------------------------------------------------------------------------


def _teacher_dir(run_dir: Path, config: Config) -> Path:
    """Where the run's teacher (and so its tokenizer) lives."""
    recorded = teacher_reference(run_dir).get("teacher_dir")
    if recorded:
        path = Path(recorded)
        if not path.is_absolute():
            path = stored_run_root(run_dir) / path
        if path.is_dir():
            return path
        logger.warning("run_info.json names teacher %s, which does not exist; deriving it from the config", path)
    if config.teacher.finetuned:
        return Path(resolve_model_path(config.teacher.model))
    return teacher_output_dir(config)


def _package_version() -> str:
    try:
        return metadata.version("rosearch")
    except metadata.PackageNotFoundError:
        return "unknown"


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.{digits}f}"


def model_card(*, folder: str, run_dir: Path, record: CandidateRecord, rank: int, seed: int, config: Config,
               meta: Mapping[str, str], teacher: Mapping[str, Any], export: Mapping[str, Any],
               defense: Defense | None = None) -> str:
    """The README.md of an exported student: numbers, architecture, provenance, how to load it."""
    m = record.metrics
    genome = Genome.from_json(record.genome_json)
    rows = [("dev accuracy (search)", _fmt(m.get("dev_accuracy")))]
    if export["weights"] != "stored":
        rows.append((f"dev accuracy (these weights, {export['weights']})", _fmt(export["dev_accuracy"])))
    for key, name in (("proxy_robust_accuracy", "accuracy on the teacher's adversarial examples (proxy)"),
                      ("robust_accuracy", "accuracy under attack"), ("attack_success_rate", "attack success rate"),
                      ("perturbed_word_pct", "perturbed words (%)"), ("attack_queries", "queries per example")):
        if m.get(key) is not None:
            rows.append((name, _fmt(m[key], 2 if key in ("perturbed_word_pct", "attack_queries") else 4)))
    rows += [
        ("parameters", f"{m['params'] / 1e6:.2f}M" if m.get("params") else "n/a"),
        ("FLOPs per example", (f"{m['flops'] / 1e6:.1f}M at {teacher['dev_mean_length']} tokens (dev mean)"
                               if teacher.get("dev_mean_length") else f"{m['flops'] / 1e6:.1f}M at the dev mean length")
         if m.get("flops") else "n/a"),
        ("latency, batch 1 / 32 (ms)", f"{_fmt(m.get('latency_ms_b1'), 2)} / {_fmt(m.get('latency_ms_b32'), 1)}"),
        ("teacher dev accuracy", _fmt(teacher.get("teacher_dev_accuracy"))),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    layers = "\n".join(
        f"- layer {i}: {', '.join(cell.ops[1:-1])} ({cell.num_edges} edges)" for i, cell in enumerate(genome.cells)
    )
    notes = []
    if export["weights"] == "redistilled":
        notes.append("The run kept no weights, so this student was distilled again with the run's config and the "
                     "candidate's seed" + ("." if export["dev_accuracy"] == m.get("dev_accuracy") else
                     "; it does not match the search's dev accuracy (other rosearch code or thread count)."))
    if export["weights"] == "retrained" and any(k in m for k in ("proxy_robust_accuracy", "robust_accuracy")):
        notes.append("Robustness figures were measured on the search's weights; these weights were distilled again "
                     f"for {export['retrain_steps']} steps and were not attacked.")
    attack_note = "".join(f"\n{note}\n" for note in notes)
    defense_section = _defense_section(defense)
    methods = config.distill.methods + tuple(t for t in genome.training if t not in config.distill.methods)
    training = ", ".join(f"`{name}`" for name in methods) or "none (plain KD)"
    if genome.training:
        training += " (the search's training gene chose " + ", ".join(f"`{t}`" for t in genome.training) + ")"
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [rosearch, knowledge-distillation, neural-architecture-search]
---

# rosearch student {record.genome_hash[:12]} (rank {rank} of run `{run_dir.name}`)

A {genome.num_layers}-layer student (hidden size {genome.hidden_size}, embedding width {genome.embedding_size})
found by rosearch's evolutionary search and distilled from the teacher `{config.teacher.model}` on
`{config.data.task}`.

| metric | value |
|---|---|
{table}
{attack_note}
## Architecture

Each layer is a small DAG cell (node 0 the input, the last node the output; a node applies its
operation to the sum of its predecessors), followed by residual + LayerNorm. The embedding is
factorised ({genome.embedding_size} -> {genome.hidden_size}). Full genome: `genome.json`.

{layers}
{defense_section}
## Training

Knowledge distillation ({export['steps']} steps, batch {config.distill.batch_size}) with the robust
methods: {training}.

## Provenance

- run: `{run_dir.name}` (generation {record.generation}, rank {rank} by the run's selection)
- config fingerprint: `{meta.get('config_fingerprint', 'unknown')}`
- genome hash: `{record.genome_hash}`
- seed: {seed} (run seed {config.run.seed})
- distillation: {export['steps']} steps; weights {export['weights']}
- rosearch version: {meta.get('rosearch_version', 'unknown')} (search), {_package_version()} (export)

## How to load

`import rosearch` alone does not register the student classes with transformers; call
`register_auto_classes()` first:

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from rosearch.student.modeling import register_auto_classes

register_auto_classes()
model = AutoModelForSequenceClassification.from_pretrained("{folder}", use_safetensors=True)
tokenizer = AutoTokenizer.from_pretrained("{folder}")
logits = model(**tokenizer(["a gripping film"], return_tensors="pt")).logits
```
""" + (_DEFENSE_LOADING.replace("{folder}", folder) if defense is not None else "")


_DEFENSE_LOADING = """
This student carries input defenses (`defense.json.gz`). Its tokenizer (`DefendedTokenizerFast`,
known to `AutoTokenizer` after `register_auto_classes()`) applies them to every raw text before
tokenising, so the code above and a plain pipeline query the defended student:

```python
from transformers import pipeline

classify = pipeline("text-classification", model="{folder}")  # after register_auto_classes()
classify("a grippnig film")  # the misspelling is repaired before the model sees it
```

Without rosearch installed the defenses are not applied: the model then sees text it was not
trained on (synonym encoding) and loses its robustness to misspellings (word recognition).
`rosearch.defense.load_defense("{folder}")` returns the same text -> text function.
"""


def _defense_section(defense: Defense | None) -> str:
    """The model card's description of the student's input defenses (empty when it has none)."""
    if defense is None:
        return ""
    info = defense.describe()
    lines = ["", "## Input defenses (part of the model: apply them before the tokenizer)", ""]
    if "word_recognition" in info:
        wr = info["word_recognition"]
        lines.append(f"- word recognition: a word outside the {wr['lexicon_words']:,}-word training lexicon is mapped to "
                     f"the most frequent known word within {wr['max_edit_distance']} edits (adjacent swaps count 1); "
                     f"with none in reach, to `{wr['neutral_word']}` (backoff `{wr['backoff']}`)")
    if "synonym_encoding" in info:
        se = info["synonym_encoding"]
        lines.append(f"- synonym encoding: {se['mapped_words']:,} words are written as one of {se['clusters']:,} "
                     "synonym-cluster representatives (WordNet + counter-fitted neighbours), in training and inference")
    if "smoothing" in info:
        sm = info["smoothing"]
        lines.append(f"- smoothing: every text is answered by {sm['copies']} copies, each word swapped with probability "
                     f"{sm['rate']} for a random counter-fitted neighbour ({sm['words_with_neighbours']:,} words have "
                     "some), seeded by the text (the same text always gets the same answer); the answer is their mean "
                     "probability, so a query costs that many forward passes (one batch). With `pipeline`, keep its "
                     "default batch_size=1")
    return "\n".join(lines) + "\n"


def verify_export(model: torch.nn.Module, folder: Path, defense: Defense | None = None) -> float:
    """Reload ``folder`` through the Auto API and compare its logits with ``model``'s (behind
    ``defense``, on clean and misspelt texts, when it has one); return the max difference."""
    register_auto_classes()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
    if not isinstance(reloaded, StudentForSequenceClassification):
        raise ExportError(f"{folder} reloads as {type(reloaded).__name__}, not StudentForSequenceClassification")
    max_length = int(model.config.max_position_embeddings)
    texts = list(CHECK_TEXTS) + [_misspelt(t) for t in CHECK_TEXTS]
    reloaded_defense = load_defense(folder)
    if (reloaded_defense is None) != (defense is None) or (
            defense is not None and (reloaded_defense.names != defense.names or reloaded_defense(texts) != defense(texts))):
        raise ExportError(f"{folder}: the saved input defense does not reload to the exported one")
    texts = defend_pair(defense, texts)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        before = model.eval()(**inputs).logits  # [n, C]
        after = reloaded(**inputs).logits  # [n, C]
    difference = float((before - after).abs().max())
    if not difference <= LOGITS_ATOL:
        raise ExportError(
            f"{folder} does not reload to the exported model: logits differ by up to {difference:.3g} "
            f"(tolerance {LOGITS_ATOL}); the folder is incomplete or was changed while writing"
        )
    return difference


def _misspelt(text: str) -> str:
    """``text`` with the inner letters of every long word swapped (a DeepWordBug-like edit)."""
    return " ".join(w[0] + w[2] + w[1] + w[3:] if len(w) > 4 and w.isalpha() else w for w in text.split())


def _publish(partial: Path, final: Path) -> None:
    """Replace ``final`` by ``partial``; only an earlier export (it has genome.json) is ever replaced."""
    if final.exists():
        if not (final / "genome.json").is_file():
            raise ExportError(f"{final} exists and is not a rosearch export; choose another --out directory")
        shutil.rmtree(final)
    os.replace(partial, final)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every exported student of one run shares."""

    run_dir: Path
    config: Config
    meta: Mapping[str, str]  # the store's metadata (config fingerprint, rosearch version)
    tokenizer: Any  # the teacher's


def _student(record: CandidateRecord, run: _Run, distiller: _Distiller, retrain_steps: int | None,
             teacher: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The student's weights (stored, re-distilled or retrained), how they were obtained, and the teacher's numbers."""
    stored_accuracy = record.metrics.get("dev_accuracy")
    files = None if retrain_steps is not None else read_candidate_files(run.run_dir, record.genome_hash)
    searched_steps = budget_of(record)  # successive halving: the budget its stored figures were measured at
    export = {"weights": "stored", "dev_accuracy": stored_accuracy, "search_dev_accuracy": stored_accuracy,
              "retrain_steps": retrain_steps, "steps": retrain_steps or searched_steps or run.config.distill.max_steps}
    if files is not None:
        return load_student(files), export, teacher
    export["weights"] = "retrained" if retrain_steps is not None else "redistilled"
    name = record.genome_hash[:12]
    logger.info("export: distilling %s %s", name,
                f"for {retrain_steps} steps" if retrain_steps else "again (the run kept no weights)")
    model, export["dev_accuracy"] = distiller.distil(record, retrain_steps or searched_steps)
    teacher = distiller.teacher_reference() | teacher  # the distiller's figures fill what the run did not record
    if export["weights"] == "redistilled" and record.metrics.get("fidelity") == "supernet":
        logger.info("export: %s distilled stand-alone to dev accuracy %.4f (the search measured %s with weights "
                    "inherited from its supernet)", name, export["dev_accuracy"], stored_accuracy)
    elif export["weights"] == "redistilled":
        if export["dev_accuracy"] == stored_accuracy:
            logger.info("export: %s reproduced its search dev accuracy %.4f", name, stored_accuracy)
        else:
            logger.warning("export: %s re-distilled to dev accuracy %.4f, the search measured %s "
                           "(other rosearch code, device or thread count?)", name, export["dev_accuracy"], stored_accuracy)
    return model, export, teacher


def candidate_defense(run_dir: Path, genome: Genome, distiller: _Distiller) -> Defense | None:
    """The input defense a candidate carries: from the run's saved defense resources, or (runs
    that kept none) prepared again from the run's config."""
    if not genome.defenses:
        return None
    saved = load_defense(run_dir)
    if saved is not None and set(genome.defenses) <= set(saved.names):
        return saved.restricted(genome.defenses)
    logger.info("export: run %s kept no defense resources; building them from its config", run_dir)
    return distiller.inputs.defense(genome.defenses)


def _write_student(model: torch.nn.Module, folder: Path, run: _Run, record: CandidateRecord, rank: int,
                   export: Mapping[str, Any], teacher: Mapping[str, Any], defense: Defense | None = None,
                   onnx: bool = False, int8: bool = False) -> None:
    """Write, check and publish one student folder (a failed check leaves no folder behind)."""
    seed = candidate_seed(run.config.run.seed, record.genome_hash)
    partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        model.save_pretrained(partial, safe_serialization=True)
        run.tokenizer.save_pretrained(partial)
        if defense is not None:  # the student is only itself with its input defenses
            defense.save(partial)
            mark_tokenizer_defended(partial)  # so AutoTokenizer / pipeline apply them too
        (partial / "genome.json").write_text(Genome.from_json(record.genome_json).to_json() + "\n")
        (partial / "metrics.json").write_text(json.dumps({
            "genome_hash": record.genome_hash, "rank": rank, "generation": record.generation, "seed": seed,
            "fitness": record.fitness, "objectives": list(record.objectives or ()), "search_metrics": record.metrics,
            "export": export, "teacher": teacher, "run": run.run_dir.name,
            "config_fingerprint": run.meta.get("config_fingerprint"),
        }, indent=2, default=str) + "\n")
        (partial / "README.md").write_text(model_card(
            folder=folder.name, run_dir=run.run_dir, record=record, rank=rank, seed=seed, config=run.config,
            meta=run.meta, teacher=teacher, export=export, defense=defense,
        ))
        if onnx or int8:  # graphs checked on the run's dev texts; figures into metrics.json and the card

            add_onnx_variants(partial, model, run.tokenizer, run.config, defense, int8=int8, name=folder.name)
        difference = verify_export(model, partial, defense)
        publish_modes(partial)
        _publish(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("export: rank %d %s -> %s (%s weights, dev accuracy %s, reload max |Δlogit| %.1g)",
                rank, record.genome_hash[:12], folder, export["weights"], _fmt(export["dev_accuracy"]), difference)


def export_students(run_dir: str | Path, out_dir: str | Path, *, top: int = 3, retrain_steps: int | None = None,
                    device: str = "auto", onnx: bool = False, int8: bool = False) -> list[Path]:
    """Write the run's ``top`` best students under ``out_dir`` (one folder each, best first); return the folders.

    Weights come from ``candidates/<hash>/`` when the run kept them, else from distilling the
    genome again exactly as the search did. ``retrain_steps`` distils every student again with
    that many steps instead (e.g. a longer budget than the search could afford) and records the
    new dev accuracy next to the search's. Folders are named ``rank<r>-<hash[:12]>``. ``onnx`` adds
    ``model.onnx`` and ``int8`` (implies ``onnx``) ``model.int8.onnx``, both checked by ONNX Runtime
    on the run's dev texts (:mod:`rosearch.commands.export_onnx`).
    """
    for name, value in (("top", top), ("retrain_steps", retrain_steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ExportError(f"export {name} must be a positive integer, got {value!r}")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, "--out", "the student folders of an earlier export", is_export_entry)
    run_dir = results_path(run_dir).parent
    with open_store(run_dir) as store:
        records = ranked_records(store)[:top]
        meta = store.metadata()
    if not records:
        raise ExportError(f"run {run_dir} has no finished candidate to export")
    check_genome_hashes(records, results_path(run_dir))
    config = load_run_config(run_dir)  # its run.device is the search's; `device` is where we distil
    run = _Run(run_dir, config, meta, AutoTokenizer.from_pretrained(_teacher_dir(run_dir, config)))
    distiller = _Distiller(config, resolve_device(device))
    teacher = teacher_reference(run_dir)
    label_names = tuple(teacher.get("label_names") or task_spec(config.data).label_names)  # the search's, when kept
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = []
    for rank, record in enumerate(records, start=1):
        model, export, teacher = _student(record, run, distiller, retrain_steps, teacher)
        model = model.to("cpu").eval()
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {label: i for i, label in enumerate(label_names)}
        folder = out_dir / f"rank{rank}-{record.genome_hash[:12]}"
        defense = candidate_defense(run_dir, Genome.from_json(record.genome_json), distiller)
        _write_student(model, folder, run, record, rank, export, teacher, defense, onnx=onnx, int8=int8)
        folders.append(folder)
    log_exported(run_dir, config.run.report_to, config.run.name, config.to_dict(), folders)  # run.report_to's trackers
    return folders
