"""Every search strategy by its config name (``evolution.strategy``); one line per strategy.

``tests/test_choices.py`` checks these are exactly :data:`rosearch.choices.STRATEGY_NAMES`, in order.
"""

from __future__ import annotations

from typing import Sequence

from rosearch.config import EvolutionConfig, SearchSpaceConfig
from rosearch.evolution.aging import Aging
from rosearch.evolution.generational import Generational
from rosearch.evolution.halving import Halving
from rosearch.evolution.random_search import RandomSearch
from rosearch.evolution.strategy import ParamCount, Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    Generational.name: Generational,
    Aging.name: Aging,
    RandomSearch.name: RandomSearch,
    Halving.name: Halving,
}


def make_strategy(cfg: EvolutionConfig, space: SearchSpaceConfig, *, seed: int, objective_weights: Sequence[float],
                  param_count: ParamCount | None, max_steps: int | None = None) -> Strategy:
    """The strategy ``cfg.strategy`` names, fresh (a resumed run then loads its checkpoint into it)."""
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"evolution.strategy must be one of {list(STRATEGIES)}, got {cfg.strategy!r}")
    return STRATEGIES[cfg.strategy](cfg, space, seed=seed, objective_weights=objective_weights,
                                    param_count=param_count, max_steps=max_steps)
