"""Searches that select on real attacks: the panel on every candidate, resume, selection on dev."""

from __future__ import annotations

import json

import pytest
from scipy.stats import spearmanr

from rosearch.config import config_from_dict
from rosearch.evaluate.robustness import panel_metrics
from rosearch.records.store import ResultStore
from rosearch.search import run_search
from test_search import tiny_search_dict

PANEL = ["deepwordbug", "pruthi"]  # two recipes that need no downloaded resources


def panel_dict(tmp_path, sst2_dir, teacher_dir, generations: int) -> dict:
    attack = {"enabled": True, "recipe": "deepwordbug", "recipes": PANEL, "num_examples": 6, "model_batch_size": 32,
              "nltk_data": str(tmp_path / "nltk"), "proxy": True}
    # the random tiny teacher is fine-tuned first: a teacher that is wrong everywhere leaves no proxy set
    teacher = {"finetuned": False, "epochs": 4, "learning_rate": 2e-3, "batch_size": 16}
    return tiny_search_dict(tmp_path, sst2_dir, teacher_dir, attack=attack, teacher=teacher,
                            data={"validation_size": 40}, evolution={"generations": generations},
                            fitness={"robustness_weight": 0.5})


def test_panel_fitness_by_hand_and_resume_loses_nothing(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    """Every candidate gets both recipes in its worker; fitness = val acc + 0.5 mean(panel) + 0.1 eff,
    recomputed here from the stored per-recipe figures; a resumed run keeps every figure it had."""
    first = run_search(config_from_dict(panel_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, generations=1)))
    run_dir = tmp_path / "runs" / "tiny"
    with ResultStore(run_dir / "results.sqlite") as store:
        before = {r.genome_hash: r for r in store.candidates()}
    assert first.evaluated == 4 and len(before) == 4

    summary = run_search(config_from_dict(panel_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, generations=2)),
                         resume=True)
    with ResultStore(run_dir / "results.sqlite") as store:
        after = {r.genome_hash: r for r in store.candidates()}
    assert summary.evaluated == len(after) - 4
    for key, record in before.items():  # nothing re-trained, re-attacked or lost
        assert after[key].finished_at == record.finished_at and after[key].metrics == record.metrics

    info = json.loads((run_dir / "run_info.json").read_text())
    teacher_params = info["teacher_params"]
    assert info["selection_split"] == "validation" and info["val_examples"] == 40
    for r in after.values():
        assert r.status == "ok"
        m = r.metrics
        per_recipe = [m[f"attack.{recipe}.accuracy_under_attack"] for recipe in PANEL]
        for recipe in PANEL:
            for key in ("success_rate", "queries", "seconds"):
                assert f"attack.{recipe}.{key}" in m
        assert m["robust_accuracy"] == pytest.approx(sum(per_recipe) / 2)
        efficiency = 1 - min(m["params"] / teacher_params, 1)
        assert r.fitness == pytest.approx(m["val_accuracy"] + 0.5 * sum(per_recipe) / 2 + 0.1 * efficiency)
        assert 0.0 <= m["dev_accuracy"] <= 1.0  # the reported figure, never selected on

    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["selection_split"] == "validation" and saved["attack_panel"] == PANEL
    pairs = [(r.metrics["proxy_robust_accuracy"], r.metrics["robust_accuracy"]) for r in after.values()]
    if len({p for p, _ in pairs}) > 1 and len({q for _, q in pairs}) > 1:
        expected = spearmanr([p for p, _ in pairs], [q for _, q in pairs])
        assert saved["proxy_vs_real"]["n"] == len(pairs)
        assert saved["proxy_vs_real"]["rho"] == pytest.approx(expected.statistic)
    else:  # constant on one side: no correlation to report
        assert saved["proxy_vs_real"] is None


