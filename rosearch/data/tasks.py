"""Tasks, their examples, and their tokenised splits — loaded, validated and tokenised once.

A task (:data:`TASKS`) says where its text lives: GLUE-format TSV files or the IMDB CSV when
``data.data_dir`` is set (offline machines), HF ``datasets`` otherwise. Malformed input is an
error naming the file and line, never a silently dropped row, because a quietly shrunken dev set
makes every accuracy in a search wrong. Tokenisation happens once per (tokenizer, task, split,
max length, subset, file content) and is cached on disk as an :class:`EncodedSplit`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import hashlib
import io
import itertools
import json
import logging
import random
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from rosearch.data.batching import EncodedSplit
from rosearch.files.cache import TOKENISED_SPLITS, StaleEntry, atomic_file, read_entry
from rosearch.config import DataConfig
from rosearch.errors import UserError

logger = logging.getLogger(__name__)

Split = Literal["train", "dev"]
SPLITS: tuple[str, ...] = ("train", "dev")

_ENCODE_BATCH = 1000


class DataError(UserError, ValueError):
    """Task data is missing, unreadable or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One labelled example in raw text (attacks perturb this text, so it is kept)."""

    text_a: str
    text_b: str | None
    label: int


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to read one task: where its rows are (local files and/or an HF hub dataset),
    which columns hold the text(s) and the label, and the label names.

    The built-in tasks (:data:`TASKS`) and a user's own data (``data.train_file`` or
    ``data.dataset_name``, see :func:`task_spec`) are both TaskSpecs and load through the same code.
    ``label_names`` are in label-index order (HF ``datasets`` order for the built-in tasks, so ids
    agree between files and hub). A label field may hold a name or, where the names are declared
    (built-in tasks, ``data.label_names``), its index. IMDB has no dev split, so its ``"dev"`` is
    the official test split: report IMDB dev numbers as test numbers. A task without a dev source
    (``dev_file`` and ``hf_dev_split`` unset) gets a seeded, stratified ``dev_share`` of train.
    """

    name: str
    label_names: tuple[str, ...]
    text_columns: tuple[str, ...]  # text_a (and text_b for pair tasks)
    label_column: str = "label"
    train_file: str | None = None  # local file names (built-in: looked up under data.data_dir)
    dev_file: str | None = None
    subdir: str = ""  # conventional folder name, also tried under data.data_dir (e.g. "SST-2")
    glue_tsv: bool = False  # GLUE's TSVs hold literal quote characters: read with QUOTE_NONE
    hf_path: str | None = None
    hf_name: str | None = None
    hf_train_split: str = "train"
    hf_dev_split: str | None = None
    hf_text_columns: tuple[str, ...] = ()  # () : text_columns
    hf_label_column: str | None = None  # None: label_column (both filled in on creation)
    dev_share: float = 0.1  # of train, when there is no dev source
    preset: bool = False  # a built-in task: local files only with data.data_dir, else the hub
    labels_declared: bool = True  # False: label_names were read off the training labels (no index labels then)

    def __post_init__(self) -> None:
        if not self.hf_text_columns:  # a user's hub dataset has the columns it names
            object.__setattr__(self, "hf_text_columns", self.text_columns)
        if self.hf_label_column is None:
            object.__setattr__(self, "hf_label_column", self.label_column)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    def file_name(self, split: str) -> str | None:
        return self.train_file if _check_split(split) == "train" or self.dev_file is None else self.dev_file

    def hf_split(self, split: str) -> str | None:
        return self.hf_train_split if _check_split(split) == "train" else self.hf_dev_split

    def has_dev_source(self, local: bool) -> bool:
        """Whether dev has its own file / hub split (else it is carved from train)."""
        return (self.dev_file if local else self.hf_dev_split) is not None

    def reads_local(self, data_dir: str | Path | None) -> bool:
        """Local files or the hub: a built-in task reads files when data.data_dir is set, a user's task when
        it names a train file."""
        return data_dir is not None if self.preset else self.train_file is not None

    @property
    def hf_id(self) -> str:
        return str(self.hf_path) if self.hf_name is None else f"{self.hf_path}/{self.hf_name}"

    def key_fields(self) -> dict[str, Any]:
        """What of a user's task decides its examples (cache keys of splits and teachers)."""
        fields = dataclasses.asdict(self)
        fields.pop("preset")
        return fields


