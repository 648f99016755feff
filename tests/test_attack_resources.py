"""Offline attack resources: the NLTK layout rosearch writes (stopwords, WordNet + lexnames),
WordNet discovery, and the synonym-neighbour table — all in tmp dirs, without textattack."""

from __future__ import annotations

import gzip
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rosearch.attack.resources import (
    LEXNAMES,
    NLTK_ENGLISH_STOPWORDS,
    WORDNET_ENV,
    WORDNET_FILES,
    MissingResourceError,
    find_wordnet_dir,
    load_neighbors,
    prepare_textattack,
    provision_nltk_data,
    require_wordnet,
    wordnet_available,
)
from rosearch.config import AttackConfig


def fake_wordnet(path: Path) -> Path:
    """A dir with every file nltk's WordNet reader opens (content is irrelevant here)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in WORDNET_FILES:
        (path / name).write_text(f"fake {name}\n", encoding="utf-8")
    return path


def test_stopwords_are_nltk_english_list(tmp_path):
    root = provision_nltk_data(tmp_path / "nltk", wordnet_dir=None)
    words = (root / "corpora" / "stopwords" / "english").read_text(encoding="utf-8").split("\n")
    assert words[-1] == "" and len(words[:-1]) == 198 == len(set(NLTK_ENGLISH_STOPWORDS))
    assert {"the", "a", "not", "don't", "should've"} <= set(words)
    assert not (root / "corpora" / "wordnet").exists()


def test_wordnet_layout_is_copied_with_lexnames_and_idempotent(tmp_path):
    source = fake_wordnet(tmp_path / "wn")
    root = provision_nltk_data(tmp_path / "nltk", wordnet_dir=source)
    target = root / "corpora" / "wordnet"
    for name in WORDNET_FILES:
        file = target / name
        # nltk's path security refuses symlinks out of its root and multiply-linked files
        assert file.is_file() and not file.is_symlink() and file.stat().st_nlink == 1
        assert file.read_text(encoding="utf-8") == f"fake {name}\n"
    lexnames = (target / "lexnames").read_text(encoding="utf-8").splitlines()
    assert len(lexnames) == 45 == len(LEXNAMES)
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[3] == "03\tnoun.Tops\t1" and lexnames[44] == "44\tadj.ppl\t3"
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    provision_nltk_data(root, wordnet_dir=source)
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before  # nothing rewritten
    assert not [p for p in (root / "corpora").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_changed_wordnet_source_replaces_the_copy(tmp_path):
    root = provision_nltk_data(tmp_path / "nltk", wordnet_dir=fake_wordnet(tmp_path / "wn1"))
    other = fake_wordnet(tmp_path / "wn2")
    (other / "data.noun").write_text("a different, longer data.noun\n", encoding="utf-8")
    provision_nltk_data(root, wordnet_dir=other)
    assert (root / "corpora" / "wordnet" / "data.noun").read_text(encoding="utf-8") == "a different, longer data.noun\n"


def test_concurrent_provisioning_is_safe(tmp_path):
    source = fake_wordnet(tmp_path / "wn")
    root = tmp_path / "nltk"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: provision_nltk_data(root, wordnet_dir=source), range(8)))
    assert results == [root] * 8
    assert sorted(p.name for p in (root / "corpora" / "wordnet").iterdir()) == sorted([*WORDNET_FILES, "lexnames"])
    assert sorted(p.name for p in (root / "corpora").iterdir()) == ["stopwords", "wordnet"]


def test_invalid_wordnet_dir_for_provisioning_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingResourceError, match="WordNet 3.0 not found"):
        provision_nltk_data(tmp_path / "nltk", wordnet_dir=tmp_path / "empty")


def test_find_wordnet_dir_order_explicit_env_default(tmp_path, monkeypatch):
    explicit = fake_wordnet(tmp_path / "explicit")
    env = fake_wordnet(tmp_path / "env")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(WORDNET_ENV, str(env))
    assert find_wordnet_dir(str(explicit)) == explicit.resolve()
    assert find_wordnet_dir(None) == env.resolve()
    assert find_wordnet_dir(str(tmp_path / "empty")) is None  # a named dir is not replaced by another
    monkeypatch.setenv(WORDNET_ENV, str(tmp_path / "empty"))
    assert find_wordnet_dir(None) is None
    assert not wordnet_available()  # an explicitly named (env) dir must itself be valid


def test_require_wordnet_names_the_field_and_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingResourceError) as err:
        require_wordnet(str(tmp_path / "empty"))
    message = str(err.value)
    assert "attack.wordnet_dir" in message and WORDNET_ENV in message
    assert "apt-get install wordnet-base wordnet-sense-index" in message and str(tmp_path / "empty") in message
    require_wordnet(str(fake_wordnet(tmp_path / "wn")))  # a valid dir passes


def test_prepare_textattack_points_nltk_at_the_provisioned_root(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))  # restored after the test
    monkeypatch.setenv("NLTK_DATA", "/elsewhere")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = AttackConfig(nltk_data=str(tmp_path / "nltk"), wordnet_dir=str(fake_wordnet(tmp_path / "wn")))
    root = prepare_textattack(cfg, tmp_path / "cache")
    assert root == (tmp_path / "nltk").resolve()
    assert nltk.data.path[0] == str(root)
    assert os.environ["NLTK_DATA"].split(os.pathsep) == [str(root), "/elsewhere"]
    assert (root / "corpora" / "wordnet" / "lexnames").is_file()
    assert "HF_HUB_OFFLINE" not in os.environ  # online machines keep downloading as usual
    prepare_textattack(cfg, tmp_path / "cache")  # idempotent: no duplicate path entries
    assert nltk.data.path.count(str(root)) == 1 and os.environ["NLTK_DATA"].count(str(root)) == 1
    default = prepare_textattack(AttackConfig(wordnet_dir=str(tmp_path / "missing")), tmp_path / "cache")
    assert default == (tmp_path / "cache" / "nltk_data").resolve()
    assert (default / "corpora" / "stopwords" / "english").is_file()
    assert not (default / "corpora" / "wordnet").exists()  # no WordNet: stopwords only, no error


def test_load_neighbors_json_and_gz(tmp_path):
    table = {"Good": ["great", "fine"], "bad": ["awful"], "the": []}
    (tmp_path / "n.json").write_text(json.dumps(table), encoding="utf-8")
    (tmp_path / "n.json.gz").write_bytes(gzip.compress(json.dumps(table).encode()))
    for name in ("n.json", "n.json.gz"):
        loaded = load_neighbors(tmp_path / name)
        assert dict(loaded) == {"good": ("great", "fine"), "bad": ("awful",), "the": ()}
        with pytest.raises(TypeError):
            loaded["new"] = ("x",)  # read-only


@pytest.mark.parametrize("content, reason", [
    (None, "is not configured"),
    ("missing", "does not exist"),
    (b"{not json", "is unreadable"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"good": "great"}', "entry 'good' must be a list of strings"),
    (b'{"good": []}', "holds no neighbours"),
])
def test_load_neighbors_errors_name_the_field(tmp_path, content, reason):
    path = None if content is None else tmp_path / "table.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(MissingResourceError) as err:
        load_neighbors(path)
    assert reason in str(err.value) and "attack.neighbors_path" in str(err.value)
