"""A model directory shipped as bytes and unpacked on a worker: same files, once per content, never half."""

from __future__ import annotations

import threading

import pytest

from rosearch.files.shipped_files import ShippedFilesError, files_digest, materialize_files, read_model_files


def test_round_trip_and_one_folder_per_content(tmp_path, tiny_teacher_dir):
    files = read_model_files(tiny_teacher_dir)
    assert "config.json" in files and any(name.endswith(".safetensors") or name.endswith(".bin") for name in files)
    folder = materialize_files(files, tmp_path / "worker")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert materialize_files(dict(files), tmp_path / "worker") == folder  # the same content: the same folder
    changed = dict(files, **{"config.json": files["config.json"] + b" "})
    assert files_digest(changed) != files_digest(files)
    assert materialize_files(changed, tmp_path / "worker") != folder


def test_a_leftover_partial_folder_is_never_used(tmp_path):
    files = {"config.json": b"{}", "weights.bin": b"\0" * 10}
    digest = files_digest(files)
    stale = tmp_path / "shipped" / f".{digest}.123-deadbeef.partial"
    stale.mkdir(parents=True)
    (stale / "config.json").write_bytes(b"{\"half\"")  # a crashed writer's leftovers
    folder = materialize_files(files, tmp_path)
    assert folder.name == digest and (folder / "config.json").read_bytes() == b"{}"


def test_concurrent_writers_publish_one_complete_folder(tmp_path):
    files = {f"f{i}.bin": bytes([i]) * 100_000 for i in range(8)}
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(materialize_files(files, tmp_path))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert {p.name: p.read_bytes() for p in results[0].iterdir()} == files
    assert [p.name for p in (tmp_path / "shipped").iterdir()] == [results[0].name]  # no partial left behind


@pytest.mark.parametrize("bad", [{}, {"../x": b""}, {"a/b": b""}])
def test_bad_file_sets_are_refused(tmp_path, bad):
    with pytest.raises(ShippedFilesError):
        materialize_files(bad, tmp_path)


def test_unshippable_directories_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ShippedFilesError, match="not a directory"):
        read_model_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShippedFilesError, match="holds no files"):
        read_model_files(tmp_path / "empty")
    (tmp_path / "nested" / "sub").mkdir(parents=True)
    with pytest.raises(ShippedFilesError, match="sub-folders"):
        read_model_files(tmp_path / "nested")