def _glue(name: str, subdir: str, labels: tuple[str, ...], text_columns: tuple[str, ...], label_column: str,
          hf_text_columns: tuple[str, ...]) -> TaskSpec:
    return TaskSpec(
        name=name, label_names=labels, text_columns=text_columns, label_column=label_column,
        train_file="train.tsv", dev_file="dev.tsv", subdir=subdir, glue_tsv=True,
        hf_path="glue", hf_name=name, hf_train_split="train", hf_dev_split="validation",
        hf_text_columns=hf_text_columns, hf_label_column="label", preset=True,
    )


TASKS: Mapping[str, TaskSpec] = types.MappingProxyType({
    "sst2": _glue("sst2", "SST-2", ("negative", "positive"), ("sentence",), "label", ("sentence",)),
    "mrpc": _glue("mrpc", "MRPC", ("not_equivalent", "equivalent"), ("#1 String", "#2 String"), "Quality",
                  ("sentence1", "sentence2")),
    "rte": _glue("rte", "RTE", ("entailment", "not_entailment"), ("sentence1", "sentence2"), "label",
                 ("sentence1", "sentence2")),
    "qnli": _glue("qnli", "QNLI", ("entailment", "not_entailment"), ("question", "sentence"), "label",
                  ("question", "sentence")),
    # IMDB has no dev split: its 25k-review test split serves as "dev" (both locally and on the hub).
    "imdb": TaskSpec(
        name="imdb", label_names=("neg", "pos"), text_columns=("text",), label_column="label",
        train_file="imdb_train.csv.gz", dev_file="imdb_test.csv.gz", subdir="imdb",
        hf_path="stanfordnlp/imdb", hf_train_split="train", hf_dev_split="test", preset=True,
    ),
})

# a user's local files: format by file name (a trailing .gz is decompressed first)
FILE_FORMATS: Mapping[str, str] = types.MappingProxyType({
    ".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet",
})


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    return split


def get_task(name: str) -> TaskSpec:
    """The built-in :class:`TaskSpec` called ``name``; unknown names list the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown task {name!r} (known: {', '.join(TASKS)}; fix: set data.task to one of them, "
                        "or name your own data with data.train_file or data.dataset_name)") from None


def is_custom(data: DataConfig) -> bool:
    """Whether ``data`` names the user's own data rather than a built-in task."""
    return data.own_data


def task_spec(data: DataConfig) -> TaskSpec:
    """The task ``data`` describes: a built-in one (``data.task``), or the user's own files / hub dataset.

    Label names a user did not declare are read off the training labels (sorted; numerically when
    they are all integers), once per process and config.
    """
    if not is_custom(data):
        return get_task(data.task)
    return _custom_spec(data)


@functools.lru_cache(maxsize=16)
def _custom_spec(data: DataConfig) -> TaskSpec:
    spec = TaskSpec(
        name=data.task, label_names=tuple(data.label_names), text_columns=tuple(data.text_columns),
        label_column=data.label_column, train_file=data.train_file, dev_file=data.dev_file,
        hf_path=data.dataset_name, hf_name=data.dataset_config, hf_train_split=data.train_split,
        hf_dev_split=data.dev_split, dev_share=data.dev_share, labels_declared=bool(data.label_names),
    )
    if spec.labels_declared:
        return spec
    names, indexed = _infer_label_names(spec, data.data_dir)
    logger.info("data: %s: %d label names %s: %s", spec.name, len(names),
                "from the dataset's ClassLabel" if indexed else "read off the training labels", ", ".join(names))
    return dataclasses.replace(spec, label_names=names, labels_declared=indexed)


# --------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One raw row: where it is (for messages), its text field(s) and its label field."""

    where: str
    texts: tuple[Any, ...]
    label: Any


def _label_text(raw: Any) -> str:
    """A label field as text: ``1``, ``1.0`` and ``"1"`` are all ``"1"``; a missing one is ``""``."""
    if raw is None or (isinstance(raw, float) and raw != raw):
        return ""
    if isinstance(raw, bool):
        return str(raw).lower()
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw).strip()


