"""Tasks, their examples, and their tokenised splits — loaded, validated and tokenised once.

A task (:data:`TASKS`) says where its text lives: GLUE-format TSV files or the IMDB CSV when
``data.data_dir`` is set (offline machines), HF ``datasets`` otherwise. Malformed input is an
error naming the file and line, never a silently dropped row, because a quietly shrunken dev set
makes every accuracy in a search wrong. Tokenisation happens once per (tokenizer, task, split,
max length, subset, file content) and is cached on disk as an :class:`EncodedSplit`.
"""

from __future__ import annotations

import csv
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

from rosearch.batching import EncodedSplit
from rosearch.cache import TOKENISED_SPLITS, StaleEntry, atomic_file, read_entry
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
    """Everything needed to read one task, from local files or from the HF hub.

    ``label_names`` are in HF ``datasets`` index order, so label ids agree between the two
    sources. Local label fields may hold either the index (``0``/``1``) or the name
    (``entailment``), as GLUE's RTE/QNLI TSVs use names and other exports use indices.
    IMDB has no dev split, so its ``"dev"`` is the official test split (``imdb_test.csv.gz``,
    hub split ``test``): report IMDB dev numbers as test numbers.
    """

    name: str
    num_labels: int
    label_names: tuple[str, ...]
    is_pair: bool
    file_format: Literal["tsv", "csv.gz"]
    train_file: str
    dev_file: str
    text_columns: tuple[str, ...]  # header names of text_a (and text_b for pair tasks)
    label_column: str
    subdir: str  # conventional folder name, also tried under data.data_dir (e.g. "SST-2")
    hf_path: str
    hf_name: str | None
    hf_train_split: str
    hf_dev_split: str
    hf_text_columns: tuple[str, ...]
    hf_label_column: str = "label"

    def file_name(self, split: str) -> str:
        return self.train_file if _check_split(split) == "train" else self.dev_file

    def hf_split(self, split: str) -> str:
        return self.hf_train_split if _check_split(split) == "train" else self.hf_dev_split

    @property
    def hf_id(self) -> str:
        return self.hf_path if self.hf_name is None else f"{self.hf_path}/{self.hf_name}"


def _glue(name: str, subdir: str, labels: tuple[str, ...], text_columns: tuple[str, ...], label_column: str,
          hf_text_columns: tuple[str, ...]) -> TaskSpec:
    return TaskSpec(
        name=name, num_labels=len(labels), label_names=labels, is_pair=len(text_columns) == 2,
        file_format="tsv", train_file="train.tsv", dev_file="dev.tsv",
        text_columns=text_columns, label_column=label_column, subdir=subdir,
        hf_path="glue", hf_name=name, hf_train_split="train", hf_dev_split="validation",
        hf_text_columns=hf_text_columns,
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
        name="imdb", num_labels=2, label_names=("neg", "pos"), is_pair=False, file_format="csv.gz",
        train_file="imdb_train.csv.gz", dev_file="imdb_test.csv.gz", text_columns=("text",),
        label_column="label", subdir="imdb", hf_path="stanfordnlp/imdb", hf_name=None,
        hf_train_split="train", hf_dev_split="test", hf_text_columns=("text",),
    ),
})


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    return split


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``name``; unknown names list the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown task {name!r} (known: {', '.join(TASKS)}; fix: set data.task to one of them)") from None


# --------------------------------------------------------------------------------------------
# Reading examples
# --------------------------------------------------------------------------------------------


def _parse_label(spec: TaskSpec, raw: str | int, where: str) -> int:
    """Label index from an index (``"1"``, ``1``) or a label name (``"entailment"``)."""
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise DataError(f"{where}: missing label (fix: give every row a label)")
        if text in spec.label_names:
            return spec.label_names.index(text)
        try:
            value = int(text)
        except ValueError:
            raise DataError(
                f"{where}: unknown label {text!r} for task {spec.name} "
                f"(expected one of {', '.join(spec.label_names)} or an index 0..{spec.num_labels - 1})"
            ) from None
    else:
        value = int(raw)
    if not 0 <= value < spec.num_labels:
        raise DataError(
            f"{where}: label {value} is out of range for task {spec.name} (expected 0..{spec.num_labels - 1}; "
            "unlabelled test splits cannot be used for training or evaluation)"
        )
    return value


def _make_example(spec: TaskSpec, texts: Sequence[Any], raw_label: str | int, where: str) -> Example:
    stripped = []
    for column, text in zip(spec.text_columns, texts):
        value = "" if text is None else str(text).strip()
        if not value:
            raise DataError(f"{where}: empty text in column {column!r}")
        stripped.append(value)
    label = _parse_label(spec, raw_label, where)
    return Example(text_a=stripped[0], text_b=stripped[1] if spec.is_pair else None, label=label)


