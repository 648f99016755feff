"""Random genomes from a :class:`~rosearch.config.SearchSpaceConfig`: the initial population.

Everything draws from an explicit ``random.Random`` so a seed reproduces a population. The
parameter count is injected (``param_count``) so this module does not depend on model code.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Sequence

from rosearch.config import SearchSpaceConfig
from rosearch.errors import UserError
from rosearch.search_space import labels
from rosearch.search_space.genome import CellSpec, Genome

logger = logging.getLogger(__name__)


class BudgetError(UserError, ValueError):
    """No genome of the search space fits ``search_space.param_budget``."""


def sample_cell(rng: random.Random, num_nodes: int, op_labels: Sequence[str], max_edges: int) -> CellSpec:
    """A random cell with exactly ``num_nodes`` live nodes and at most ``max_edges`` edges.

    The DAG is built so that every node lies on an input -> output path (nothing to prune) and
    the edge budget holds, so no draw is ever rejected:

    1. every node j >= 1 hangs under a random earlier node (a tree rooted at the input); a node
       left without children will cost one extra edge in step 2, so once the budget beyond a
       plain chain is spent, new nodes hang under a childless node instead;
    2. every childless node other than the output gets an edge to a random later node;
    3. a random number of random extra forward edges fill (part of) the remaining budget.

    Every full DAG within the budget can come out. Each intermediate node gets a random op.
    """
    if num_nodes < 3:
        raise ValueError(f"num_nodes={num_nodes}: a cell needs input, output and at least one operation node (>= 3)")
    if max_edges < num_nodes - 1:
        raise ValueError(
            f"max_edges={max_edges} cannot connect {num_nodes} nodes (a chain alone needs {num_nodes - 1}); "
            "fix: raise search_space.max_edges or lower search_space.nodes_per_cell"
        )
    if not op_labels:
        raise ValueError("op_labels is empty: a cell needs at least one operation to choose from")

    n = num_nodes
    matrix = [[0] * n for _ in range(n)]
    slack = max_edges - (n - 1)  # edges we may spend beyond the n-1 of a plain chain
    childless = {0}  # non-output nodes without a successor yet
    for j in range(1, n):
        parents = range(j) if len(childless) <= slack else sorted(childless)
        parent = rng.choice(parents)
        matrix[parent][j] = 1
        childless.discard(parent)
        if j < n - 1:
            childless.add(j)
    for i in sorted(childless):
        matrix[i][rng.randrange(i + 1, n)] = 1

    free = [(i, j) for i in range(n) for j in range(i + 1, n) if not matrix[i][j]]
    used = sum(map(sum, matrix))
    for i, j in rng.sample(free, rng.randint(0, min(len(free), max_edges - used))):
        matrix[i][j] = 1

    ops = [labels.INPUT] + [rng.choice(op_labels) for _ in range(n - 2)] + [labels.OUTPUT]
    return CellSpec(matrix, ops)


def sample_genome(
    rng: random.Random,
    space: SearchSpaceConfig,
    *,
    param_count: Callable[[Genome], int] | None = None,
    max_tries: int = 200,
) -> Genome:
    """Draw H, E, L, one cell per layer and the defense and training genes; redraw while over ``space.param_budget``.

    Attention labels whose head count does not divide the drawn H are left out of that
    genome's op choices. With a budget, ``param_count`` (e.g. ``cost.count_parameters``) is
    required, and after ``max_tries`` draws over budget :class:`BudgetError` says how far the
    smallest draw was from fitting.
    """
    if space.param_budget is not None and param_count is None:
        raise ValueError("search_space.param_budget is set, so sample_genome needs param_count= to enforce it")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    all_labels = labels.op_labels(
        space.op_families, space.attention_heads, space.kernel_sizes, space.ffn_ratios, space.activations
    )
    over_budget: list[tuple[int, Genome]] = []
    for attempt in range(1, max_tries + 1):
        hidden = rng.choice(space.hidden_sizes)
        embedding = rng.choice(space.embedding_sizes)
        depth = rng.choice(space.num_layers)
        usable = _labels_for_hidden_size(all_labels, hidden)
        cells = tuple(sample_cell(rng, space.nodes_per_cell, usable, space.max_edges) for _ in range(depth))
        genome = Genome(hidden, embedding, cells, sample_defenses(rng, space), sample_training(rng, space))
        if space.param_budget is None or param_count is None:
            return genome
        count = param_count(genome)
        if count <= space.param_budget:
            logger.debug("sampled genome %s with %d parameters after %d draw(s)", genome.hash(), count, attempt)
            return genome
        over_budget.append((count, genome))
    count, genome = min(over_budget, key=lambda item: item[0])
    raise BudgetError(
        f"search_space.param_budget={space.param_budget:,} is too small: none of {max_tries} sampled genomes "
        f"fit; the smallest had {count:,} parameters (hidden_size={genome.hidden_size}, "
        f"embedding_size={genome.embedding_size}, num_layers={genome.num_layers}); fix: raise the budget "
        "or allow smaller hidden_sizes / embedding_sizes / num_layers"
    )


def sample_defenses(rng: random.Random, space: SearchSpaceConfig) -> tuple[str, ...]:
    """``space.defenses`` plus each of ``space.defense_choices`` with probability 1/2.

    Draws nothing from ``rng`` when there are no choices, so a space without defense genes
    spends its random numbers on the architecture alone.
    """
    chosen = [name for name in space.defense_choices if rng.random() < 0.5]
    return tuple(space.defenses) + tuple(chosen)


def _labels_for_hidden_size(all_labels: Sequence[str], hidden_size: int) -> list[str]:
    usable = []
    for label in all_labels:
        heads = labels.parse_op(label).heads
        if heads is None or hidden_size % heads == 0:
            usable.append(label)
    if not usable:
        raise ValueError(
            f"no operation fits hidden_size={hidden_size}: every attention head count in {list(all_labels)} "
            "fails to divide it (fix: add other op_families or heads that divide the hidden sizes)"
        )
    return usable


def sample_training(rng: random.Random, space: SearchSpaceConfig) -> tuple[str, ...]:
    """Each of ``space.training_choices`` with probability 1/2 (no draw when there are none, so
    a space without a training gene spends its random numbers on the rest of the genome)."""
    return tuple(name for name in space.training_choices if rng.random() < 0.5)
