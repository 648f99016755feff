"""The fault drill of issue 23: every fault a hostile new user found, tried on tiny models and data.

Each test adds its rows to the session's fault table (``fault_table`` in conftest.py): the case, the
exit code, and what was lost — measured by fingerprinting the files that must survive before and
after. The earlier run-directory faults (issue 16) add theirs from tests/test_run_safety.py, so
``pytest -s tests/test_fault_drill.py tests/test_run_safety.py`` prints the whole table
(``ROSEARCH_FAULT_TABLE=PATH`` also writes it; bench/README.md quotes it).
"""

from __future__ import annotations

import pytest

from rosearch.config import ConfigError, config_from_dict, load_config


def test_exponent_floats_are_numbers_in_files_and_overrides(tmp_path, fault_table):
    path = tmp_path / "c.yaml"
    path.write_text("distill:\n  learning_rate: 1e-3\nfitness:\n  accuracy_weight: 1.0e0\n")
    config = load_config(path, ["fitness.efficiency_weight=2E-2", "data.max_length=64"])
    assert config.distill.learning_rate == 1e-3 and config.fitness.accuracy_weight == 1.0
    assert config.fitness.efficiency_weight == 0.02 and config.data.max_length == 64
    assert load_config(None, ["distill.learning_rate=1.0e6"]).distill.learning_rate == 1e6
    fault_table.add("`1e-3` / `1.0e6` in a file and in `--set`", "0 (accepted)")


@pytest.mark.parametrize("name", ["two\nlines", "`rm -rf`", "<b>bold", "tab\there", "bell\a"])
def test_run_names_with_control_characters_or_markup_are_refused(name):
    with pytest.raises(ConfigError, match="run.name.*control characters"):
        config_from_dict({"run": {"name": name}})
