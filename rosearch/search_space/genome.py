"""The genome of a student: global shapes plus one small DAG cell per layer.

A :class:`CellSpec` is the NASBench-101 ``ModelSpec`` idea applied to transformer layers: an
upper-triangular adjacency matrix plus one operation label per node, which validates itself and
prunes dead nodes on construction, so an existing spec is always a runnable, minimal cell. Its
:meth:`CellSpec.hash` is invariant to relabelling the intermediate nodes, so isomorphic cells
(the same computation written with a different node numbering) get one key and are trained once.

A :class:`Genome` adds the hidden size H, the factorised embedding width E and the depth (one
cell per layer); :meth:`Genome.hash` is the single key used for deduplication, results and
checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from rosearch.defense.names import canonical_defenses
from rosearch.errors import UserError
from rosearch.search_space import labels


class InvalidGenomeError(UserError, ValueError):
    """A cell or genome is malformed; the message names the offending value and the fix."""


# --------------------------------------------------------------------------------------------
# Graph hashing (NASBench graph_util.hash_module, with string labels and sha256)
# --------------------------------------------------------------------------------------------


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def graph_hash(matrix: Sequence[Sequence[int]], node_labels: Sequence[str]) -> str:
    """A relabelling-invariant hash of a node-labelled directed graph (Weisfeiler-Lehman style).

    Each node starts from a hash of (out-degree, in-degree, label); then, once per node, every
    node's hash becomes the hash of its sorted in-neighbour hashes, its sorted out-neighbour
    hashes and its own hash. The graph's hash is the hash of the sorted node hashes. Renumbering
    the nodes cannot change it; non-isomorphic graphs almost always differ, but not always:
    colour refinement cannot tell apart graphs whose nodes have the same neighbourhoods at every
    depth (see ``tests/test_genome.py::test_known_collision``). Works on any square 0/1 matrix.
    """
    n = len(matrix)
    in_degree = [sum(matrix[i][j] for i in range(n)) for j in range(n)]
    out_degree = [sum(row) for row in matrix]
    hashes = [_sha256(repr((out_degree[v], in_degree[v], node_labels[v]))) for v in range(n)]
    for _ in range(n):
        hashes = [
            _sha256(
                "".join(sorted(hashes[u] for u in range(n) if matrix[u][v]))
                + "|" + "".join(sorted(hashes[w] for w in range(n) if matrix[v][w]))
                + "|" + hashes[v]
            )
            for v in range(n)
        ]
    return _sha256(repr(sorted(hashes)))


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellSpec:
    """One layer's cell: a DAG over ``num_nodes`` nodes, node 0 the input, the last the output.

    ``matrix[i][j] == 1`` is an edge i -> j (only i < j: strictly upper-triangular, so node
    order is a topological order). ``ops[0]`` is ``labels.INPUT``, ``ops[-1]`` is
    ``labels.OUTPUT`` and every other entry is an operation label (:mod:`labels`).

    Semantics: the input node holds the layer input [B, T, H]; each intermediate node applies
    its op to the SUM of its predecessors' outputs; the output node is the sum of its
    predecessors (an input -> output edge is allowed, and is a skip inside the cell); the
    model then adds the layer's residual and applies LayerNorm.

    Construction validates (raising :class:`InvalidGenomeError`) and then prunes every node
    that lies on no input -> output path, as NASBench does, so two specs that differ only in
    dead nodes are equal. Specs that differ only in the numbering of intermediate nodes are not
    ``==`` but have the same :meth:`hash`.
    """

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        matrix = _normalise_matrix(self.matrix)
        ops = _normalise_ops(self.ops)
        _validate_cell(matrix, ops)
        matrix, ops = _prune(matrix, ops)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "ops", ops)

    @property
    def num_nodes(self) -> int:
        """Nodes after pruning, input and output included."""
        return len(self.ops)

    @property
    def num_edges(self) -> int:
        return sum(sum(row) for row in self.matrix)

    def predecessors(self, j: int) -> tuple[int, ...]:
        """The nodes whose outputs are summed to form node ``j``'s input, in increasing order."""
        if not 0 <= j < self.num_nodes:
            raise ValueError(f"node {j} does not exist; this cell has nodes 0..{self.num_nodes - 1}")
        return tuple(i for i in range(j) if self.matrix[i][j])

    def hash(self) -> str:
        """Hex sha256 key, equal for cells that are the same up to renumbering their nodes.

        Computed once per (immutable) cell: graph hashing costs ~0.3 ms, and a search asks often.
        """
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = graph_hash(self.matrix, self.ops)
            object.__setattr__(self, "_hash", cached)
        return cached

    def permute(self, perm: Sequence[int]) -> CellSpec:
        """The same cell with old node ``v`` renumbered ``perm[v]`` (input and output stay put).

        Only renumberings that keep every edge pointing forward give a valid spec (any
        topological order of the DAG does); others raise :class:`InvalidGenomeError`.
        """
        n = self.num_nodes
        if sorted(perm) != list(range(n)) or perm[0] != 0 or perm[n - 1] != n - 1:
            raise InvalidGenomeError(
                f"permutation {list(perm)} must reorder nodes 0..{n - 1} and keep 0 and {n - 1} in place"
            )
        matrix = [[0] * n for _ in range(n)]
        ops = [""] * n
        for v in range(n):
            ops[perm[v]] = self.ops[v]
            for w in range(n):
                if self.matrix[v][w]:
                    if perm[v] > perm[w]:
                        raise InvalidGenomeError(
                            f"permutation {list(perm)} turns edge {v}->{w} into {perm[v]}->{perm[w]}, "
                            "which points backwards (fix: use a topological order of the cell)"
                        )
                    matrix[perm[v]][perm[w]] = 1
        return CellSpec(matrix, ops)

    def to_dict(self) -> dict[str, Any]:
        return {"matrix": [list(row) for row in self.matrix], "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, data: Any) -> CellSpec:
        _check_keys(data, ("matrix", "ops"), "cell")
        return cls(data["matrix"], data["ops"])


def _normalise_matrix(matrix: Any) -> tuple[tuple[int, ...], ...]:
    """Nested sequences (lists, tuples, numpy arrays) of 0/1 or bools -> tuple of int tuples."""
    if isinstance(matrix, (str, bytes)):
        raise InvalidGenomeError(f"cell matrix must be a square list of 0/1 rows, got {matrix!r}")
    try:
        rows = [list(row) for row in matrix]
    except TypeError as exc:
        raise InvalidGenomeError(f"cell matrix must be a square list of 0/1 rows, got {matrix!r}") from exc
    n = len(rows)
    for i, row in enumerate(rows):
        if len(row) != n:
            raise InvalidGenomeError(
                f"cell matrix must be square: it has {n} rows but row {i} has {len(row)} entries"
            )
        for j, value in enumerate(row):
            if not isinstance(value, numbers.Integral) or value not in (0, 1):  # bools are fine
                raise InvalidGenomeError(f"cell matrix entry [{i}][{j}] must be 0 or 1, got {value!r}")
    return tuple(tuple(int(v) for v in row) for row in rows)


def _normalise_ops(ops: Any) -> tuple[str, ...]:
    if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence):
        raise InvalidGenomeError(f"cell ops must be a list of labels, got {ops!r}")
    for i, op in enumerate(ops):
        if not isinstance(op, str):
            raise InvalidGenomeError(f"cell ops[{i}] must be a label string, got {op!r}")
    return tuple(ops)


