"""rosearch.choices (the names config validates against) matches the registries that implement them."""

from rosearch import choices
from rosearch.attack.recipes import RECIPES, recipe_names
from rosearch.defense.names import DEFENSE_NAMES
from rosearch.distill.augment import AUGMENT_RECIPES as AUGMENT_CHECKED
from rosearch.distill.methods import AUGMENT_RECIPES, METHODS
from rosearch.search_space import labels


def test_recipe_names_are_the_recipe_registry():
    assert tuple(RECIPES) == choices.RECIPE_NAMES == recipe_names()


def test_method_names_are_the_method_registry():
    assert tuple(METHODS) == choices.DISTILL_METHOD_NAMES


def test_augment_names_are_the_augmenter_registry():
    assert tuple(AUGMENT_RECIPES) == choices.AUGMENT_RECIPE_NAMES == tuple(AUGMENT_CHECKED)


def test_defense_and_label_names_are_the_same_objects():
    from rosearch.defense.registry import DEFENSES

    assert DEFENSE_NAMES is choices.DEFENSE_NAMES
    assert tuple(DEFENSES) == choices.DEFENSE_NAMES  # the registry's order is the application order
    assert all(spec.name == name for name, spec in DEFENSES.items())
    assert labels.ACTIVATIONS is choices.ACTIVATIONS and labels.OP_FAMILIES is choices.OP_FAMILIES


def test_the_registry_holds_every_method_once():
    from rosearch.distill.methods import REGISTRY
    from rosearch.distill.protocol import DistillMethod

    assert sorted(m.name for m in REGISTRY) == sorted(choices.DISTILL_METHOD_NAMES)
    assert all(isinstance(m, DistillMethod) and METHODS[m.name] is m for m in REGISTRY)


def test_strategy_names_are_the_strategy_registry():
    from rosearch.evolution.registry import STRATEGIES
    from rosearch.evolution.strategy import Strategy

    assert tuple(STRATEGIES) == choices.STRATEGY_NAMES
    assert all(issubclass(cls, Strategy) and cls.name == name and cls.__doc__ for name, cls in STRATEGIES.items())


def test_op_family_names_are_the_family_registry():
    from rosearch.search_space.families import FAMILIES

    assert tuple(FAMILIES) == choices.OP_FAMILIES
    assert all(family.name == name for name, family in FAMILIES.items())