def _parse_label(spec: TaskSpec, raw: Any, where: str) -> int:
    """Label index from a label name (``"entailment"``) or, where names are declared, an index (``"1"``, ``1``)."""
    text = _label_text(raw)
    if not text:
        raise DataError(f"{where}: missing label (fix: give every row a label)")
    if text in spec.label_names:
        return spec.label_names.index(text)
    declared = "data.label_names" if not spec.preset else f"task {spec.name}"
    if not spec.labels_declared:
        raise DataError(f"{where}: label {text!r} does not occur in the training labels {list(spec.label_names)} "
                        "(fix: correct the row, or declare every class in data.label_names)")
    try:
        value = int(text)
    except ValueError:
        raise DataError(
            f"{where}: unknown label {text!r} for task {spec.name} "
            f"(expected one of {', '.join(spec.label_names)} or an index 0..{spec.num_labels - 1}"
            + ("" if spec.preset else "; fix: correct the row or add the name to data.label_names") + ")"
        ) from None
    if not 0 <= value < spec.num_labels:
        raise DataError(
            f"{where}: label {value} is out of range for task {spec.name} (expected 0..{spec.num_labels - 1}, "
            f"the indices of {declared}; unlabelled test splits cannot be used for training or evaluation)"
        )
    return value


def _make_example(spec: TaskSpec, row: _Row) -> Example:
    stripped = []
    for column, text in zip(spec.text_columns, row.texts):
        if text is not None and not isinstance(text, str):
            raise DataError(f"{row.where}: the text in column {column!r} is a {type(text).__name__} ({str(text)[:40]!r}), "
                            "not a string (fix: point data.text_columns at the column(s) holding the text)")
        value = "" if text is None else text.strip()
        if not value:
            raise DataError(f"{row.where}: empty text in column {column!r}")
        stripped.append(value)
    label = _parse_label(spec, row.label, row.where)
    return Example(text_a=stripped[0], text_b=stripped[1] if spec.is_pair else None, label=label)


def _decode(path: Path, content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = content[: err.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not valid UTF-8 ({err.reason}); the files must be UTF-8 encoded") from None


def _missing_columns(spec: TaskSpec, path: Any, header: Sequence[str], where: str) -> None:
    for name in (*spec.text_columns, spec.label_column):
        if name not in header:
            fix = ("" if spec.preset else " (fix: set data.text_columns / data.label_column to columns the file has)")
            raise DataError(
                f"{where}: missing {'header ' if spec.preset else ''}column {name!r} for task {spec.name} "
                f"(header has {list(header)}; expected columns {[*spec.text_columns, spec.label_column]}){fix}"
            )


def _csv_rows(spec: TaskSpec, path: Path, text: str, delimiter: str) -> list[_Row]:
    """Rows of decoded CSV/TSV ``text`` whose first line is a header."""
    if spec.glue_tsv:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} line 1: the file is empty (expected a header line)")
        header = [name.strip() for name in header]
        _missing_columns(spec, path, header, f"{path} line 1")
        text_idx = [header.index(name) for name in spec.text_columns]
        label_idx = header.index(spec.label_column)
        rows = []
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num  # a quoted field may span lines
            where = f"{path} line {start}"
            if len(row) != len(header):
                raise DataError(
                    f"{where}: wrong column count: {len(row)} fields, the header has {len(header)}"
                    + (" (blank line)" if not row else "")
                )
            rows.append(_Row(where, tuple(row[i] for i in text_idx), row[label_idx]))
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: unreadable row ({err})") from None
    return rows


def _record_rows(spec: TaskSpec, path: Path, records: Sequence[tuple[int, Any]], what: str) -> list[_Row]:
    """Rows of JSON objects / Parquet records: ``records`` holds (line or row number, record)."""
    rows = []
    for number, record in records:
        where = f"{path} {what} {number}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object with named fields, got {type(record).__name__}")
        _missing_columns(spec, path, list(record), where)
        rows.append(_Row(where, tuple(record[c] for c in spec.text_columns), record[spec.label_column]))
    return rows


