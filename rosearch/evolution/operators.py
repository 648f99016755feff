"""Variation operators on genomes: mutation, crossover, and drawing unseen offspring.

Every operator takes an explicit seeded ``random.Random`` and the run's
:class:`~rosearch.config.SearchSpaceConfig`, and returns only valid genomes: a child is built
through :class:`~rosearch.search_space.genome.CellSpec` / :class:`Genome` (which raise
:class:`InvalidGenomeError`) and checked against the space's edge, node and parameter budgets;
an attempt that fails is simply redrawn, a bounded number of times. The parameter count is
injected (``param_count``), as in :func:`~rosearch.search_space.sampling.sample_genome`, so this
module does not depend on model code.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from rosearch.config import SearchSpaceConfig
from rosearch.errors import UserError
from rosearch.search_space import labels
from rosearch.search_space.genome import CellSpec, Genome, InvalidGenomeError
from rosearch.search_space.sampling import sample_genome

logger = logging.getLogger(__name__)

# One mutation changes exactly one of these genes (see :func:`mutate`).
MUTATIONS: tuple[str, ...] = ("op", "add_edge", "remove_edge", "add_node", "hidden_size", "embedding_size", "depth")
DEFAULT_OPERATOR_TRIES = 50  # attempts of mutate/crossover before their fallback

ParamCount = Callable[[Genome], int]


class SearchSpaceExhaustedError(UserError, ValueError):
    """No unseen valid genome could be drawn: the search space seems (nearly) exhausted."""


class _Rejected(Exception):
    """One mutation/crossover attempt produced nothing usable; the caller draws again."""


@dataclass(frozen=True)
class Proposal:
    """A genome the strategy wants evaluated, with where it came from (for the results store)."""

    genome: Genome
    generation: int  # generation in which it was first proposed
    parents: tuple[str, ...]  # parent genome hashes; () for random initial genomes
    budget: int | None = None  # KD steps to train it with (successive halving's rung); None: distill.max_steps


class HasGenome(Protocol):
    """What the operators need of a population member (the loop's ``Individual``)."""

    genome: Genome


SelectParents = Callable[[Sequence[HasGenome], int, random.Random], list]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def space_labels(space: SearchSpaceConfig, hidden_size: int) -> list[str]:
    """The operation labels of the space grid that are valid for ``hidden_size`` (heads divide H)."""
    grid = labels.op_labels(space.op_families, space.attention_heads, space.kernel_sizes, space.ffn_ratios,
                            space.activations)
    usable = [op for op in grid if hidden_size % (labels.parse_op(op).heads or 1) == 0]
    if not usable:
        raise ValueError(
            f"no operation of the search space fits hidden_size={hidden_size} (fix: add op_families or attention "
            "heads that divide the hidden sizes)"
        )
    return usable


def _check_budget_args(space: SearchSpaceConfig, param_count: ParamCount | None) -> None:
    if space.param_budget is not None and param_count is None:
        raise ValueError("search_space.param_budget is set, so the evolution operators need param_count= to enforce it")


def _finish(hidden: int, embedding: int, cells: Sequence[CellSpec], space: SearchSpaceConfig,
            param_count: ParamCount | None, defenses: Sequence[str] = (), training: Sequence[str] = ()) -> Genome:
    """Build the child genome and enforce the budget; :class:`_Rejected` when it is not usable."""
    try:
        genome = Genome(hidden, embedding, tuple(cells), tuple(defenses), tuple(training))
    except InvalidGenomeError as exc:
        raise _Rejected(str(exc)) from exc
    if space.param_budget is not None and param_count is not None:
        count = param_count(genome)
        if count > space.param_budget:
            raise _Rejected(f"{count:,} parameters exceed search_space.param_budget={space.param_budget:,}")
    return genome


def _cell(matrix: Sequence[Sequence[int]], ops: Sequence[str]) -> CellSpec:
    """A cell that still has an operation node (a 2-node cell is an empty layer the depth gene covers)."""
    try:
        cell = CellSpec(matrix, ops)
    except InvalidGenomeError as exc:
        raise _Rejected(str(exc)) from exc
    if cell.num_nodes < 3:
        raise _Rejected("the cell lost all its operation nodes")
    return cell


def _repair_heads(cell: CellSpec, hidden: int, usable: Sequence[str], rng: random.Random) -> CellSpec:
    """Relabel attention ops whose head count does not divide ``hidden`` to a valid head count."""
    attn_ok = [op for op in usable if labels.parse_op(op).family == "attn"]
    ops = list(cell.ops)
    changed = False
    for i, op in enumerate(ops[1:-1], start=1):
        heads = labels.parse_op(op).heads
        if heads is not None and hidden % heads:
            ops[i] = rng.choice(attn_ok) if attn_ok else rng.choice(usable)
            changed = True
    return CellSpec(cell.matrix, ops) if changed else cell


# --------------------------------------------------------------------------------------------
# Mutation
# --------------------------------------------------------------------------------------------


def _mutate_once(
    genome: Genome, kind: str, rng: random.Random, space: SearchSpaceConfig
) -> tuple[int, int, list[CellSpec]]:
    """Apply one mutation of ``kind``; return (H, E, cells) or raise :class:`_Rejected`."""
    hidden, embedding, cells = genome.hidden_size, genome.embedding_size, list(genome.cells)
    layer = rng.randrange(len(cells))
    cell = cells[layer]
    n = cell.num_nodes
    matrix = [list(row) for row in cell.matrix]
    ops = list(cell.ops)

    if kind == "op":  # covers heads, FFN ratio, kernel and activation: they are all in the label
        node = rng.randrange(1, n - 1)
        choices = [op for op in space_labels(space, hidden) if op != ops[node]]
        if not choices:
            raise _Rejected("the space has a single operation label")
        ops[node] = rng.choice(choices)
        cells[layer] = _cell(matrix, ops)
    elif kind == "add_edge":
        free = [(i, j) for i in range(n) for j in range(i + 1, n) if not matrix[i][j]]
        if not free or cell.num_edges >= space.max_edges:
            raise _Rejected("no room for another edge")
        i, j = rng.choice(free)
        matrix[i][j] = 1
        cells[layer] = _cell(matrix, ops)
    elif kind == "remove_edge":  # may prune nodes that lose their only path
        edges = [(i, j) for i in range(n) for j in range(i + 1, n) if matrix[i][j]]
        i, j = rng.choice(edges)
        matrix[i][j] = 0
        cells[layer] = _cell(matrix, ops)
    elif kind == "add_node":  # the counterpart of pruning: a new node on a fresh path i -> new -> j
        if n >= space.nodes_per_cell or cell.num_edges + 2 > space.max_edges:
            raise _Rejected("the cell is full (nodes_per_cell or max_edges)")
        pos = rng.randrange(1, n)  # the new node's index; nodes pos.. shift up by one
        grown = [[0] * (n + 1) for _ in range(n + 1)]
        shift = lambda v: v + (v >= pos)  # noqa: E731
        for i in range(n):
            for j in range(n):
                if matrix[i][j]:
                    grown[shift(i)][shift(j)] = 1
        grown[rng.randrange(0, pos)][pos] = 1
        grown[pos][rng.randrange(pos + 1, n + 1)] = 1
        ops.insert(pos, rng.choice(space_labels(space, hidden)))
        cells[layer] = _cell(grown, ops)
    elif kind == "hidden_size":
        choices = [h for h in space.hidden_sizes if h != hidden]
        if not choices:
            raise _Rejected("the space has a single hidden size")
        hidden = rng.choice(choices)
        usable = space_labels(space, hidden)
        cells = [_repair_heads(c, hidden, usable, rng) for c in cells]
    elif kind == "embedding_size":
        choices = [e for e in space.embedding_sizes if e != embedding]
        if not choices:
            raise _Rejected("the space has a single embedding size")
        embedding = rng.choice(choices)
    elif kind == "depth":  # one step to a neighbouring allowed depth
        depth = len(cells)
        lower = [d for d in space.num_layers if d < depth]
        upper = [d for d in space.num_layers if d > depth]
        targets = ([max(lower)] if lower else []) + ([min(upper)] if upper else [])
        if not targets:
            raise _Rejected("the space has a single depth")
        target = rng.choice(targets)
        while len(cells) < target:  # duplicate a random layer in place
            i = rng.randrange(len(cells))
            cells.insert(i + 1, cells[i])
        while len(cells) > target:
            del cells[rng.randrange(len(cells))]
    else:
        raise ValueError(f"unknown mutation {kind!r} (known: {', '.join(MUTATIONS)})")
    return hidden, embedding, cells


def mutate(genome: Genome, rng: random.Random, space: SearchSpaceConfig, *,
           param_count: ParamCount | None = None, max_tries: int = DEFAULT_OPERATOR_TRIES) -> Genome:
    """A valid child that differs from ``genome`` by one mutation, drawn uniformly from :data:`MUTATIONS`.

    - ``op``: one node of one layer gets another label of the space grid (valid for H), which
      covers the attention heads, FFN ratio, kernel size and activation;
    - ``add_edge`` / ``remove_edge``: within ``space.max_edges``; a removal may prune nodes
      left off every input -> output path, and is refused when it disconnects the output or
      leaves a layer with no operation;
    - ``add_node``: a new node with a random op on a new path i -> node -> j, within
      ``space.nodes_per_cell`` (it balances the nodes that pruning removes);
    - ``hidden_size`` (attention ops whose heads do not divide the new H are relabelled to a
      head count that does), ``embedding_size``;
    - ``depth``: to the neighbouring allowed depth of ``space.num_layers``, by duplicating
      random layers in place or dropping random layers;
    - ``defense`` (only when ``space.defense_choices`` is set): one of the choices is switched
      on or off; the other kinds keep the parent's defenses;
    - ``training`` (only when ``space.training_choices`` is set): one robust-training method is
      switched on or off; the other kinds keep the parent's training gene.

    An attempt that is invalid, over ``space.param_budget``, or isomorphic to the parent is
    redrawn; after ``max_tries`` attempts a fresh :func:`sample_genome` is returned instead,
    so the result is always a valid genome of the space.
    """
    _check_budget_args(space, param_count)
    parent_hash = genome.hash()
    kinds = MUTATIONS + (("defense",) if space.defense_choices else ()) + (("training",) if space.training_choices else ())
    for _ in range(max_tries):
        kind = rng.choice(kinds)
        try:
            if kind == "defense":
                child = _toggle_defense(genome, rng, space)
            elif kind == "training":
                child = _toggle_training(genome, rng, space)
            else:
                hidden, embedding, cells = _mutate_once(genome, kind, rng, space)
                child = _finish(hidden, embedding, cells, space, param_count, genome.defenses, genome.training)
        except _Rejected as exc:
            logger.debug("mutation %s of %s rejected: %s", kind, parent_hash[:12], exc)
            continue
        if child.hash() != parent_hash:
            return child
    logger.debug("no valid mutation of %s in %d tries; sampling a fresh genome", parent_hash[:12], max_tries)
    return sample_genome(rng, space, param_count=param_count)


def _toggle_defense(genome: Genome, rng: random.Random, space: SearchSpaceConfig) -> Genome:
    """``genome`` with one of ``space.defense_choices`` switched (the always-on defenses stay)."""
    name = rng.choice(space.defense_choices)
    current = set(genome.defenses)
    current ^= {name}
    return dataclasses.replace(genome, defenses=tuple(current | set(space.defenses)))


def _toggle_training(genome: Genome, rng: random.Random, space: SearchSpaceConfig) -> Genome:
    """``genome`` with one of ``space.training_choices`` switched on or off."""
    return dataclasses.replace(genome, training=tuple(set(genome.training) ^ {rng.choice(space.training_choices)}))


# --------------------------------------------------------------------------------------------
# Crossover
# --------------------------------------------------------------------------------------------


def crossover(a: Genome, b: Genome, rng: random.Random, space: SearchSpaceConfig, *,
              param_count: ParamCount | None = None,
              max_tries: int = DEFAULT_OPERATOR_TRIES) -> tuple[Genome, Genome]:
    """Layer-wise uniform crossover (DEAP ``cxUniform`` with ``indpb=0.5``) of two genomes.

    Child 1 starts as a copy of ``a`` and child 2 of ``b``; H and E are each swapped between
    the children with probability 1/2, and so is the cell at every layer position both parents
    have. Depths differ? Each child keeps its own parent's depth: positions beyond the shorter
    parent are not exchanged, so the longer parent's extra layers stay with its child (as
    ``cxUniform`` does on sequences of unequal length). Cells that came from a parent with
    another H have their attention ops repaired to head counts that divide the child's H.

    A draw whose children are invalid or over ``space.param_budget`` is redrawn; after
    ``max_tries`` draws the parents come back unchanged (valid, but clones: the caller
    mutates them, see :func:`make_offspring`).
    """
    _check_budget_args(space, param_count)
    for _ in range(max_tries):
        h1, h2 = (b.hidden_size, a.hidden_size) if rng.random() < 0.5 else (a.hidden_size, b.hidden_size)
        e1, e2 = (b.embedding_size, a.embedding_size) if rng.random() < 0.5 else (a.embedding_size, b.embedding_size)
        cells1, cells2 = list(a.cells), list(b.cells)
        for i in range(min(len(cells1), len(cells2))):
            if rng.random() < 0.5:
                cells1[i], cells2[i] = cells2[i], cells1[i]
        d1, d2 = _cross_defenses(a, b, rng, space)
        t1, t2 = _swap_choices(set(a.training), set(b.training), space.training_choices, rng)
        try:
            usable1, usable2 = space_labels(space, h1), space_labels(space, h2)
            child1 = _finish(h1, e1, [_repair_heads(c, h1, usable1, rng) for c in cells1], space, param_count, d1, t1)
            child2 = _finish(h2, e2, [_repair_heads(c, h2, usable2, rng) for c in cells2], space, param_count, d2, t2)
        except _Rejected as exc:
            logger.debug("crossover of %s and %s rejected: %s", a.hash()[:12], b.hash()[:12], exc)
            continue
        return child1, child2
    return a, b


def _cross_defenses(a: Genome, b: Genome, rng: random.Random,
                    space: SearchSpaceConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Uniform crossover of the defense genes: each choice is swapped between the children with
    probability 1/2 (no draw at all when the space has no defense choices)."""
    return _swap_choices(set(a.defenses), set(b.defenses), space.defense_choices, rng)


def _swap_choices(s1: set[str], s2: set[str], choices: Sequence[str],
                  rng: random.Random) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Uniform crossover of on/off genes: each choice is swapped between the two sets with probability 1/2."""
    for name in choices:
        if rng.random() < 0.5:
            in1, in2 = name in s1, name in s2
            s1 = (s1 | {name}) if in2 else (s1 - {name})
            s2 = (s2 | {name}) if in1 else (s2 - {name})
    return tuple(s1), tuple(s2)


# --------------------------------------------------------------------------------------------
# Offspring
# --------------------------------------------------------------------------------------------


def make_offspring(
    population: Sequence[HasGenome],
    n: int,
    rng: random.Random,
    space: SearchSpaceConfig,
    *,
    generation: int,
    cxpb: float,
    mutpb: float,
    select_parents: SelectParents,
    seen: set[str],
    max_tries: int,
    param_count: ParamCount | None,
) -> list[Proposal]:
    """``n`` valid children whose hashes are all distinct and not in ``seen``.

    Variation in the spirit of DEAP's ``varAnd``, per child::

        with probability cxpb: two parents by select_parents, child = first child of crossover,
                               then mutate it with probability mutpb
        otherwise:             one parent by select_parents, child = mutate(parent)
        if child's hash is in seen (evaluated before) or already proposed now: draw again

    Plain reproduction is not allowed (a clone's hash is always seen), so a child that is not
    crossed over is always mutated, and a crossed-over child that equals a parent is mutated
    too. ``seen`` is not modified. After ``max_tries`` draws for one child without an unseen
    genome, :class:`SearchSpaceExhaustedError` is raised.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not population:
        raise ValueError("make_offspring needs a non-empty population to select parents from")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    for name, p in (("cxpb", cxpb), ("mutpb", mutpb)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    _check_budget_args(space, param_count)
    taken = set(seen)
    proposals: list[Proposal] = []
    for _ in range(n):
        for _ in range(max_tries):
            if rng.random() < cxpb:
                first, second = select_parents(population, 2, rng)
                parents = (first.genome.hash(), second.genome.hash())
                child, _ = crossover(first.genome, second.genome, rng, space, param_count=param_count)
                if rng.random() < mutpb or child.hash() in taken:
                    child = mutate(child, rng, space, param_count=param_count)
            else:
                (parent,) = select_parents(population, 1, rng)
                parents = (parent.genome.hash(),)
                child = mutate(parent.genome, rng, space, param_count=param_count)
            key = child.hash()
            if key not in taken:
                taken.add(key)
                proposals.append(Proposal(genome=child, generation=generation, parents=parents))
                break
        else:
            raise SearchSpaceExhaustedError(
                f"could not draw an unseen genome in {max_tries} tries (evolution.max_resample) with "
                f"{len(taken)} genomes already seen or proposed: the search space seems exhausted (fix: widen "
                "search_space (hidden_sizes, num_layers, op_families, nodes_per_cell, max_edges), lower "
                "evolution.population_size or evolution.generations, or raise evolution.max_resample)"
            )
    return proposals


def sample_unseen(rng: random.Random, space: SearchSpaceConfig, seen: set[str], max_tries: int,
                  param_count: ParamCount | None) -> Genome | None:
    """A random genome whose hash is not in ``seen`` (``max_tries`` draws), or None: the space seems exhausted."""
    for _ in range(max_tries):
        genome = sample_genome(rng, space, param_count=param_count)
        if genome.hash() not in seen:
            return genome
    return None
