"""Task registry, local loading with file+line errors, tokenising, and the encoded-split cache."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rosearch.config import DataConfig
from rosearch.data.tasks import (
    TASKS,
    DataError,
    Example,
    encode_examples,
    get_task,
    load_examples,
    load_split,
    subset_indices,
    tokenizer_fingerprint,
)
from conftest import REPO_ROOT, write_sst2_dir

MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"


class CountingTokenizer:
    """Delegates to a real tokenizer and counts encode calls, so a bypassed cache shows."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_imdb(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows([["id", "rating", "label", "text"], *rows])
    path.write_bytes(gzip.compress(buf.getvalue().encode()))
    return path


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_label_order_matches_hf_glue():
    assert get_task("sst2").label_names == ("negative", "positive")
    assert get_task("mrpc").label_names == ("not_equivalent", "equivalent")
    assert get_task("rte").label_names == get_task("qnli").label_names == ("entailment", "not_entailment")
    assert get_task("imdb").label_names == ("neg", "pos")
    assert [n for n, t in TASKS.items() if t.is_pair] == ["mrpc", "rte", "qnli"]
    assert get_task("sst2").hf_split("dev") == "validation"
    assert get_task("imdb").file_name("dev") == "imdb_test.csv.gz"
    with pytest.raises(TypeError):
        TASKS["new"] = TASKS["sst2"]  # read-only registry


def test_unknown_task_and_split_are_named():
    with pytest.raises(DataError, match=r"unknown task 'sst3'.*sst2, mrpc, rte, qnli, imdb"):
        get_task("sst3")
    with pytest.raises(DataError, match=r"unknown split 'test'"):
        load_examples("sst2", "test", "/nonexistent")


# --------------------------------------------------------------------------------------------
# Loading each format
# --------------------------------------------------------------------------------------------


def test_sst2_strips_trailing_space_and_reads_labels(tmp_path):
    write(tmp_path / "train.tsv", ["sentence\tlabel", 'a "quoted" good movie \t1', "bad film \t0"])
    examples = load_examples("sst2", "train", tmp_path)
    assert examples == [Example('a "quoted" good movie', None, 1), Example("bad film", None, 0)]


def test_mrpc_with_bom_and_quotes(tmp_path):
    write(tmp_path / "dev.tsv", [MRPC_HEADER, '1\t11\t12\tHe said " yes " .\tHe agreed .', "0\t13\t14\tA b .\tC d ."])
    examples = load_examples("mrpc", "dev", tmp_path)
    assert examples == [Example('He said " yes " .', "He agreed .", 1), Example("A b .", "C d .", 0)]


@pytest.mark.parametrize("task,header", [
    ("rte", "index\tsentence1\tsentence2\tlabel"),
    ("qnli", "index\tquestion\tsentence\tlabel"),
])
def test_text_labels_map_to_hf_indices(tmp_path, task, header):
    write(tmp_path / "train.tsv", [header, "0\tWho ?\tHim .\tentailment", "1\tWhat ?\tThat .\tnot_entailment", "2\tX\tY\t1"])
    examples = load_examples(task, "train", tmp_path)
    assert [e.label for e in examples] == [0, 1, 1]
    assert examples[0] == Example("Who ?", "Him .", 0)


def test_imdb_csv_gz_with_commas_quotes_and_multiline(tmp_path):
    write_imdb(tmp_path / "imdb_test.csv.gz", [["0", "2", "0", 'Bad, "really" bad.<br />'], ["1", "9", "1", "Good\nfilm"]])
    examples = load_examples("imdb", "dev", tmp_path)
    assert examples == [Example('Bad, "really" bad.<br />', None, 0), Example("Good\nfilm", None, 1)]


def test_task_subdir_under_data_dir_is_found(tmp_path):
    write_sst2_dir(tmp_path / "SST-2", n_train=4, n_dev=2)
    assert len(load_examples("sst2", "dev", tmp_path)) == 2