def test_min_aggregate_search_selects_on_the_worst_recipe(tmp_path, tiny_sst2_dir, tiny_teacher_dir, monkeypatch):
    """attack.panel_aggregate=min reaches the search: robust_accuracy and fitness use the lowest recipe."""
    import rosearch.search as search

    aggregates = []  # what the candidate tasks asked for (the tiny students may score both recipes alike)

    def spy(metrics, panel, aggregate="mean"):
        aggregates.append(aggregate)
        return panel_metrics(metrics, panel, aggregate)

    monkeypatch.setattr(search, "panel_metrics", spy)
    config = panel_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, generations=1)
    config["attack"] |= {"panel_aggregate": "min", "proxy": False}
    summary = run_search(config_from_dict(config))
    assert summary.attack_aggregate == "min" and aggregates and set(aggregates) == {"min"}
    with ResultStore(tmp_path / "runs" / "tiny" / "results.sqlite") as store:
        records = store.candidates()
    teacher_params = json.loads((tmp_path / "runs" / "tiny" / "run_info.json").read_text())["teacher_params"]
    assert len(records) == 4
    for r in records:
        m = r.metrics
        worst = min(m[f"attack.{recipe}.accuracy_under_attack"] for recipe in PANEL)
        assert m["robust_accuracy"] == pytest.approx(worst)
        efficiency = 1 - min(m["params"] / teacher_params, 1)
        assert r.fitness == pytest.approx(m["val_accuracy"] + 0.5 * worst + 0.1 * efficiency)


def test_a_run_that_selects_on_dev_resumes_as_stored_and_other_settings_are_refused(
        tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    """A run without a validation slice or panel (dev selects, the proxy scores) resumes with its own
    config; a config that leaves those fields at the defaults is another run, refused with the fields."""
    from rosearch.commands.export import load_run_config
    from rosearch.records.store import ConfigMismatchError

    def on_dev(generations: int) -> dict:
        return tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, data={"validation_size": 0},
                                evolution={"generations": generations},
                                attack={"recipes": [], "proxy": True, "full_attack": "top_k"})

    run_search(config_from_dict(on_dev(1)))
    db = tmp_path / "runs" / "tiny" / "results.sqlite"
    assert load_run_config(tmp_path / "runs" / "tiny").data.validation_size == 0

    plain = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir)  # the defaults: a slice and the panel
    with pytest.raises(ConfigMismatchError, match=r"data\.validation_size"):
        run_search(config_from_dict(plain), resume=True)
    summary = run_search(config_from_dict(on_dev(2)), resume=True)  # generations 2: the run is extended
    assert summary.selection_split == "dev" and summary.evaluated >= 1
    with ResultStore(db) as store:
        assert all("val_accuracy" not in r.metrics for r in store.candidates())


def test_multi_fidelity_screens_everyone_with_the_first_recipe_and_completes_the_panel_on_the_top(
        tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    data = panel_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, generations=1)
    data["attack"] |= {"full_attack": "multi_fidelity", "top_k": 1, "proxy": False}
    summary = run_search(config_from_dict(data))
    with ResultStore(tmp_path / "runs" / "tiny" / "results.sqlite") as store:
        records = [r for r in store.candidates() if r.status == "ok"]
    teacher_params = json.loads((tmp_path / "runs" / "tiny" / "run_info.json").read_text())["teacher_params"]
    for r in records:  # everyone is compared on the cheap recipe alone
        m = r.metrics
        efficiency = 1 - min(m["params"] / teacher_params, 1)
        cheap = m["attack.deepwordbug.accuracy_under_attack"]
        assert r.fitness == pytest.approx(m["val_accuracy"] + 0.5 * cheap + 0.1 * efficiency)
    full = [r for r in records if "attack.pruthi.accuracy_under_attack" in r.metrics]
    assert 1 <= len(full) <= 2 and summary.top[0]["hash"] in {r.genome_hash for r in full}
    for r in full:  # the panel's mean appears once the panel is complete
        m = r.metrics
        expected = (m["attack.deepwordbug.accuracy_under_attack"] + m["attack.pruthi.accuracy_under_attack"]) / 2
        assert m["robust_accuracy"] == pytest.approx(expected)
    assert all("robust_accuracy" not in r.metrics for r in records if r not in full)