def _validate_cell(matrix: tuple[tuple[int, ...], ...], ops: tuple[str, ...]) -> None:
    n = len(matrix)
    if n < 2:
        raise InvalidGenomeError(f"a cell needs at least an input and an output node, got {n} node(s)")
    if len(ops) != n:
        raise InvalidGenomeError(f"cell has {n} nodes in its matrix but {len(ops)} ops {list(ops)}")
    for i in range(n):
        for j in range(i + 1):
            if matrix[i][j]:
                raise InvalidGenomeError(
                    f"cell matrix must be strictly upper-triangular (edges i->j with i < j only), "
                    f"but entry [{i}][{j}] is 1"
                )
    if ops[0] != labels.INPUT:
        raise InvalidGenomeError(f"cell ops[0] must be {labels.INPUT!r}, got {ops[0]!r}")
    if ops[-1] != labels.OUTPUT:
        raise InvalidGenomeError(f"cell ops[{n - 1}] (the last) must be {labels.OUTPUT!r}, got {ops[-1]!r}")
    for i, op in enumerate(ops[1:-1], start=1):
        if op in (labels.INPUT, labels.OUTPUT):
            raise InvalidGenomeError(
                f"cell ops[{i}] is {op!r}, which may only label the first/last node (fix: use an operation)"
            )
        try:
            labels.parse_op(op)
        except labels.UnknownOpError as exc:
            raise InvalidGenomeError(f"cell ops[{i}]: {exc}") from exc