# --------------------------------------------------------------------------------------------
# Malformed input: file name and 1-based line number in every message
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task,lines,line,what", [
    ("sst2", ["sentence\tlabel", "good \t1", "fine \t"], 3, "missing label"),
    ("sst2", ["sentence\tlabel", "good \t1", "bad \t0", "odd \t2"], 4, "out of range"),
    ("sst2", ["sentence\tlabel", "good \t1", "odd \tpositivish"], 3, "unknown label 'positivish'"),
    ("sst2", ["sentence\tlabel", "   \t1"], 2, "empty text"),
    ("sst2", ["sentence\tlabel", "good \t1", "a\tb\t1"], 3, "wrong column count: 3 fields"),
    ("sst2", ["sentence\tlabel", "good \t1", "", "bad \t0"], 3, "blank line"),
    ("sst2", ["text\tlabel", "good \t1"], 1, "missing header column 'sentence'"),
    ("rte", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\ta\tb\tcontradiction"], 3, "unknown label 'contradiction'"),
    ("qnli", ["index\tquestion\tsentence\tlabel", "0\tq\t\tentailment"], 2, "empty text in column 'sentence'"),
    ("mrpc", [MRPC_HEADER, "1\t1\t2\ta\tb", "1\t1\t2\ta"], 3, "wrong column count: 4 fields"),
])
def test_malformed_tsv_rows_name_file_and_line(tmp_path, task, lines, line, what):
    write(tmp_path / "train.tsv", lines)
    with pytest.raises(DataError) as info:
        load_examples(task, "train", tmp_path)
    message = str(info.value)
    assert f"train.tsv line {line}:" in message
    assert what in message


def test_malformed_imdb_row_names_file_and_line(tmp_path):
    # Row 2 spans lines 3-4; the bad row spans lines 5-6 and is reported where it starts.
    rows = [["0", "2", "0", "ok"], ["1", "9", "1", "two\nlines"], ["2", "9", "7", "bad\nlabel"]]
    write_imdb(tmp_path / "imdb_train.csv.gz", rows)
    with pytest.raises(DataError, match=r"imdb_train\.csv\.gz line 5: label 7 is out of range"):
        load_examples("imdb", "train", tmp_path)


def test_invalid_utf8_names_line(tmp_path):
    (tmp_path / "dev.tsv").write_bytes(b"sentence\tlabel\ngood \t1\nbad \xff\t0\n")
    with pytest.raises(DataError, match=r"dev\.tsv line 3: not valid UTF-8"):
        load_examples("sst2", "dev", tmp_path)


def test_header_only_file_is_an_error(tmp_path):
    write(tmp_path / "dev.tsv", ["sentence\tlabel"])
    with pytest.raises(DataError, match=r"dev\.tsv: no data rows"):
        load_examples("sst2", "dev", tmp_path)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match=r"missing file .*train\.tsv.*set data\.data_dir to a directory holding train\.tsv and dev\.tsv"):
        load_examples("qnli", "train", tmp_path)


# --------------------------------------------------------------------------------------------
# HF datasets path (a stand-in `datasets` module: nothing can be downloaded here)
# --------------------------------------------------------------------------------------------


def test_hub_rows_are_converted_and_failures_wrapped(monkeypatch):
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        if path == "glue":
            return [{"sentence1": " A . ", "sentence2": "B .", "label": 1, "idx": 0}]
        raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert load_examples("mrpc", "dev", None) == [Example("A .", "B .", 1)]
    assert calls == [("glue", "mrpc", "validation")]
    with pytest.raises(DataError, match=r"stanfordnlp/imdb.*HF hub.*no route to host.*set data\.data_dir"):
        load_examples("imdb", "train", None)


# --------------------------------------------------------------------------------------------
# Tokenising and caching
# --------------------------------------------------------------------------------------------


