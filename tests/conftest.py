"""Shared fixtures: a tiny world built in the tests (vocabulary, tokenizer, GLUE-format data,
random-weight BERT teacher), so the unit suite needs no download and runs in seconds."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

POSITIVE = ["good", "great", "fine", "superb", "lovely", "brilliant", "moving", "fun", "charming", "witty"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "terrible", "weak", "flat", "clumsy", "tedious"]
NEUTRAL = ["the", "a", "movie", "film", "story", "plot", "was", "is", "very", "quite", "and", "acting",
           "cast", "it", "this", "script", "ending", "director", "really", "overall"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def shared_dir() -> Path | None:
    """The project's ../shared folder (real data), or None when absent."""
    env = os.environ.get("ROSEARCH_SHARED")
    path = Path(env) if env else REPO_ROOT.parent / "shared"
    return path if (path / "data").is_dir() else None


def make_sentence(rng: random.Random, label: int) -> str:
    """A toy review whose label is decided by its sentiment words (linearly separable)."""
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 9))]
    cue = POSITIVE if label == 1 else NEGATIVE
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
    return " ".join(words)


def write_sst2_dir(path: Path, n_train: int = 240, n_dev: int = 60, seed: int = 0) -> Path:
    """A GLUE-format SST-2 directory (``sentence\\tlabel`` with header, trailing space like GLUE)."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            rows.append(f"{make_sentence(rng, label)} \t{label}")
        (path / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(SPECIALS + NEUTRAL + POSITIVE + NEGATIVE) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(vocab_file):
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=64)


@pytest.fixture(scope="session")
def tiny_sst2_dir(tmp_path_factory) -> Path:
    return write_sst2_dir(tmp_path_factory.mktemp("data") / "SST-2")


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A random-weight 2-layer BERT classifier (hidden 32) saved with its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
    )
    model = BertForSequenceClassification(config)
    path = tmp_path_factory.mktemp("teacher") / "tiny-bert"
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real data under ../shared/data; tests that use it skip when it is absent."""
    path = shared_dir()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path / "data"


def encode_texts(tokenizer, first: list[str], labels: list[int], fingerprint: str,
                 second: list[str] | None = None):
    """A ragged EncodedSplit built straight from a tokenizer (for tests of layers below rosearch.data.tasks)."""
    import numpy as np

    from rosearch.data.batching import EncodedSplit

    enc = tokenizer(first, second, truncation=True, max_length=64, return_token_type_ids=second is not None)
    offsets = np.zeros(len(first) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in enc["input_ids"]], out=offsets[1:])
    return EncodedSplit(
        input_ids=np.concatenate([np.asarray(x, dtype=np.int32) for x in enc["input_ids"]]),
        offsets=offsets,
        labels=np.asarray(labels, dtype=np.int64),
        token_type_ids=None if second is None else np.concatenate([np.asarray(x, dtype=np.int8) for x in enc["token_type_ids"]]),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        fingerprint=fingerprint,
    )


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models are overhead-bound; one intra-op thread avoids contention on small shared CPUs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FaultTable:
    """The fault drill's table: one row per fault tried — case, exit code, what was lost.

    Tests add rows with :meth:`watch` (it fingerprints the watched paths before and after, so "lost"
    is measured, not asserted by hand); at the end of the session the table is printed (``-s``)
    and written to ``$ROSEARCH_FAULT_TABLE`` when that is set (bench/README.md quotes it).
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    @staticmethod
    def fingerprint(paths) -> dict[str, str]:
        import hashlib

        prints = {}
        for root in paths:
            root = Path(root)
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
            for path in files:
                if path.name == ".lock":  # the lock's holder record changes by design
                    continue
                prints[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return prints

    def watch(self, case: str, paths):
        return _Watch(self, case, list(paths))

    def add(self, case: str, rc, lost: str = "nothing") -> None:
        self.rows.append((case, str(rc), lost))

    def markdown(self) -> str:
        lines = ["| case | rc | lost |", "|---|---:|---|"]
        lines += [f"| {case} | {rc} | {lost} |" for case, rc, lost in self.rows]
        return "\n".join(lines) + "\n"


class _Watch:
    """``with table.watch(case, paths) as w: w.rc = ...``; then ``w.lost`` lists changed or removed files."""

    def __init__(self, table: FaultTable, case: str, paths: list) -> None:
        self.table, self.case, self.paths = table, case, paths
        self.rc = None
        self.lost: list[str] = []

    def __enter__(self) -> _Watch:
        self.before = self.table.fingerprint(self.paths)
        return self

    def __exit__(self, *exc_info) -> None:
        after = self.table.fingerprint(self.paths)
        self.lost = sorted(path for path, digest in self.before.items() if after.get(path) != digest)
        names = ", ".join(Path(p).name for p in self.lost)
        self.table.add(self.case, self.rc, f"**{names}**" if self.lost else "nothing")


@pytest.fixture(scope="session")
def fault_table():
    table = FaultTable()
    yield table
    if not table.rows:
        return
    text = table.markdown()
    print("\n\nfault drill\n" + text)
    target = os.environ.get("ROSEARCH_FAULT_TABLE")
    if target:
        Path(target).write_text(text)