def _prune(
    matrix: tuple[tuple[int, ...], ...], ops: tuple[str, ...]
) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]:
    """Keep only nodes on some input -> output path (NASBench ``ModelSpec._prune``)."""
    n = len(matrix)
    from_input = {0}  # edges point forward, so one sweep in node order finds all
    for j in range(1, n):
        if any(matrix[i][j] for i in from_input):
            from_input.add(j)
    to_output = {n - 1}
    for i in range(n - 2, -1, -1):
        if any(matrix[i][j] for j in to_output):
            to_output.add(i)
    if n - 1 not in from_input:
        raise InvalidGenomeError(
            f"cell output (node {n - 1}) is unreachable from the input (node 0) in matrix "
            f"{[list(row) for row in matrix]} (fix: add an edge path from node 0 to node {n - 1})"
        )
    keep = sorted(from_input & to_output)
    pruned_matrix = tuple(tuple(matrix[i][j] for j in keep) for i in keep)
    return pruned_matrix, tuple(ops[i] for i in keep)


def _check_keys(data: Any, expected: tuple[str, ...], what: str) -> None:
    if not isinstance(data, dict):
        raise InvalidGenomeError(f"{what} must be a mapping with keys {list(expected)}, got {data!r}")
    missing = [k for k in expected if k not in data]
    unknown = sorted(str(k) for k in data if k not in expected)
    if missing or unknown:
        raise InvalidGenomeError(
            f"{what}: missing keys {missing}, unknown keys {unknown} (expected exactly {list(expected)})"
        )


