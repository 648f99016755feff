"""The one-gene neighbours of a genome: every genome that differs from it in exactly one gene.

An ablation asks what one gene does, so each neighbour changes one thing and keeps the rest:

- ``op``: the first operation node of the first layer (a fixed, documented position, so two runs
  compare the same node) gets each other label the space allows at that hidden size. When there are
  more than :data:`MAX_OP_VALUES` of them, a deterministic subset: the labels of the same family that
  differ in exactly one parameter (heads, kernel, ratio or activation), plus, for each other family,
  its label closest to the current one (fewest differing parameters; the first in the space's order);
- ``hidden``: each other value of ``search_space.hidden_sizes``;
- ``embedding``: each other value of ``search_space.embedding_sizes``;
- ``depth``: the nearest allowed depth below (the last layer dropped) and above (the last layer
  repeated), as the depth mutation steps;
- ``defense``: each of ``search_space.defense_choices`` switched on or off;
- ``training``: each of ``search_space.training_choices`` switched on or off.

A neighbour that is not a valid genome, is over ``search_space.param_budget`` or is the base itself
(an isomorphic cell) is kept in the list with ``skipped`` saying why, so the table shows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rosearch.config import SearchSpaceConfig
from rosearch.errors import UserError
from rosearch.search_space import labels
from rosearch.search_space.genome import CellSpec, Genome, InvalidGenomeError

GENES: tuple[str, ...] = ("op", "hidden", "embedding", "depth", "defense", "training")
MAX_OP_VALUES = 12  # every other label up to this many; beyond it the documented subset


class AblationGeneError(UserError, ValueError):
    """An ablation was asked for an unknown gene, or around a genome outside the search space."""


@dataclass(frozen=True)
class Neighbour:
    """One changed gene: ``genome`` to evaluate, or ``skipped`` with the reason it is not evaluated."""

    gene: str
    change: str  # e.g. "layer 0 node 1: conv_k3_gelu -> ffn_r2_gelu", "hidden_size 128 -> 256"
    genome: Genome | None
    skipped: str = ""


def parse_genes(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"op,hidden"`` (or a list) as gene names; None or ``"all"``: every gene; ``"none"``: the base only."""
    if text is None:
        return GENES
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names in (["all"], []):
        return GENES
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in GENES]
    if unknown:
        raise AblationGeneError(f"--genes: unknown gene(s) {unknown} (known: {', '.join(GENES)}, or 'all' / 'none')")
    return tuple(dict.fromkeys(names))


def check_in_space(genome: Genome, space: SearchSpaceConfig) -> None:
    """Refuse a base genome whose genes the space does not allow (its neighbours would not be the space's)."""
    checks = (("hidden_size", genome.hidden_size, "hidden_sizes"),
              ("embedding_size", genome.embedding_size, "embedding_sizes"),
              ("num_layers", genome.num_layers, "num_layers"))
    for name, value, field in checks:
        allowed = getattr(space, field)
        if value not in allowed:
            raise AblationGeneError(f"--genome: {name}={value} is not in search_space.{field} {list(allowed)} (fix: "
                                    f"ablate a genome of the space, or add {value} to search_space.{field})")
    optional = set(genome.defenses) - set(space.defenses) - set(space.defense_choices)
    missing = set(space.defenses) - set(genome.defenses)
    if optional or missing:
        raise AblationGeneError(f"--genome: defenses {list(genome.defenses)} do not fit search_space.defenses "
                                f"{list(space.defenses)} + defense_choices {list(space.defense_choices)}")
    extra = set(genome.training) - set(space.training_choices)
    if extra:
        raise AblationGeneError(f"--genome: training {sorted(extra)} is not in search_space.training_choices "
                                f"{list(space.training_choices)}")


def one_gene_neighbours(genome: Genome, space: SearchSpaceConfig, genes: Sequence[str] = GENES, *,
                        param_count: Callable[[Genome], int] | None = None) -> list[Neighbour]:
    """Every one-gene neighbour of ``genome`` for ``genes``, in gene order (see the module docstring)."""
    if space.param_budget is not None and param_count is None:
        raise ValueError("search_space.param_budget is set, so one_gene_neighbours needs param_count= to enforce it")
    unknown = [g for g in genes if g not in GENES]
    if unknown:
        raise AblationGeneError(f"--genes: unknown gene(s) {unknown} (known: {', '.join(GENES)})")
    makers = {"op": _op_changes, "hidden": _hidden_changes, "embedding": _embedding_changes,
              "depth": _depth_changes, "defense": _defense_changes, "training": _training_changes}
    out = []
    for gene in genes:
        for change, build in makers[gene](genome, space):
            out.append(_checked(gene, change, build, genome, space, param_count))
    return out


