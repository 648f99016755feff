"""A user's own classification data: files of any supported format with their own column names and
any number of classes, validated before any work, through a search, export and predict; and the
built-in tasks as presets of the same mechanism (same examples as a user's task over the same rows)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from rosearch.cli import main
from rosearch.config import ConfigError, DataConfig, config_from_dict
from rosearch.data.tasks import DataError, Example, TASKS, get_task, load_examples, task_spec
from rosearch.prepare.preflight import check_data_files
from conftest import NEGATIVE, NEUTRAL, POSITIVE

CLASSES = ("praise", "complaint", "question")
QUESTION = ["why", "how", "when", "where", "what"]


def ticket(rng: random.Random, label: str) -> str:
    """A toy support ticket whose class is decided by its cue words (3 linearly separable classes)."""
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 8))]
    cue = {"praise": POSITIVE, "complaint": NEGATIVE, "question": ["really", "very"]}[label]
    for _ in range(2):
        words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
    return " ".join(words)


def write_tickets(path: Path, n: int, seed: int) -> Path:
    """A CSV with non-GLUE columns (ticket_id, body, category) and 3 classes named by text."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ticket_id", "body", "category"])
        for i in range(n):
            label = CLASSES[i % 3]
            writer.writerow([f"T{i}", ticket(rng, label), label])
    return path


