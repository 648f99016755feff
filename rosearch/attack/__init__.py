"""Adversarial robustness with real TextAttack attacks, runnable offline.

- :mod:`~rosearch.attack.resources`: NLTK data / WordNet / neighbour table, clear errors
- :mod:`~rosearch.attack.recipes`: the recipes (a dict of builders) and :func:`build_attack`
- :mod:`~rosearch.attack.wrapper`: a batched, dynamically padded TextAttack model wrapper
- :mod:`~rosearch.attack.runner`: attack a model on a sample and report TextAttack's numbers
- :mod:`~rosearch.attack.proxy`: the cached adversarial proxy set built against the teacher
- :mod:`~rosearch.attack.command`: the ``rosearch attack`` subcommand

Nothing here imports textattack until an attack is built.
"""

from rosearch.attack.proxy import ProxySet, load_or_build_proxy_set
from rosearch.attack.recipes import RECIPES, BuiltAttack, RecipeSpec, build_attack, recipe_names
from rosearch.attack.resources import MissingResourceError, load_neighbors, prepare_textattack
from rosearch.attack.runner import AttackReport, ExampleResult, attack_model, sample_attack_examples
from rosearch.attack.wrapper import make_wrapper

__all__ = [
    "RECIPES", "AttackReport", "BuiltAttack", "ExampleResult", "MissingResourceError", "ProxySet", "RecipeSpec",
    "attack_model", "build_attack", "load_neighbors", "load_or_build_proxy_set", "make_wrapper",
    "prepare_textattack", "recipe_names", "sample_attack_examples",
]