def _json_rows(spec: TaskSpec, path: Path, text: str, lines: bool) -> list[_Row]:
    """A JSON array of objects (``.json``) or one object a line (``.jsonl``, also accepted in ``.json``)."""
    stripped = text.strip()
    if not lines and stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
        return _record_rows(spec, path, list(enumerate(records)), "record")
    numbered = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number}: not valid JSON ({err.msg}; JSON lines need one object a line)") from None
    return _record_rows(spec, path, numbered, "line")


def _parquet_rows(spec: TaskSpec, path: Path, content: bytes) -> list[_Row]:
    import pyarrow.parquet as pq  # lazy: only Parquet users need it

    try:
        table = pq.read_table(io.BytesIO(content))
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    _missing_columns(spec, path, table.column_names, str(path))
    columns = [table.column(c).to_pylist() for c in (*spec.text_columns, spec.label_column)]
    return [_Row(f"{path} row {i}", tuple(col[i] for col in columns[:-1]), columns[-1][i]) for i in range(table.num_rows)]


def _file_rows(spec: TaskSpec, path: Path, content: bytes) -> list[_Row]:
    """The rows of a local file; its format from the built-in task, or from its name."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if spec.glue_tsv:
        fmt = "tsv"
    else:
        fmt = FILE_FORMATS.get(Path(name).suffix.lower(), "")
        if not fmt:
            raise DataError(f"{path}: unknown file format (fix: name it .csv, .tsv, .json, .jsonl or .parquet, "
                            "optionally gzipped as .gz)")
    if not content.strip():
        raise DataError(f"{path}: the file is empty (expected a header line and rows)")
    if fmt == "parquet":
        rows = _parquet_rows(spec, path, content)
    elif fmt in ("json", "jsonl"):
        rows = _json_rows(spec, path, _decode(path, content), lines=fmt == "jsonl")
    else:
        rows = _csv_rows(spec, path, _decode(path, content), "\t" if fmt == "tsv" else ",")
    if not rows:
        raise DataError(f"{path}: no data rows" + (" after the header" if fmt in ("csv", "tsv") else ""))
    return rows


def resolve_file(spec: TaskSpec, split: str, data_dir: str | Path | None) -> Path:
    """The local file of ``split``: a built-in task's in ``data_dir`` or its ``<spec.subdir>`` folder; a
    user's file as given (relative to ``data_dir`` when that is set)."""
    name = spec.file_name(split)
    if not spec.preset:
        path = Path(str(name)).expanduser()
        if data_dir is not None and not path.is_absolute():
            path = Path(data_dir).expanduser() / path
        if not path.is_file():
            which = "data.train_file" if split == "train" or spec.dev_file is None else "data.dev_file"
            raise DataError(f"missing file {path} for the {split} split of task {spec.name} (fix: set {which} to an "
                            "existing CSV, TSV, JSON/JSONL or Parquet file" +
                            (", relative to data.data_dir" if data_dir is not None else "") + ")")
        return path
    root = Path(data_dir if data_dir is not None else ".").expanduser()
    for candidate in (root / str(name), root / spec.subdir / str(name)):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"missing file {root / str(name)} for the {split} split of task {spec.name} (fix: set data.data_dir to a "
        f"directory holding {spec.train_file} and {spec.dev_file}, or unset it to load {spec.hf_id} from the HF hub)"
    )


def _read_local_rows(spec: TaskSpec, split: str, data_dir: str | Path | None) -> tuple[list[_Row], str]:
    """Rows of a local file plus its identity (size + sha256 of the bytes as stored)."""
    path = resolve_file(spec, split, data_dir)
    content = path.read_bytes()
    identity = f"file:{len(content)}:{hashlib.sha256(content).hexdigest()}"
    if path.name.endswith(".gz"):
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable gzip file ({err})") from None
    return _file_rows(spec, path, content), identity


