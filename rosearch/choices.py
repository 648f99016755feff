"""The names a config may choose from, as plain tuples (a leaf module: it imports nothing).

:mod:`rosearch.config` validates against these without importing the packages that implement
them (attack recipes import torch, distillation methods the whole trainer). Each registry keeps
its descriptions and builders where the code is; ``tests/test_choices.py`` checks that the
registries hold exactly these names, in this order.
"""

from __future__ import annotations

# rosearch.attack.recipes.RECIPES
RECIPE_NAMES: tuple[str, ...] = (
    "deepwordbug", "pruthi", "pwws", "textfooler", "textfooler-local", "deepwordbug-adaptive", "pwws-adaptive",
)

# rosearch.distill.methods.METHODS
DISTILL_METHOD_NAMES: tuple[str, ...] = ("augment", "mate_kd", "layer_kd", "rift", "adv_finetune", "adv_train", "ascc")

# rosearch.distill.methods.AUGMENT_RECIPES
AUGMENT_RECIPE_NAMES: tuple[str, ...] = ("wordnet", "neighbors", "insert", "char")

# rosearch.defense.names (the defenses themselves live in rosearch.defense)
WORD_RECOGNITION = "word_recognition"  # maps a word the lexicon does not know back to a likely known word
TYPO_ENCODING = "typo_encoding"  # maps words one typo apart (rare next to frequent) to one code
SYNONYM_ENCODING = "synonym_encoding"  # maps every word to one representative of its synonym cluster
# Applied in this order: typos are repaired first, the repaired word is synonym-encoded, then typo-encoded
# (an encoding applied after another can only merge its codes, so synonym encoding keeps every invariance).
DEFENSE_NAMES: tuple[str, ...] = (WORD_RECOGNITION, SYNONYM_ENCODING, TYPO_ENCODING)

# rosearch.evolution.registry.STRATEGIES
STRATEGY_NAMES: tuple[str, ...] = ("generational", "aging", "random", "halving")

# rosearch.search_space.families.FAMILIES (activations: the grammar of rosearch.search_space.labels)
ACTIVATIONS: tuple[str, ...] = ("gelu", "relu", "swish", "tanh")
OP_FAMILIES: tuple[str, ...] = ("attn", "conv", "sepconv", "dilconv", "glu", "ffn", "identity", "maxpool", "avgpool")

# rosearch.data.tasks.TASKS: the built-in tasks (presets of the same mechanism as a user's own data)
BUILTIN_TASKS: tuple[str, ...] = ("sst2", "mrpc", "rte", "qnli", "imdb")

# rosearch.records.tracking.TRACKERS (run.report_to, HF Trainer's spelling)
REPORT_TO_NAMES: tuple[str, ...] = ("mlflow", "tensorboard", "wandb")