def write_pairs(path: Path, n: int, seed: int) -> Path:
    """JSON lines of a pair task (claim, reply) with 3 classes: the reply agrees, disagrees or asks."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            label = ("agree", "disagree", "unrelated")[i % 3]
            reply = {"agree": POSITIVE, "disagree": NEGATIVE, "unrelated": ["really"]}[label]
            f.write(json.dumps({"claim": ticket(rng, "praise"), "reply": f"{rng.choice(NEUTRAL)} {rng.choice(reply)}",
                                "verdict": label}) + "\n")
    return path


def own(**fields) -> DataConfig:
    return DataConfig(**{"task": "tickets", "text_columns": ("body",), "label_column": "category", **fields})


# --------------------------------------------------------------------------------------------
# Reading: formats, label names, the dev split
# --------------------------------------------------------------------------------------------


def test_csv_with_own_columns_and_three_classes(tmp_path):
    train = write_tickets(tmp_path / "train.csv", 30, seed=0)
    spec = task_spec(own(train_file=str(train)))
    assert spec.label_names == ("complaint", "praise", "question")  # read off the labels, sorted
    assert spec.num_labels == 3 and not spec.is_pair and not spec.preset
    train_examples = load_examples(spec, "train", None)
    dev_examples = load_examples(spec, "dev", None)
    # no dev file: a seeded, stratified 10% of each class is dev, the rest train, disjoint, in file order
    assert len(train_examples) + len(dev_examples) == 30
    assert sorted(e.label for e in dev_examples) == [0, 1, 2]
    assert not {e.text_a for e in dev_examples} & {e.text_a for e in train_examples}
    assert load_examples(spec, "dev", None) == dev_examples  # the same split every time


def test_declared_label_names_order_the_classes_and_accept_indices(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"review": "a good film", "stars": "high"}, {"review": "a bad film", "stars": 0},
        {"review": "it is a film", "stars": "mid"}]) + "\n")
    spec = task_spec(DataConfig(task="reviews", train_file=str(path), dev_file=str(path), text_columns=("review",),
                                label_column="stars", label_names=("low", "mid", "high")))
    assert [e.label for e in load_examples(spec, "train", None)] == [2, 0, 1]


@pytest.mark.parametrize("suffix", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_format_reads_the_same_examples(tmp_path, suffix):
    import pandas

    rows = [{"id": i, "body": text, "category": label} for i, (text, label) in enumerate(
        [("good , \"quoted\" film", "praise"), ("bad\tfilm", "complaint"), ("why , really", "question")] * 2)]
    frame = pandas.DataFrame(rows)
    path = tmp_path / f"train.{suffix}"
    {"csv": lambda: frame.to_csv(path, index=False), "tsv": lambda: frame.to_csv(path, sep="\t", index=False),
     "json": lambda: frame.to_json(path, orient="records"), "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "parquet": lambda: frame.to_parquet(path)}[suffix]()
    spec = task_spec(own(train_file=str(path), dev_file=str(path), label_names=CLASSES))
    assert load_examples(spec, "train", None) == [Example(r["body"].strip(), None, CLASSES.index(r["category"])) for r in rows]


def test_relative_files_resolve_under_data_dir(tmp_path):
    write_tickets(tmp_path / "data" / "t.csv", 12, seed=1)
    spec = task_spec(own(train_file="t.csv", data_dir=str(tmp_path / "data")))
    assert len(load_examples(spec, "train", str(tmp_path / "data"))) > 0


# --------------------------------------------------------------------------------------------
# Bad data: a clear error before any work
# --------------------------------------------------------------------------------------------


def _check(tmp_path, data: DataConfig) -> str:
    config = config_from_dict({"data": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(data).items()}})
    with pytest.raises(DataError) as info:
        check_data_files(config.data)
    return str(info.value)


def test_missing_column_lists_the_columns_that_exist(tmp_path):
    train = write_tickets(tmp_path / "train.csv", 9, seed=0)
    message = _check(tmp_path, own(train_file=str(train), text_columns=("text",)))
    assert "missing column 'text'" in message and "['ticket_id', 'body', 'category']" in message
    assert "data.text_columns" in message


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "train.csv").write_text("")
    assert "the file is empty" in _check(tmp_path, own(train_file=str(tmp_path / "train.csv"), label_names=CLASSES))


def test_label_outside_the_declared_names_is_refused(tmp_path):
    train = write_tickets(tmp_path / "train.csv", 9, seed=0)
    message = _check(tmp_path, own(train_file=str(train), label_names=("praise", "complaint")))
    assert "line 4: unknown label 'question'" in message and "data.label_names" in message


def test_dev_label_unseen_in_train_is_refused(tmp_path):
    train = write_tickets(tmp_path / "train.csv", 9, seed=0)
    dev = tmp_path / "dev.csv"
    dev.write_text("ticket_id,body,category\nX,a film,refund\n")
    message = _check(tmp_path, own(train_file=str(train), dev_file=str(dev)))
    assert "dev.csv line 2: label 'refund' does not occur in the training labels" in message


def test_single_class_is_refused(tmp_path):
    (tmp_path / "train.csv").write_text("body,category\na good film,praise\na fine film,praise\n")
    message = _check(tmp_path, own(train_file=str(tmp_path / "train.csv")))
    assert "every training example has the label 'praise'" in message and "at least two classes" in message


def test_text_that_is_not_a_string_is_refused(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"body": "a good film", "category": "praise"}\n{"body": 42, "category": "complaint"}\n')
    message = _check(tmp_path, own(train_file=str(path)))
    assert "line 2: the text in column 'body' is a int ('42'), not a string" in message


def test_config_refuses_inconsistent_own_data_fields():
    with pytest.raises(ConfigError, match=r"data\.task.*'sst2' is a built-in task"):
        config_from_dict({"data": {"train_file": "x.csv", "text_columns": ["body"]}})
    with pytest.raises(ConfigError, match=r"data\.text_columns.*one text column \(or two"):
        config_from_dict({"data": {"task": "t", "train_file": "x.csv", "text_columns": ["a", "b", "c"]}})
    with pytest.raises(ConfigError, match=r"data\.label_names.*at least two classes"):
        config_from_dict({"data": {"task": "t", "train_file": "x.csv", "text_columns": ["a"], "label_names": ["x"]}})
    with pytest.raises(ConfigError, match=r"data\.label_column.*only read for your own data"):
        config_from_dict({"data": {"task": "sst2", "label_column": "y"}})
    with pytest.raises(ConfigError, match=r"data\.dataset_name.*both set"):
        config_from_dict({"data": {"task": "t", "train_file": "x.csv", "dataset_name": "ag_news", "text_columns": ["a"]}})


# --------------------------------------------------------------------------------------------
# The built-in tasks are presets of the same mechanism
# --------------------------------------------------------------------------------------------


def test_builtin_tasks_are_presets():
    assert tuple(TASKS) == ("sst2", "mrpc", "rte", "qnli", "imdb")
    assert all(spec.preset and spec.labels_declared for spec in TASKS.values())
    assert task_spec(DataConfig(task="rte")) is get_task("rte")


def test_reshaped_real_rows_load_like_the_preset(shared_data, tmp_path):
    """QNLI's real dev rows, renamed and written as JSON lines with label names, are the preset's examples."""
    preset = load_examples("qnli", "dev", shared_data / "glue" / "QNLI")[:300]
    path = tmp_path / "qa.jsonl"
    names = get_task("qnli").label_names
    path.write_text("".join(json.dumps({"q": e.text_a, "passage": e.text_b, "answers": names[e.label]}) + "\n"
                            for e in preset))
    spec = task_spec(DataConfig(task="qa", train_file=str(path), dev_file=str(path), text_columns=("q", "passage"),
                                label_column="answers", label_names=names))
    assert spec.is_pair and load_examples(spec, "dev", None) == preset


# --------------------------------------------------------------------------------------------
# End to end: search, export, predict on a user's 3-class data (single text and pairs)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_backbone(tmp_path_factory, tiny_tokenizer) -> Path:
    """A random-weight BERT backbone without a head: rosearch fine-tunes a 3-way teacher from it."""
    from transformers import BertConfig, BertModel

    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "bert"
    BertModel(BertConfig(vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def own_search(tmp_path: Path, backbone: Path, data: dict) -> dict:
    return {
        "run": {"name": "own", "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
                "seed": 0, "device": "cpu", "num_threads": 1},
        "data": {"max_length": 32, "validation_size": 24, **data},
        "teacher": {"model": str(backbone), "max_steps": 60, "batch_size": 16, "learning_rate": 3e-3},
        "search_space": {"hidden_sizes": [32], "embedding_sizes": [16], "num_layers": [1], "nodes_per_cell": 3,
                         "max_edges": 2, "attention_heads": [2], "kernel_sizes": [3], "ffn_ratios": [1],
                         "activations": ["gelu"], "embedding_init": "random"},
        "distill": {"max_steps": 20, "batch_size": 16, "eval_batch_size": 64, "learning_rate": 3e-3},
        "evolution": {"population_size": 2, "generations": 1, "elitism": 1, "tournament_size": 2},
        "workers": {"backend": "inprocess"},
    }


@pytest.mark.parametrize("kind", ["single", "pair"])
def test_search_export_predict_on_own_three_class_data(tmp_path, bare_backbone, capsys, kind, single_thread):
    import yaml

    if kind == "single":
        write_tickets(tmp_path / "files" / "tickets.csv", 150, seed=0)
        data = {"task": "tickets", "data_dir": str(tmp_path / "files"), "train_file": "tickets.csv",
                "text_columns": ["body"], "label_column": "category"}
        classes, text = ["complaint", "praise", "question"], ["the film was good and witty"]
    else:
        write_pairs(tmp_path / "claims.jsonl", 150, seed=0)
        data = {"task": "claims", "train_file": str(tmp_path / "claims.jsonl"), "text_columns": ["claim", "reply"],
                "label_column": "verdict", "label_names": ["agree", "disagree", "unrelated"]}
        classes, text = ["agree", "disagree", "unrelated"], ["a good film\tthe superb story"]  # a tab: a pair
    config_file = tmp_path / "own.yaml"
    config_file.write_text(yaml.safe_dump(own_search(tmp_path, bare_backbone, data)))
    assert main(["search", "--config", str(config_file)]) == 0
    run_dir = tmp_path / "runs" / "own"
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["label_names"] == classes
    assert info["teacher_dev_accuracy"] > 0.6  # the 3-way teacher learnt the task (chance: 1/3)
    assert main(["export", str(run_dir), "--top", "1", "--out", str(tmp_path / "export")]) == 0
    folder = next((tmp_path / "export").iterdir())
    model_config = json.loads((folder / "config.json").read_text())
    assert list(model_config["id2label"].values()) == classes
    capsys.readouterr()
    assert main(["predict", "--model", str(folder), *text]) == 0
    answer = json.loads(capsys.readouterr().out.splitlines()[0])
    assert answer["label"] in classes and sorted(answer["probabilities"]) == classes


def test_hub_dataset_with_own_columns_and_classlabel_names(monkeypatch):
    """A hub dataset (a stand-in `datasets`: nothing is downloaded here) names its classes by its ClassLabel."""
    import sys
    import types

    class Rows(list):
        column_names = ["title", "topic", "id"]
        features = {"topic": types.SimpleNamespace(names=["world", "sports", "business"])}

    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        return Rows([{"title": f"t{i}", "topic": i % 3, "id": i} for i in range(30)])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    spec = task_spec(DataConfig(task="news", dataset_name="someone/news", text_columns=("title",), label_column="topic"))
    assert spec.label_names == ("world", "sports", "business") and not spec.reads_local(None)
    dev = load_examples(spec, "dev", None)  # no dev split named: a stratified tenth of train
    assert sorted(e.label for e in dev) == [0, 1, 2] and len(load_examples(spec, "train", None)) == 27
    assert {c[2] for c in calls} == {"train"}
    bad = task_spec(DataConfig(task="news2", dataset_name="someone/news", text_columns=("text",), label_column="topic"))
    with pytest.raises(DataError, match=r"someone/news\[train\]: missing column 'text' \(the dataset has \['title', 'topic', 'id'\]"):
        load_examples(bad, "train", None)