def _load_hub(spec: TaskSpec, split: str) -> Any:
    hf_split = spec.hf_split(split)
    fix = ("set data.data_dir to local files ({} and {}, GLUE format)".format(spec.train_file, spec.dev_file)
           if spec.preset else "check data.dataset_name / data.dataset_config, or use local files with data.train_file")
    try:
        import datasets  # lazy: only online users need it
    except ImportError as err:
        raise DataError(f"loading {spec.hf_id} needs the `datasets` package ({err}); install it or {fix}") from None
    try:
        return datasets.load_dataset(spec.hf_path, spec.hf_name, split=hf_split)
    except Exception as err:  # network, auth and cache failures come in many types
        raise DataError(
            f"could not load {spec.hf_id} split {hf_split!r} from the HF hub (unreachable or not cached: "
            f"{type(err).__name__}: {err}); fix: {fix}"
        ) from err


def _read_hub_rows(spec: TaskSpec, split: str) -> tuple[list[_Row], str]:
    """Rows from HF ``datasets`` (needs the hub or its local cache)."""
    hf_split = spec.hf_split(split)
    rows = _load_hub(spec, split)
    text_columns, label_column = spec.hf_text_columns, str(spec.hf_label_column)
    names = getattr(rows, "column_names", None)
    if names is not None:
        for column in (*text_columns, label_column):
            if column not in names:
                raise DataError(f"{spec.hf_id}[{hf_split}]: missing column {column!r} (the dataset has {list(names)}; "
                                "fix: set data.text_columns / data.label_column to its columns)")
    out = []
    for i, row in enumerate(rows):
        where = f"{spec.hf_id}[{hf_split}] row {i}"
        try:
            out.append(_Row(where, tuple(row[c] for c in text_columns), row[label_column]))
        except KeyError as err:
            raise DataError(f"{where}: missing column {err} (expected {[*text_columns, label_column]})") from None
    if not out:
        raise DataError(f"{spec.hf_id} split {hf_split!r} is empty")
    return out, f"hf:{spec.hf_id}:{hf_split}"


def _read_rows(spec: TaskSpec, split: str, data_dir: str | Path | None) -> tuple[list[_Row], str]:
    if spec.reads_local(data_dir):
        return _read_local_rows(spec, split, data_dir)
    return _read_hub_rows(spec, split)


def _infer_label_names(spec: TaskSpec, data_dir: str | Path | None) -> tuple[tuple[str, ...], bool]:
    """The class names and whether the labels are their indices: a hub ClassLabel's names (indices), else
    the distinct training labels, sorted (as numbers when they all are integers)."""
    local = spec.reads_local(data_dir)
    if not local:  # a hub dataset's ClassLabel names its classes in index order
        features = getattr(_load_hub(spec, "train"), "features", None) or {}
        names = getattr(features.get(spec.hf_label_column), "names", None)
        if names:
            return tuple(str(n) for n in names), True
    rows, _ = _read_rows(spec, "train", data_dir)
    values = {_label_text(r.label) for r in rows}
    if "" in values:
        where = next(r.where for r in rows if not _label_text(r.label))
        raise DataError(f"{where}: missing label (fix: give every row a label)")
    numeric = all(v.lstrip("-").isdigit() for v in values)
    return tuple(sorted(values, key=int) if numeric else sorted(values)), False


def _carve_dev(examples: list[Example], share: float, split: str, where: str) -> list[Example]:
    """``split``'s part of a seeded (seed 0), stratified split of ``examples``: ``share`` of each class
    (at least one example of each class that has two) is dev, the rest train; both in file order."""
    by_label: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_label.setdefault(e.label, []).append(i)
    dev: set[int] = set()
    rng = random.Random(0)
    for label in sorted(by_label):
        members = by_label[label]
        take = min(len(members) - 1, max(1, round(share * len(members))))
        dev.update(rng.sample(members, take))
    if not dev:
        raise DataError(f"{where}: too few examples to carve a dev split from train (fix: set data.dev_file, or add rows)")
    return [e for i, e in enumerate(examples) if (i in dev) == (split == "dev")]


