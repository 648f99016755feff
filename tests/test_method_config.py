"""The distillation methods' own config sections (``distill.<method>.<knob>``): one per method,
read from a file and from ``--set`` alike, each checking its own values, and hashed as written."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from rosearch.choices import DISTILL_METHOD_NAMES
from rosearch.config import RESUMABLE_FIELDS, ConfigError, DistillConfig, config_from_dict, load_config


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


def _knobs() -> list[tuple[str, str, object]]:
    """Every method knob with a valid non-default value (a recipe for the one that defaults to None)."""
    dist = DistillConfig()
    out = []
    for method in DISTILL_METHOD_NAMES:
        for name, default in vars(dist.method_config(method)).items():
            special = {("adv_finetune", "recipe"): "pwws", ("augment", "limit"): 7}.get((method, name))
            out.append((method, name, special or _other_value(default)))
    return out


def test_every_method_has_its_section_with_a_check():
    dist = DistillConfig()
    for name in DISTILL_METHOD_NAMES:
        assert dist.method_config(name) is getattr(dist, name)
        assert callable(dist.method_config(name).check)
    with pytest.raises(KeyError, match="no distillation method 'nope'"):
        dist.method_config("nope")


@pytest.mark.parametrize(("method", "name", "value"), _knobs(), ids=lambda v: str(v))
def test_a_knob_reads_the_same_from_a_file_and_from_set(method, name, value, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"distill": {method: {name: value}}}))
    from_file = load_config(path)
    from_set = load_config(None, [f"distill.{method}.{name}={_yaml(value)}"])
    expected = tuple(value) if isinstance(value, list) else value
    assert getattr(from_file.distill.method_config(method), name) == expected
    assert from_file == from_set


def test_a_knob_outside_its_section_is_an_unknown_key_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'distill\.mate_kd_weight'"):
        config_from_dict({"distill": {"mate_kd_weight": 2.0}})
    with pytest.raises(ConfigError, match=r"unknown config key 'distill\.mate_kd\.wieght'.*'weight'"):
        config_from_dict({"distill": {"mate_kd": {"wieght": 1.0}}})


@pytest.mark.parametrize(("section", "field", "value"), [
    ("mate_kd", "mask_prob", 0.0), ("rift", "temperature", 0.0), ("adv_train", "rounds", 0),
    ("ascc", "sources", ["thesaurus"]), ("augment", "recipes", ["char", "char"]), ("layer_kd", "weight", -1.0),
    ("adv_finetune", "recipe", "nope"),
])
def test_a_method_section_refuses_its_own_bad_values(section, field, value):
    with pytest.raises(ConfigError, match=rf"distill\.{section}\.{field}"):
        config_from_dict({"distill": {section: {field: value}}})


def test_the_fingerprints_are_hashes_of_the_config_as_a_dict():
    config = config_from_dict({"distill": {"methods": ["rift"], "rift": {"temperature": 0.05}}})
    data = config.to_dict()
    assert data["distill"]["rift"] == {"weight": 0.1, "temperature": 0.05}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert config.fingerprint() == digest
    data.pop("supernet")  # the stand-alone fidelity: the supernet's settings decide nothing
    for section, key in RESUMABLE_FIELDS:
        if key is None:
            data.pop(section)
        else:
            data[section].pop(key)
    assert config.results_fingerprint() == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert config_from_dict(config.to_dict()) == config  # the dict reads back as the same config
