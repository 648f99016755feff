"""rosearch.files.cache: content keys, entry paths, atomic files and directories, forgiving reads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rosearch.files import cache
from rosearch.files.cache import (
    CacheKind,
    StaleEntry,
    atomic_dir,
    atomic_file,
    check_key,
    content_key,
    read_entry,
    write_text_atomically,
)

KIND = CacheKind("things", 3)
DESCRIPTION = {"teacher": "abc", "limit": None, "steps": 20, "mask_prob": 0.15, "texts": ["é", "b"]}


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def load_stamped(key: str):
    def load(path: Path) -> dict:
        data = load_json(path)
        check_key(data.get("key"), key)
        return data
    return load


# --------------------------------------------------------------------------------------------
# keys and paths
# --------------------------------------------------------------------------------------------


def test_key_is_stable_and_order_free():
    key = KIND.key(DESCRIPTION)
    assert len(key) == 64 and key == KIND.key(dict(reversed(DESCRIPTION.items())))
    assert key == CacheKind("other_folder", 3).key(DESCRIPTION)  # the folder already separates kinds
    assert KIND.key({**DESCRIPTION, "texts": ("é", "b")}) == key  # tuples hash like lists
    blob = json.dumps({**DESCRIPTION, "format": 3}, sort_keys=True, ensure_ascii=False)
    assert key == hashlib.sha256(blob.encode()).hexdigest()  # the scheme the caches used before, kept


@pytest.mark.parametrize("field, value", [("teacher", "abd"), ("limit", 0), ("steps", 21), ("mask_prob", 0.1500001),
                                          ("texts", ["é", "c"]), ("texts", ["b", "é"])])
def test_key_follows_every_described_input(field, value):
    assert KIND.key({**DESCRIPTION, field: value}) != KIND.key(DESCRIPTION)
    assert KIND.key({**DESCRIPTION, "extra": None}) != KIND.key(DESCRIPTION)


def test_key_follows_the_format_version():
    assert CacheKind("things", 4).key(DESCRIPTION) != KIND.key(DESCRIPTION)
    assert content_key(3, DESCRIPTION) == KIND.key(DESCRIPTION)


def test_key_rejects_what_it_cannot_hash_stably():
    with pytest.raises(ValueError, match="format"):
        KIND.key({"format": 1})
    with pytest.raises(TypeError):
        KIND.key({"path": Path("x")})


def test_entry_path(tmp_path):
    key = KIND.key(DESCRIPTION)
    assert KIND.entry(tmp_path, key) == tmp_path / "things" / key[:24]
    assert KIND.entry(tmp_path, key, label="sst2-dev", suffix=".npz") == tmp_path / "things" / f"sst2-dev-{key[:24]}.npz"
    assert CacheKind("d", 1, name_chars=16).entry(str(tmp_path), key).name == key[:16]
    assert KIND.stamp(key) == {"format": 3, "key": key}


def test_every_cache_kind_has_its_own_folder():
    kinds = [value for value in vars(cache).values() if isinstance(value, CacheKind)]
    assert len(kinds) >= 5 and len({k.folder for k in kinds}) == len(kinds)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    key = KIND.key(DESCRIPTION)
    path = KIND.entry(tmp_path, key, suffix=".json")
    write_text_atomically(path, json.dumps({**KIND.stamp(key), "payload": [1, "é"]}, ensure_ascii=False))
    assert read_entry(path, load_stamped(key), what="test")["payload"] == [1, "é"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_missing_entry_is_a_quiet_miss(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        assert read_entry(tmp_path / "nothing.json", load_json, what="test") is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


@pytest.mark.parametrize("content", [b"", b'{"key": "abc", "pay', b"\xff\xfe not utf-8", b"[1, 2]"])
def test_corrupt_or_truncated_entry_is_a_logged_miss(tmp_path, caplog, content):
    path = tmp_path / "entry.json"
    path.write_bytes(content)
    log = logging.getLogger("rosearch.test_cache")
    with caplog.at_level(logging.INFO):
        assert read_entry(path, load_stamped("abc"), what="test", log=log) is None
    assert "unreadable" in caplog.text and caplog.records[-1].name == "rosearch.test_cache"


def test_entry_of_another_key_or_version_is_a_miss(tmp_path, caplog):
    key = KIND.key(DESCRIPTION)
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(CacheKind("things", 2).stamp(CacheKind("things", 2).key(DESCRIPTION))))
    with caplog.at_level(logging.INFO):
        assert read_entry(path, load_stamped(key), what="test") is None
    assert "stale" in caplog.text
    with pytest.raises(StaleEntry):
        check_key(None, key)


def test_a_directory_entry_without_its_files_is_a_miss(tmp_path):
    (tmp_path / "entry").mkdir()
    assert read_entry(tmp_path / "entry", lambda p: load_json(p / "meta.json"), what="test") is None


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def test_atomic_file_keeps_the_suffix_last_and_replaces(tmp_path):
    path = tmp_path / "sub" / "entry.npz"
    with atomic_file(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".") and tmp.suffix == ".npz"
        tmp.write_text("one")
    write_text_atomically(path, "two")
    assert path.read_text() == "two" and os.listdir(path.parent) == ["entry.npz"]


def test_interrupted_file_write_leaves_no_entry(tmp_path):
    path = tmp_path / "entry.json"
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text('{"key": "abc", "half')
        raise RuntimeError("crash mid-write")
    assert not path.exists() and os.listdir(tmp_path) == []
    write_text_atomically(path, '{"key": "abc"}')
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text('{"key": "new", "half')
        raise RuntimeError("crash mid-write")
    assert read_entry(path, load_stamped("abc"), what="test") == {"key": "abc"}  # the old entry survives whole


def test_killed_writer_leaves_no_readable_entry(tmp_path):
    """A process that dies inside the block (no cleanup runs) leaves only a hidden temp file."""
    path = tmp_path / "entry.json"
    script = ("import os, sys; from pathlib import Path; from rosearch.files.cache import atomic_file\n"
              "with atomic_file(Path(sys.argv[1])) as tmp:\n"
              "    tmp.write_text('{\"key\": \"abc\", \"half')\n"
              "    os._exit(3)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(cache.__file__).parent.parent)}
    done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, timeout=60)
    assert done.returncode == 3
    assert not path.exists() and all(name.startswith(".") for name in os.listdir(tmp_path))
    assert read_entry(path, load_stamped("abc"), what="test") is None


def test_interrupted_dir_write_leaves_no_entry(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert os.listdir(tmp_path) == []


def test_atomic_dir_replaces_an_old_entry_unless_kept(tmp_path):
    final = tmp_path / "entry"
    for content in ("old", "new"):
        with atomic_dir(final) as tmp:
            (tmp / "meta.json").write_text(content)
    assert (final / "meta.json").read_text() == "new" and os.listdir(tmp_path) == ["entry"]
    with atomic_dir(final, keep=lambda p: (p / "meta.json").read_text() == "new") as tmp:
        (tmp / "meta.json").write_text("newer")
    assert (final / "meta.json").read_text() == "new" and os.listdir(tmp_path) == ["entry"]


def test_concurrent_file_writers_end_with_one_valid_entry(tmp_path):
    path = tmp_path / "entry.json"
    start = threading.Barrier(8)

    def write(i: int) -> None:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps({"key": "abc", "writer": i, "payload": "x" * 10_000}))
            start.wait()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(8)))
    assert os.listdir(tmp_path) == ["entry.json"]
    assert read_entry(path, load_stamped("abc"), what="test")["writer"] in range(8)


# Writers that always replace need one attempt per other writer (3 is the limit); writers that keep a
# serving entry need at most two.
@pytest.mark.parametrize("keep, writers", [(None, 3), (lambda p: (p / "meta.json").is_file(), 8)])
def test_concurrent_dir_writers_end_with_one_valid_entry(tmp_path, keep, writers):
    final = tmp_path / "entry"
    start = threading.Barrier(writers)

    def write(i: int) -> None:
        with atomic_dir(final, keep=keep) as tmp:
            (tmp / "data.txt").write_text(str(i) * 100)
            (tmp / "meta.json").write_text(json.dumps({"writer": i}))
            start.wait()

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(write, range(writers)))
    assert os.listdir(tmp_path) == ["entry"] and sorted(os.listdir(final)) == ["data.txt", "meta.json"]
    writer = load_json(final / "meta.json")["writer"]
    assert (final / "data.txt").read_text() == str(writer) * 100  # the files of one writer, never a mix
