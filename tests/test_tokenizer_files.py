"""A tokenizer shipped as bytes to workers behaves exactly like the one on disk."""

from __future__ import annotations

import pytest

from rosearch.files.tokenizer_files import TokenizerFilesError, materialize_tokenizer, read_tokenizer_files


def test_round_trip_gives_the_same_encodings(tiny_teacher_dir, tiny_tokenizer, tmp_path):
    files = read_tokenizer_files(tiny_teacher_dir)
    assert "vocab.txt" in files and all(isinstance(v, bytes) for v in files.values())
    first = materialize_tokenizer(files, root=tmp_path)
    again = materialize_tokenizer(files, root=tmp_path)  # the published folder is reused
    assert len(list((tmp_path / "rosearch-tokenizers").iterdir())) == 1
    text = "the movie was great and the plot was dull"
    assert first(text)["input_ids"] == again(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]


def test_a_folder_without_tokenizer_files_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerFilesError, match="holds no tokenizer files"):
        read_tokenizer_files(tmp_path)