def _decode(path: Path, content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = content[: err.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not valid UTF-8 ({err.reason}); the files must be UTF-8 encoded") from None


def _parse_rows(spec: TaskSpec, path: Path, text: str) -> list[Example]:
    """Examples from decoded CSV/TSV ``text`` whose first line is a header."""
    if spec.file_format == "tsv":
        # GLUE TSVs hold literal quote characters: QUOTE_NONE keeps them as text.
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} line 1: the file is empty (expected a header line)")
        header = [name.strip() for name in header]
        columns = []
        for name in (*spec.text_columns, spec.label_column):
            if name not in header:
                raise DataError(
                    f"{path} line 1: missing header column {name!r} for task {spec.name} "
                    f"(header has {header}; expected columns {[*spec.text_columns, spec.label_column]})"
                )
            columns.append(header.index(name))
        *text_idx, label_idx = columns
        examples = []
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num  # a quoted field may span lines
            where = f"{path} line {start}"
            if len(row) != len(header):
                raise DataError(
                    f"{where}: wrong column count: {len(row)} fields, the header has {len(header)}"
                    + (" (blank line)" if not row else "")
                )
            examples.append(_make_example(spec, [row[i] for i in text_idx], row[label_idx], where))
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: unreadable row ({err})") from None
    if not examples:
        raise DataError(f"{path}: no data rows after the header")
    return examples


def resolve_file(spec: TaskSpec, split: str, data_dir: str | Path) -> Path:
    """The local file of ``split``: in ``data_dir`` itself, or in its ``<spec.subdir>`` folder."""
    name = spec.file_name(split)
    root = Path(data_dir).expanduser()
    for candidate in (root / name, root / spec.subdir / name):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"missing file {root / name} for the {split} split of task {spec.name} (fix: set data.data_dir to a "
        f"directory holding {spec.train_file} and {spec.dev_file}, or unset it to load {spec.hf_id} from the HF hub)"
    )


def _read_local(spec: TaskSpec, split: str, data_dir: str | Path) -> tuple[list[Example], str]:
    """Examples of a local file plus its identity (size + sha256 of the bytes as stored)."""
    path = resolve_file(spec, split, data_dir)
    content = path.read_bytes()
    identity = f"file:{len(content)}:{hashlib.sha256(content).hexdigest()}"
    if spec.file_format == "csv.gz":
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable gzip file ({err})") from None
    examples = _parse_rows(spec, path, _decode(path, content))
    return examples, identity


def _read_hub(spec: TaskSpec, split: str) -> tuple[list[Example], str]:
    """Examples from HF ``datasets`` (needs the hub or its local cache)."""
    hf_split = spec.hf_split(split)
    fix = f"set data.data_dir to local files ({spec.train_file} and {spec.dev_file}, GLUE format)"
    try:
        import datasets  # lazy: only online users need it
    except ImportError as err:
        raise DataError(f"loading {spec.hf_id} needs the `datasets` package ({err}); install it or {fix}") from None
    try:
        rows = datasets.load_dataset(spec.hf_path, spec.hf_name, split=hf_split)
    except Exception as err:  # network, auth and cache failures come in many types
        raise DataError(
            f"could not load {spec.hf_id} split {hf_split!r} from the HF hub (unreachable or not cached: "
            f"{type(err).__name__}: {err}); fix: {fix}"
        ) from err
    examples = []
    for i, row in enumerate(rows):
        where = f"{spec.hf_id}[{hf_split}] row {i}"
        try:
            texts = [row[c] for c in spec.hf_text_columns]
            raw_label = row[spec.hf_label_column]
        except KeyError as err:
            raise DataError(f"{where}: missing column {err} (expected {[*spec.hf_text_columns, spec.hf_label_column]})") from None
        examples.append(_make_example(spec, texts, raw_label, where))
    if not examples:
        raise DataError(f"{spec.hf_id} split {hf_split!r} is empty")
    return examples, f"hf:{spec.hf_id}:{hf_split}"


def _load_with_identity(task: str, split: str, data_dir: str | Path | None) -> tuple[list[Example], str]:
    spec = get_task(task)
    _check_split(split)
    start = time.perf_counter()
    if data_dir is not None:
        examples, identity = _read_local(spec, split, data_dir)
    else:
        examples, identity = _read_hub(spec, split)
    counts = np.bincount([e.label for e in examples], minlength=spec.num_labels)
    logger.info(
        "data: %s/%s: %d examples (%s) in %.2fs", task, split, len(examples),
        ", ".join(f"{name} {n}" for name, n in zip(spec.label_names, counts)), time.perf_counter() - start,
    )
    return examples, identity


def load_examples(task: str, split: Split, data_dir: str | Path | None) -> list[Example]:
    """All examples of ``split``: local files when ``data_dir`` is given, else HF ``datasets``.

    For IMDB, ``"dev"`` is the official test split (``imdb_test.csv.gz`` / hub split ``test``):
    IMDB has no separate validation split.
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
    """Examples and their encoding for ``split`` of ``data.task``, aligned index by index.

    Applies the seeded subset ``data.train_limit`` / ``data.dev_limit`` (kept in file order) and
    caches the encoding under ``<cache_dir>/data/``; a later call with the same tokenizer, task,
    split, max length, subset and file content loads it instead of tokenising again.
    """
    spec = get_task(data.task)
    _check_split(split)
    examples, source = _load_with_identity(data.task, split, data.data_dir)
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

