"""The held-out robustness benchmark: its bootstrap intervals on hand-checkable cases, and a
``--quick`` end-to-end run on the tiny fixtures (teacher, plain KD, a defended student) that
writes the documented JSON schema and resumes without attacking again."""

from __future__ import annotations

import json
import re
import sys

import pytest

from rosearch.evaluate.bootstrap import bootstrap_interval, paired_difference_interval

from conftest import REPO_ROOT


def test_bootstrap_interval_of_a_constant_sample_is_that_constant():
    assert bootstrap_interval([1, 1, 1, 1], resamples=50, seed=1) == (1.0, 1.0)
    assert bootstrap_interval([0.0] * 7, resamples=50, seed=1) == (0.0, 0.0)


def test_bootstrap_interval_matches_the_binomial_percentiles():
    # 5 correct of 10: a resample's accuracy is Binomial(10, 1/2) / 10, whose CDF is
    # 0.0107 at 0.1, 0.0547 at 0.2, 0.9453 at 0.7 and 0.9893 at 0.8: the 2.5% and 97.5%
    # percentiles are 0.2 and 0.8
    values = [1, 0] * 5
    assert bootstrap_interval(values, resamples=20000, seed=0) == (0.2, 0.8)
    # seeded: the same seed gives the same interval, in any number of chunks
    assert bootstrap_interval(values, resamples=300, seed=4) == bootstrap_interval(values, resamples=300, seed=4)


def test_paired_difference_interval():
    a, b = [1, 1, 0, 1], [1, 0, 0, 1]  # a is right on one more example; the rest agree
    diff, low, high = paired_difference_interval(a, b, resamples=5000, seed=0)
    assert diff == 0.25
    # a resample's difference is (copies of example 2) / 4 with copies ~ Binomial(4, 1/4): P(0) = 0.316
    assert (low, high) == (0.0, 0.75)
    with pytest.raises(ValueError, match="same examples"):
        paired_difference_interval([1, 0], [1, 0, 1])


@pytest.mark.parametrize("kwargs, match", [({"resamples": 0}, "resamples"), ({"level": 1.0}, "level")])
def test_bootstrap_interval_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_interval([1, 0], **kwargs)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([])


TINY_GENOME = {"hidden_size": 32, "embedding_size": 16, "cells": [
    {"matrix": [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], "ops": ["input", "attn_h2", "ffn_r2_gelu", "output"]},
]}