def _load_with_identity(task: str | TaskSpec, split: str, data_dir: str | Path | None) -> tuple[list[Example], str]:
    spec = get_task(task) if isinstance(task, str) else task
    _check_split(split)
    start = time.perf_counter()
    local = spec.reads_local(data_dir)
    carve = not spec.has_dev_source(local)
    rows, identity = _read_rows(spec, "train" if carve else split, data_dir)
    examples = [_make_example(spec, row) for row in rows]
    if split == "train" or carve:
        where = str(resolve_file(spec, "train", data_dir)) if local else f"{spec.hf_id}[{spec.hf_train_split}]"
        classes = sorted({e.label for e in examples})
        if len(classes) < 2:
            raise DataError(f"{where}: every training example has the label {spec.label_names[classes[0]]!r}; a classifier "
                            "needs at least two classes (fix: point data.label_column at the label column, or add rows)")
        if carve:
            examples = _carve_dev(examples, spec.dev_share, split, where)
    if not spec.preset:
        digest = hashlib.sha256(json.dumps(spec.key_fields(), sort_keys=True).encode()).hexdigest()[:16]
        identity = f"{identity}|task:{digest}" + (f"|{split} of train" if carve else "")
    counts = np.bincount([e.label for e in examples], minlength=spec.num_labels)
    logger.info(
        "data: %s/%s: %d examples (%s) in %.2fs", spec.name, split, len(examples),
        ", ".join(f"{name} {n}" for name, n in zip(spec.label_names, counts)), time.perf_counter() - start,
    )
    return examples, identity


def data_identity(spec: TaskSpec, split: str, data_dir: str | Path | None) -> str:
    """What identifies ``split``'s rows without parsing them: the file's size and sha256, or the hub split."""
    local = spec.reads_local(data_dir)
    if not spec.has_dev_source(local):
        split = "train"
    if not local:
        return f"hf:{spec.hf_id}:{spec.hf_split(split)}"
    content = resolve_file(spec, split, data_dir).read_bytes()
    return f"file:{len(content)}:{hashlib.sha256(content).hexdigest()}"


def load_examples(task: str | TaskSpec, split: Split, data_dir: str | Path | None) -> list[Example]:
    """All examples of ``split`` of ``task`` (a built-in task's name, or :func:`task_spec` of a config).

    A built-in task reads local files when ``data_dir`` is given, else HF ``datasets``; a user's task
    reads its files (relative to ``data_dir`` when set) or its hub dataset. For IMDB, ``"dev"`` is
    the official test split (``imdb_test.csv.gz`` / hub split ``test``): IMDB has no validation split.
    """
    return _load_with_identity(task, split, data_dir)[0]


# --------------------------------------------------------------------------------------------
# Tokenising and caching
# --------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest identifying ``tokenizer``'s behaviour, identical across processes.

    Hashes the backend tokenizer JSON (vocabulary, normaliser, special tokens) of a fast
    tokenizer, or the sorted vocabulary of a slow one. The backend's truncation/padding state is
    dropped first: encoding with ``truncation=True`` changes it without changing the tokenizer.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
    else:
        state = sorted(tokenizer.get_vocab().items())
    body = json.dumps(state, sort_keys=True, ensure_ascii=False).encode()
    parts = [
        type(tokenizer).__name__,
        str(getattr(tokenizer, "name_or_path", "")),
        str(len(tokenizer)),
        hashlib.sha256(body).hexdigest(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def encode_examples(
    examples: Sequence[Example], tokenizer: Any, max_length: int, fingerprint: str, num_labels: int
) -> EncodedSplit:
    """Tokenise ``examples`` (truncated to ``max_length``, unpadded) into a ragged split."""
    if tokenizer.pad_token_id is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has no pad token (fix: set tokenizer.pad_token)")
    is_pair = bool(examples) and examples[0].text_b is not None
    if any((e.text_b is not None) != is_pair for e in examples):
        raise DataError("cannot encode a mix of single-sentence and sentence-pair examples")
    start = time.perf_counter()
    ids: list[list[int]] = []
    types_: list[list[int]] = []
    for s in range(0, len(examples), _ENCODE_BATCH):
        chunk = examples[s:s + _ENCODE_BATCH]
        enc = tokenizer(
            [e.text_a for e in chunk],
            [e.text_b for e in chunk] if is_pair else None,
            truncation="longest_first" if is_pair else True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=is_pair,
        )
        ids.extend(enc["input_ids"])
        if is_pair:
            types_.extend(enc["token_type_ids"])
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)  # [n + 1]
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))  # [total_tokens]
    token_types = np.fromiter(itertools.chain.from_iterable(types_), dtype=np.int8, count=int(offsets[-1])) if is_pair else None
    split = EncodedSplit(
        input_ids=flat,
        offsets=offsets,
        labels=np.array([e.label for e in examples], dtype=np.int64),  # [n]
        token_type_ids=token_types,
        pad_token_id=int(tokenizer.pad_token_id),
        num_labels=num_labels,
        fingerprint=fingerprint,
    )
    logger.info(
        "data: tokenised %d examples (%d tokens, mean length %.1f) in %.2fs",
        len(examples), len(flat), float(lengths.mean()) if len(lengths) else 0.0, time.perf_counter() - start,
    )
    return split