Change = tuple[str, Callable[[], Genome]]


def _checked(gene: str, change: str, build: Callable[[], Genome], base: Genome, space: SearchSpaceConfig,
             param_count: Callable[[Genome], int] | None) -> Neighbour:
    try:
        genome = build()
    except InvalidGenomeError as exc:
        return Neighbour(gene, change, None, f"invalid genome: {exc}")
    if genome.hash() == base.hash():
        return Neighbour(gene, change, None, "the same genome as the base (isomorphic cell)")
    if space.param_budget is not None and param_count is not None:
        count = param_count(genome)
        if count > space.param_budget:
            return Neighbour(gene, change, None,
                             f"{count:,} parameters exceed search_space.param_budget={space.param_budget:,}")
    return Neighbour(gene, change, genome)


def op_values(current: str, usable: Sequence[str]) -> list[str]:
    """The labels an ``op`` ablation tries instead of ``current`` (all, or the subset of the module docstring)."""
    others = [op for op in usable if op != current]
    if len(others) <= MAX_OP_VALUES:
        return others
    spec = labels.parse_op(current)

    def distance(label: str) -> int:
        other = labels.parse_op(label)
        return sum(a is not None and b is not None and a != b for a, b in (
            (spec.heads, other.heads), (spec.kernel, other.kernel), (spec.ratio, other.ratio),
            (spec.activation, other.activation)))

    same = [op for op in others if labels.parse_op(op).family == spec.family and distance(op) == 1]
    nearest: dict[str, str] = {}
    for op in others:
        family = labels.parse_op(op).family
        if family != spec.family and (family not in nearest or distance(op) < distance(nearest[family])):
            nearest[family] = op
    chosen = set(same) | set(nearest.values())
    return [op for op in others if op in chosen]


def _usable_labels(space: SearchSpaceConfig, hidden: int) -> list[str]:
    grid = labels.op_labels(space.op_families, space.attention_heads, space.kernel_sizes, space.ffn_ratios,
                            space.activations)
    return [op for op in grid if hidden % (labels.parse_op(op).heads or 1) == 0]


def _op_changes(genome: Genome, space: SearchSpaceConfig) -> list[Change]:
    cell = genome.cells[0]
    node = 1  # the first operation node of the first layer
    current = cell.ops[node]

    def relabel(op: str) -> Callable[[], Genome]:
        ops = list(cell.ops)
        ops[node] = op
        return lambda: dataclasses.replace(genome, cells=(CellSpec(cell.matrix, ops), *genome.cells[1:]))

    return [(f"layer 0 node {node}: {current} -> {op}", relabel(op))
            for op in op_values(current, _usable_labels(space, genome.hidden_size))]


def _hidden_changes(genome: Genome, space: SearchSpaceConfig) -> list[Change]:
    return [(f"hidden_size {genome.hidden_size} -> {h}", lambda h=h: dataclasses.replace(genome, hidden_size=h))
            for h in space.hidden_sizes if h != genome.hidden_size]


def _embedding_changes(genome: Genome, space: SearchSpaceConfig) -> list[Change]:
    return [(f"embedding_size {genome.embedding_size} -> {e}",
             lambda e=e: dataclasses.replace(genome, embedding_size=e))
            for e in space.embedding_sizes if e != genome.embedding_size]


def _depth_changes(genome: Genome, space: SearchSpaceConfig) -> list[Change]:
    depth = genome.num_layers
    lower = [d for d in space.num_layers if d < depth]
    upper = [d for d in space.num_layers if d > depth]
    changes: list[Change] = []
    if lower:
        target = max(lower)
        changes.append((f"num_layers {depth} -> {target} (last layers dropped)",
                        lambda: dataclasses.replace(genome, cells=genome.cells[:target])))
    if upper:
        target_up = min(upper)
        changes.append((f"num_layers {depth} -> {target_up} (last layer repeated)", lambda: dataclasses.replace(
            genome, cells=genome.cells + (genome.cells[-1],) * (target_up - depth))))
    return changes


def _defense_changes(genome: Genome, space: SearchSpaceConfig) -> list[Change]:
    def toggled(name: str) -> Callable[[], Genome]:
        return lambda: dataclasses.replace(genome, defenses=tuple(set(genome.defenses) ^ {name}))

    return [(f"defense {name} {'off' if name in genome.defenses else 'on'}", toggled(name))
            for name in space.defense_choices]


def _training_changes(genome: Genome, space: SearchSpaceConfig) -> list[Change]:
    def toggled(name: str) -> Callable[[], Genome]:
        return lambda: dataclasses.replace(genome, training=tuple(set(genome.training) ^ {name}))

    return [(f"training {name} {'off' if name in genome.training else 'on'}", toggled(name))
            for name in space.training_choices]