@pytest.fixture()
def bench_module(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    for name in ("robustness", "robustness_models", "common"):
        sys.modules.pop(name, None)
    import robustness

    return robustness


def test_quick_run_writes_the_schema_and_resumes(tmp_path, tiny_sst2_dir, tiny_teacher_dir, bench_module, monkeypatch):
    import yaml

    from test_search import tiny_search_dict

    config = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, attack={"nltk_data": str(tmp_path / "nltk")})
    config.pop("workers"), config.pop("evolution")
    config_file, genome_file = tmp_path / "bench.yaml", tmp_path / "genome.json"
    config_file.write_text(yaml.safe_dump(config))
    genome_file.write_text(json.dumps(TINY_GENOME))
    out = tmp_path / "results" / "robustness.json"
    argv = ["--quick", "--config", str(config_file), "--genome", str(genome_file), "--work-dir", str(tmp_path / "work"),
            "--json", str(out), "--recipe", "deepwordbug", "--row", "teacher", "--row", "plain_kd",
            "--row", "defense:word_recognition"]
    assert bench_module.main(argv) == 0

    summary = json.loads(out.read_text())
    proto = summary["protocol"]
    assert proto["task"] == "sst2" and proto["n"] == 24 and proto["seed"] == 0 and proto["recipes"] == ["deepwordbug"]
    assert proto["constraints"]["deepwordbug"]  # TextAttack's stock constraints, listed
    rows = {r["kind"]: r for r in summary["rows"]}
    assert list(rows) == ["teacher", "plain_kd", "defense:word_recognition"]
    assert rows["defense:word_recognition"]["defenses"] == ["word_recognition"]
    assert rows["plain_kd"]["defenses"] == [] and rows["plain_kd"]["params"] < rows["teacher"]["params"]
    for row in rows.values():
        assert 0.0 <= row["clean_accuracy"] <= 1.0
        low, high = row["clean_ci95"]
        assert low <= row["clean_accuracy"] <= high
        attack = row["attacks"]["deepwordbug"]
        assert attack["accuracy_under_attack"] <= row["clean_accuracy"]
        assert attack["ci95"][0] <= attack["accuracy_under_attack"] <= attack["ci95"][1]
        assert attack["successful"] + attack["failed"] + attack["skipped"] == 24
        assert row["mean_accuracy_under_attack"] == attack["accuracy_under_attack"]  # a panel of one
    assert {c["row"] for c in summary["comparisons"]} == {rows["teacher"]["name"], rows["defense:word_recognition"]["name"]}
    text = out.read_text()
    assert not re.search(r'"[01]{24}"', text)  # no per-example rows in the committed summary
    # each attack names its saved per-example file; bench/paired_attacks.py pairs two of them as the summary does
    import paired_attacks

    saved = {kind: paired_attacks.load_attack(tmp_path / "work" / "attacks" / rows[kind]["attacks"]["deepwordbug"]["file"])
             for kind in ("teacher", "plain_kd")}
    pair = paired_attacks.paired(saved["teacher"], saved["plain_kd"], resamples=proto["bootstrap"]["resamples"], seed=0)
    figures = next(c["figures"] for c in summary["comparisons"] if c["row"] == rows["teacher"]["name"])
    for figure, key in (("clean", "clean"), ("deepwordbug", "robust")):
        assert [round(pair[key]["difference"], 4), [round(v, 4) for v in pair[key]["ci95"]]] == [
            figures[figure]["difference"], figures[figure]["ci95"]]
    for other in ({"recipe": "pwws"}, {"examples": "0" * 64}):  # another recipe, another sample of the same size
        with pytest.raises(bench_module.BenchError, match="do not pair"):
            paired_attacks.paired(saved["teacher"], {**saved["plain_kd"], **other}, resamples=10, seed=0)
    from rosearch.search_space.genome import Genome

    # a distilled row of a --genome other than bench/reference_genome.json is named by that genome
    assert rows["plain_kd"]["name"] == f"plain KD (genome {Genome.from_json(json.dumps(TINY_GENOME)).hash()[:12]})"
    table = out.with_suffix(".md").read_text()
    assert "deepwordbug acc" in table and rows["defense:word_recognition"]["name"] in table
    # the defense travels with the distilled student
    from rosearch.defense import load_defense

    students = sorted((tmp_path / "work" / "students").iterdir())
    assert [load_defense(s) is not None for s in students] == [True, False]  # defense-..., plain_kd-...

    # a re-run reuses every distilled student and every (row, recipe) result
    import rosearch.attack.runner as runner
    import rosearch.evaluate.candidate as candidate

    def forbidden(*args, **kwargs):
        raise AssertionError("a re-run must not attack or distil again")

    monkeypatch.setattr(runner, "attack_model", forbidden)
    monkeypatch.setattr(candidate, "evaluate_candidate", forbidden)
    before = {r["name"]: (r["clean_accuracy"], r["attacks"]) for r in summary["rows"]}
    assert bench_module.main(argv) == 0
    again = json.loads(out.read_text())
    assert {r["name"]: (r["clean_accuracy"], r["attacks"]) for r in again["rows"]} == before
    # --saved-only tabulates what is saved and attacks nothing, even for a recipe never run
    assert bench_module.main(argv + ["--recipe", "pruthi", "--saved-only"]) == 0
    saved = json.loads(out.read_text())
    assert {r["name"]: (r["clean_accuracy"], r["attacks"]) for r in saved["rows"]} == before
    assert "pruthi" in saved["protocol"]["recipes"]
    assert all("mean_accuracy_under_attack" not in r for r in saved["rows"])  # the panel is incomplete

    # the defended student's folder as an exported row: same weights + defense, so the same saved result
    defended = rows["defense:word_recognition"]
    export_argv = argv[:argv.index("--row")] + ["--row", f"export:{students[0]}", "--json", str(tmp_path / "export.json")]
    assert bench_module.main(export_argv) == 0
    (exported,) = json.loads((tmp_path / "export.json").read_text())["rows"]
    assert exported["kind"] == "export" and exported["defenses"] == ["word_recognition"]
    assert exported["fingerprint"] == defended["fingerprint"] and exported["attacks"] == defended["attacks"]


