"""One typed configuration tree for a whole run, loaded from YAML/TOML and validated up front.

Every section is a frozen dataclass that checks its own values (:mod:`.sections`, and
:mod:`.distill` for the distillation methods); the top-level :class:`Config` (:mod:`.tree`) is
built once, from a file plus ``--set a.b=c`` overrides (:mod:`.loading`), and handed down to each
layer, which reads only its own section. Validation happens entirely at load time so that nothing
starts running on a bad config: an unknown key, a wrong type or an impossible value raises
:class:`ConfigError` naming the field and saying how to fix it.
"""

from rosearch.config.checks import ConfigError, check_path_name
from rosearch.config.distill import (
    AdvFinetuneConfig,
    AdvTrainConfig,
    AsccConfig,
    AugmentConfig,
    DistillConfig,
    LayerKDConfig,
    MateKDConfig,
    RiftConfig,
)
from rosearch.config.loading import apply_override, config_from_dict, load_config, parse_yaml
from rosearch.config.sections import (
    VALIDATION_MAX_SHARE,
    AttackConfig,
    DataConfig,
    DefenseConfig,
    EvolutionConfig,
    FitnessConfig,
    RunConfig,
    SearchSpaceConfig,
    TeacherConfig,
    WorkersConfig,
)
from rosearch.config.tree import (
    RESUMABLE_FIELDS,
    Config,
    attack_panel,
    halving_budgets,
    methods_used,
    validate,
    with_methods,
)

__all__ = [
    "RESUMABLE_FIELDS", "VALIDATION_MAX_SHARE", "AdvFinetuneConfig", "AdvTrainConfig", "AsccConfig", "AttackConfig",
    "AugmentConfig", "Config", "ConfigError", "DataConfig", "DefenseConfig", "DistillConfig", "EvolutionConfig",
    "FitnessConfig", "LayerKDConfig", "MateKDConfig", "RiftConfig", "RunConfig", "SearchSpaceConfig",
    "TeacherConfig", "WorkersConfig", "apply_override", "attack_panel", "check_path_name", "config_from_dict",
    "halving_budgets", "load_config", "methods_used", "parse_yaml", "validate", "with_methods",
]