# --------------------------------------------------------------------------------------------
# Genomes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Genome:
    """A student architecture: hidden size H, embedding width E and one cell per layer.

    The embedding is factorised as in ALBERT (vocab x E, then a linear E -> H), since the
    embedding dominates the parameters of a small student.
    """

    hidden_size: int
    embedding_size: int
    cells: tuple[CellSpec, ...]
    defenses: tuple[str, ...] = ()  # input defenses the student carries (rosearch.defense), in application order
    # robust-training methods (rosearch.distill.methods.METHODS) this student distils with, on top of
    # distill.methods: the training gene of search_space.training_choices; sorted, so order never matters
    training: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "defenses", canonical_defenses(self.defenses, "genome defenses"))
        except ValueError as exc:
            raise InvalidGenomeError(str(exc)) from None
        object.__setattr__(self, "training", _canonical_training(self.training))
        for name in ("hidden_size", "embedding_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidGenomeError(f"genome {name} must be a positive integer, got {value!r}")
        if isinstance(self.cells, (str, bytes)) or not isinstance(self.cells, Sequence) or not self.cells:
            raise InvalidGenomeError(
                f"genome cells must be a non-empty list of CellSpec (one per layer), got {self.cells!r}"
            )
        for layer, cell in enumerate(self.cells):
            if not isinstance(cell, CellSpec):
                raise InvalidGenomeError(f"genome layer {layer}: expected a CellSpec, got {cell!r}")
            for op in cell.ops[1:-1]:
                heads = labels.parse_op(op).heads
                if heads is not None and self.hidden_size % heads:
                    raise InvalidGenomeError(
                        f"genome layer {layer}: op {op!r} needs hidden_size divisible by {heads} heads, "
                        f"but hidden_size is {self.hidden_size} (fix: use a multiple of {heads} "
                        "or an attention op with fewer heads)"
                    )
        object.__setattr__(self, "cells", tuple(self.cells))

    @property
    def num_layers(self) -> int:
        return len(self.cells)

    def hash(self) -> str:
        """32 hex chars of sha256 over (H, E, per-layer cell hashes): THE key of a genome (computed once)."""
        cached = self.__dict__.get("_hash")
        if cached is not None:
            return cached
        parts: list[Any] = [self.hidden_size, self.embedding_size, [cell.hash() for cell in self.cells]]
        if self.defenses:  # the genes enter the hash only when set: a genome without them is its shape
            parts.append(list(self.defenses))
        if self.training:  # and cells alone (its hash also seeds its candidate's training)
            parts.append({"training": list(self.training)})
        cached = _sha256(json.dumps(parts))[:32]
        object.__setattr__(self, "_hash", cached)
        return cached

    def architecture(self) -> Genome:
        """The same network without defenses or training gene (what is built and counted as a model)."""
        return Genome(self.hidden_size, self.embedding_size, self.cells)

    def op_labels_used(self) -> tuple[str, ...]:
        """Distinct operation labels over all layers, sorted."""
        return tuple(sorted({op for cell in self.cells for op in cell.ops[1:-1]}))

    def family_counts(self) -> dict[str, int]:
        """How many nodes of each operation family (attn, conv, ...) the genome has, by family."""
        counts = Counter(labels.parse_op(op).family for cell in self.cells for op in cell.ops[1:-1])
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hidden_size": self.hidden_size,
            "embedding_size": self.embedding_size,
            "cells": [cell.to_dict() for cell in self.cells],
        }
        if self.defenses:
            out["defenses"] = list(self.defenses)
        if self.training:
            out["training"] = list(self.training)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Genome:
        keys = ("hidden_size", "embedding_size", "cells")
        optional = tuple(k for k in ("defenses", "training") if isinstance(data, dict) and k in data)
        _check_keys(data, keys + optional, "genome")
        cells = data["cells"]
        if isinstance(cells, (str, bytes, dict)) or not isinstance(cells, Sequence):
            raise InvalidGenomeError(f"genome cells must be a list of cell mappings, got {cells!r}")
        parsed = []
        for layer, cell in enumerate(cells):
            try:
                parsed.append(CellSpec.from_dict(cell))
            except InvalidGenomeError as exc:
                raise InvalidGenomeError(f"genome layer {layer}: {exc}") from exc
        return cls(data["hidden_size"], data["embedding_size"], tuple(parsed), data.get("defenses", ()),
                   data.get("training", ()))

    def to_json(self) -> str:
        """Compact, key-sorted JSON; ``Genome.from_json(g.to_json()) == g``."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Genome:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidGenomeError(f"genome JSON is not valid JSON ({exc}): {text[:80]!r}") from exc
        return cls.from_dict(data)


def _canonical_training(names: object) -> tuple[str, ...]:
    """The training gene as a sorted, duplicate-free tuple of method names (checked against the
    registry where a config is at hand: config validation and :mod:`rosearch.prepare.preflight`)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise InvalidGenomeError(f"genome training must be a list of distill method names, got {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not n.isidentifier()]
    if bad:
        raise InvalidGenomeError(f"genome training: {bad} are not method names (e.g. adv_train, rift)")
    if len(set(names)) != len(names):
        raise InvalidGenomeError(f"genome training: method names repeat: {list(names)}")
    return tuple(sorted(names))