def test_adaptive_check_runs_on_defended_rows_only_and_stays_out_of_the_mean(tmp_path, tiny_sst2_dir,
                                                                            tiny_teacher_dir, bench_module):
    import yaml

    from test_search import tiny_search_dict

    config = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, attack={"nltk_data": str(tmp_path / "nltk")})
    config.pop("workers"), config.pop("evolution")
    config_file, genome_file = tmp_path / "bench.yaml", tmp_path / "genome.json"
    config_file.write_text(yaml.safe_dump(config))
    genome_file.write_text(json.dumps(TINY_GENOME))
    out = tmp_path / "adaptive.json"
    argv = ["--quick", "--n", "12", "--config", str(config_file), "--genome", str(genome_file),
            "--work-dir", str(tmp_path / "work"), "--json", str(out), "--recipe", "deepwordbug",
            "--recipe", "deepwordbug-adaptive", "--row", "plain_kd", "--row", "defense:word_recognition"]
    assert bench_module.main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["protocol"]["defense_aware_recipes"] == ["deepwordbug-adaptive"]
    plain, defended = summary["rows"]
    assert list(plain["attacks"]) == ["deepwordbug"]  # no defense to adapt to
    assert list(defended["attacks"]) == ["deepwordbug", "deepwordbug-adaptive"]
    for row in (plain, defended):  # the mean is over the stock panel only
        assert row["mean_accuracy_under_attack"] == row["attacks"]["deepwordbug"]["accuracy_under_attack"]
    (comparison,) = summary["comparisons"]
    assert set(comparison["figures"]) == {"clean", "deepwordbug", "mean"}
    table = out.with_suffix(".md").read_text()
    assert "| n/a |" in table and "adaptive checks" in table


def test_recipe_names_are_checked_and_an_adaptive_check_needs_a_stock_recipe(bench_module):
    with pytest.raises(SystemExit):
        bench_module.parse_args(["--recipe", "deepwordbugg"])
    with pytest.raises(SystemExit):
        bench_module.parse_args(["--recipe", "pwws-adaptive"])
    assert bench_module.parse_args(["--recipe", "pwws", "--recipe", "pwws-adaptive"]).recipes == ("pwws", "pwws-adaptive")


def test_searched_row_is_the_runs_best_student_with_its_defenses(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                                bench_module):
    import yaml

    from test_search import tiny_search_dict

    from rosearch.config import config_from_dict
    from rosearch.results.stats import ranked_records
    from rosearch.records.store import ResultStore
    from rosearch.search import run_search

    config = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, search_space={"defenses": ["word_recognition"]},
                              attack={"nltk_data": str(tmp_path / "nltk")})
    run_search(config_from_dict(config))
    run_dir = tmp_path / "runs" / "tiny"
    with ResultStore(run_dir / "results.sqlite") as store:
        best = ranked_records(store)[0]
    config_file, out = tmp_path / "bench.yaml", tmp_path / "searched.json"
    config_file.write_text(yaml.safe_dump(config))
    argv = ["--quick", "--n", "12", "--config", str(config_file), "--work-dir", str(tmp_path / "work"), "--json", str(out),
            "--recipe", "deepwordbug", "--run", str(run_dir)]
    assert bench_module.main(argv) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["kind"] == "searched" and row["genome_hash"] == best.genome_hash and row["weights"] == "stored"
    assert row["defenses"] == ["word_recognition"]  # rebuilt from the run's config: the export carries none yet
    assert row["attacks"]["deepwordbug"]["successful"] + row["attacks"]["deepwordbug"]["failed"] \
        + row["attacks"]["deepwordbug"]["skipped"] == 12

    # another run under the same name left its export in the work dir: it is not reused
    (exported,) = (tmp_path / "work" / "searched" / "tiny").glob("rank1-*")
    exported.rename(exported.with_name("rank1-0123456789ab"))
    assert bench_module.main(argv) == 0
    (again,) = json.loads(out.read_text())["rows"]
    assert again["genome_hash"] == best.genome_hash
    assert (tmp_path / "work" / "searched" / "tiny" / f"rank1-{best.genome_hash[:12]}").is_dir()


def test_bad_row_spec_is_a_clear_error(bench_module):
    from robustness_models import parse_row

    from common import BenchError

    assert parse_row("defense:synonym_encoding+word_recognition,method:adv_finetune").defenses == (
        "word_recognition", "synonym_encoding")
    for text in ("teachr", "defense:spellcheck", "export:"):
        with pytest.raises(BenchError, match="row"):
            parse_row(text)