def test_tokenizer_fingerprint_is_stable_across_processes_and_encoding(tiny_tokenizer, vocab_file):
    before = tokenizer_fingerprint(tiny_tokenizer)
    tiny_tokenizer(["good movie"], truncation=True, max_length=3)  # leaves truncation state in the backend
    assert tokenizer_fingerprint(tiny_tokenizer) == before
    code = (
        "import sys; from transformers import BertTokenizerFast; from rosearch.data.tasks import tokenizer_fingerprint; "
        "print(tokenizer_fingerprint(BertTokenizerFast(vocab_file=sys.argv[1], do_lower_case=True, model_max_length=64)))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(vocab_file)], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO_ROOT)})
    assert out.stdout.strip() == before


def test_encode_single_and_pair(tiny_tokenizer):
    single = encode_examples([Example("good movie", None, 1), Example("bad", None, 0)], tiny_tokenizer, 16, "fp", 2)
    assert single.token_type_ids is None
    assert single.input_ids.dtype == np.int32 and single.offsets.dtype == np.int64 and single.labels.dtype == np.int64
    assert single.lengths.tolist() == [4, 3]  # [CLS] good movie [SEP] / [CLS] bad [SEP]
    assert single.pad_token_id == tiny_tokenizer.pad_token_id
    long_pair = Example(" ".join(["the"] * 20), " ".join(["movie"] * 20), 0)
    pair = encode_examples([Example("good", "bad film", 1), long_pair], tiny_tokenizer, 10, "fp", 2)
    assert pair.token_type_ids is not None and pair.token_type_ids.dtype == np.int8
    assert pair.token_type_ids[: pair.offsets[1]].tolist() == [0, 0, 0, 1, 1, 1]
    assert pair.lengths.tolist() == [6, 10]  # truncated longest-first to max_length
    second = pair.token_type_ids[pair.offsets[1]:]
    assert second.tolist().count(0) == 5 and second.tolist().count(1) == 5  # both sides cut evenly


def test_load_split_caches_and_second_call_does_not_tokenise(tiny_tokenizer, tiny_sst2_dir, tmp_path, caplog):
    data = DataConfig(task="sst2", data_dir=str(tiny_sst2_dir), max_length=32)
    tok = CountingTokenizer(tiny_tokenizer)
    examples, first = load_split(data, "train", tok, tmp_path, seed=0)
    assert tok.calls > 0 and len(examples) == len(first) == 240
    files = list((tmp_path / "data").glob("sst2-train-*.npz"))
    assert [f.name for f in files] == [f"sst2-train-{first.fingerprint[:16]}.npz"]
    calls = tok.calls
    with caplog.at_level(logging.INFO, logger="rosearch.data.tasks"):
        examples2, second = load_split(data, "train", tok, tmp_path, seed=0)
    assert tok.calls == calls  # served from the cache
    assert "cache hit" in caplog.text
    assert examples2 == examples
    for name in ("input_ids", "offsets", "labels"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.fingerprint == first.fingerprint
    assert list((tmp_path / "data").iterdir()) == files  # no temporary files left behind


def test_corrupt_cache_is_recomputed_with_warning(tiny_tokenizer, tiny_sst2_dir, tmp_path, caplog):
    data = DataConfig(task="sst2", data_dir=str(tiny_sst2_dir), max_length=32)
    tok = CountingTokenizer(tiny_tokenizer)
    _, first = load_split(data, "dev", tok, tmp_path, seed=0)
    (cache_file,) = (tmp_path / "data").glob("*.npz")
    cache_file.write_bytes(b"not a zip file")
    calls = tok.calls
    with caplog.at_level(logging.WARNING, logger="rosearch.data.tasks"):
        _, again = load_split(data, "dev", tok, tmp_path, seed=0)
    assert tok.calls > calls
    assert "unreadable" in caplog.text
    np.testing.assert_array_equal(again.input_ids, first.input_ids)
    recomputed = tok.calls
    _, third = load_split(data, "dev", tok, tmp_path, seed=0)  # the rewritten file is valid again
    assert tok.calls == recomputed and third.fingerprint == first.fingerprint


def test_subset_is_seeded_stable_and_aligned(tiny_tokenizer, tiny_sst2_dir, tmp_path):
    data = DataConfig(task="sst2", data_dir=str(tiny_sst2_dir), max_length=32, train_limit=50)
    everything = load_examples("sst2", "train", tiny_sst2_dir)
    ex_a, enc_a = load_split(data, "train", tiny_tokenizer, tmp_path, seed=1)
    ex_b, _ = load_split(data, "train", tiny_tokenizer, tmp_path / "other", seed=1)
    ex_c, enc_c = load_split(data, "train", tiny_tokenizer, tmp_path, seed=2)
    assert len(ex_a) == len(enc_a) == 50
    assert ex_a == ex_b and ex_a != ex_c and enc_a.fingerprint != enc_c.fingerprint
    positions = [everything.index(e) for e in ex_a]
    assert positions == sorted(positions)  # file order kept
    for i, example in enumerate(ex_a):  # the encoding of row i is the text of row i
        ids = enc_a.input_ids[enc_a.offsets[i]:enc_a.offsets[i + 1]]
        assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == example.text_a
        assert enc_a.labels[i] == example.label
    assert subset_indices(10, None, 0) is None and subset_indices(10, 10, 0) is None
    assert subset_indices(10, 3, 7) == subset_indices(10, 3, 7)


def test_pair_task_split_has_token_types(tiny_tokenizer, tmp_path):
    write(tmp_path / "rte" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tgood movie\tfine film\tentailment",
                                          "1\tbad plot\tgreat cast\tnot_entailment"])
    examples, enc = load_split(DataConfig(task="rte", data_dir=str(tmp_path / "rte")), "dev", tiny_tokenizer, tmp_path, 0)
    assert enc.token_type_ids is not None and set(enc.token_type_ids.tolist()) == {0, 1}
    assert enc.labels.tolist() == [0, 1] and examples[1].text_b == "great cast"


def test_fingerprint_follows_max_length_and_file_content(tiny_tokenizer, tmp_path):
    data_dir = write_sst2_dir(tmp_path / "SST-2", n_train=8, n_dev=6)
    data = DataConfig(task="sst2", data_dir=str(data_dir), max_length=32)
    cache = tmp_path / "cache"
    fp = load_split(data, "dev", tiny_tokenizer, cache, 0)[1].fingerprint
    assert load_split(data, "dev", tiny_tokenizer, cache, 5)[1].fingerprint == fp  # seed is moot without a subset
    short = load_split(DataConfig(task="sst2", data_dir=str(data_dir), max_length=4), "dev", tiny_tokenizer, cache, 0)[1]
    assert short.fingerprint != fp and short.lengths.max() == 4
    dev = data_dir / "dev.tsv"
    dev.write_text(dev.read_text().replace("\t0\n", "\t1\n", 1), encoding="utf-8")  # one label flipped, same size
    changed = load_split(data, "dev", tiny_tokenizer, cache, 0)[1]
    assert changed.fingerprint != fp
    assert len(list((cache / "data").glob("sst2-dev-*.npz"))) == 3


# --------------------------------------------------------------------------------------------
# The real shared data
# --------------------------------------------------------------------------------------------


def test_real_shared_data_counts(shared_data):
    sst2_dev = load_examples("sst2", "dev", shared_data / "glue" / "SST-2")
    assert len(sst2_dev) == 872 and sum(e.label for e in sst2_dev) == 444
    assert not any(e.text_a.endswith(" ") for e in sst2_dev)
    mrpc_train = load_examples("mrpc", "train", shared_data / "glue")
    assert len(mrpc_train) == 3668 and sum(e.label for e in mrpc_train) == 2474
    rte_dev = load_examples("rte", "dev", shared_data / "glue" / "RTE")
    assert len(rte_dev) == 277 and sum(e.label == 0 for e in rte_dev) == 146  # entailment = label 0
    imdb_test = load_examples("imdb", "dev", shared_data / "imdb")
    assert len(imdb_test) == 25000 and sum(e.label for e in imdb_test) == 12500