def subset_indices(n: int, limit: int | None, seed: int) -> list[int] | None:
    """Sorted indices of a seeded random subset of ``limit`` of ``n`` items; None means all."""
    if limit is None or limit >= n:
        return None
    if limit <= 0:
        raise DataError(f"subset size must be positive, got {limit} (fix: set data.train_limit/dev_limit to >= 1 or null)")
    return sorted(random.Random(seed).sample(range(n), limit))


def _cache_path(cache_dir: str | Path, task: str, split: str, fingerprint: str) -> Path:
    return TOKENISED_SPLITS.entry(cache_dir, fingerprint, label=f"{task}-{split}", suffix=".npz")


def _load_cached(path: Path, fingerprint: str, labels: np.ndarray) -> EncodedSplit:
    """The cached split at ``path``; :class:`StaleEntry` when it is another key's or other labels'."""
    cached = EncodedSplit.load(path)
    if cached.fingerprint != fingerprint or not np.array_equal(cached.labels, labels):
        raise StaleEntry("it does not match its key or labels")
    return cached


def split_fingerprint(
    tokenizer_fp: str, task: str, split: str, max_length: int, limit: int | None, seed: int | None, source: str
) -> str:
    """The key of an encoded split; ``seed`` only matters (and only counts) when a subset is taken."""
    return TOKENISED_SPLITS.key({
        "tokenizer": tokenizer_fp, "task": task, "split": split,
        "max_length": max_length, "limit": limit, "seed": seed if limit is not None else None, "source": source,
    })


def load_split(
    data: DataConfig, split: Split, tokenizer: Any, cache_dir: str | Path, seed: int
) -> tuple[list[Example], EncodedSplit]:
    """Examples and their encoding for ``split`` of the task ``data`` names, aligned index by index.

    Applies the seeded subset ``data.train_limit`` / ``data.dev_limit`` (kept in file order) and
    caches the encoding under ``<cache_dir>/data/``; a later call with the same tokenizer, task,
    split, max length, subset and file content loads it instead of tokenising again.
    """
    spec = task_spec(data)
    _check_split(split)
    examples, source = _load_with_identity(spec, split, data.data_dir)
    limit = data.train_limit if split == "train" else data.dev_limit
    indices = subset_indices(len(examples), limit, seed)
    if indices is not None:
        examples = [examples[i] for i in indices]
        logger.info("data: %s/%s: seeded subset of %d examples (seed %d)", data.task, split, len(examples), seed)
    fingerprint = split_fingerprint(
        tokenizer_fingerprint(tokenizer), data.task, split, data.max_length,
        None if indices is None else len(indices), seed, source,
    )
    path = _cache_path(cache_dir, data.task, split, fingerprint)
    labels = np.array([e.label for e in examples], dtype=np.int64)
    cached = read_entry(path, lambda p: _load_cached(p, fingerprint, labels), what=f"data: {data.task}/{split}", log=logger)
    if cached is not None:
        logger.info("data: %s/%s: cache hit %s", data.task, split, path)
        return examples, cached
    logger.info("data: %s/%s: cache miss, tokenising to %s", data.task, split, path)
    encoded = encode_examples(examples, tokenizer, data.max_length, fingerprint, spec.num_labels)
    with atomic_file(path) as tmp:
        encoded.save(tmp)
    return examples, encoded

