"""The weight-sharing supernet: every student of a search space is a slice of one network.

One set of weights at the space's largest shapes (hidden size, embedding width, depth) holds,
for every layer, one operation of every label the space allows (Single-Path One-Shot's choice
blocks); a student of any genome is *taken* from it by slicing (Once-for-All's elastic width and
depth): the first ``E`` embedding columns, the first ``H`` channels of every matrix, the first
``L`` layers. Attention's fused query/key/value matrix and the GLU convolution's two halves are
sliced block by block, so a narrower student keeps the same structure.

The supernet never re-implements a student: :meth:`Supernet.forward` runs the real student code
(:class:`~rosearch.student.modeling.StudentForSequenceClassification`) on the sliced weights with ``torch.func.functional_call``, so the
gradients reach the shared weights, and :meth:`Supernet.extract` copies the same slices into a
stand-alone student, which therefore computes exactly what the supernet computes for its genome.

Weight sharing across a cell's node positions: ``share_positions=True`` (the default) gives one
operation per (layer, label), used at whichever node of the cell carries that label; ``False``
one per (layer, node position, label), which is more weights, each trained less often.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call
from transformers.modeling_utils import no_init_weights

from rosearch.config import SearchSpaceConfig
from rosearch.search_space import labels
from rosearch.search_space.families import FAMILIES
from rosearch.search_space.genome import Genome
from rosearch.student.configuration import StudentConfig
from rosearch.student.modeling import StudentForSequenceClassification, init_student_weights
from rosearch.student.ops import build_op


SKELETONS_KEPT = 4  # students kept for functional_call (each holds its own embedding matrix)


class SupernetCoverageError(ValueError):
    """A genome lies outside the supernet's space (a wider, deeper or unknown choice)."""


@dataclass(frozen=True)
class SupernetShape:
    """What the supernet covers and the student settings it shares with every sub-network."""

    hidden_sizes: tuple[int, ...]
    embedding_sizes: tuple[int, ...]
    num_layers: tuple[int, ...]
    positions: int  # intermediate nodes per cell (search_space.nodes_per_cell - 2)
    op_labels: tuple[str, ...]
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    num_labels: int
    pad_token_id: int
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    share_positions: bool = True

    @property
    def max_hidden(self) -> int:
        return max(self.hidden_sizes)

    @property
    def max_embedding(self) -> int:
        return max(self.embedding_sizes)

    @property
    def max_layers(self) -> int:
        return max(self.num_layers)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupernetShape:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    @classmethod
    def of_space(cls, space: SearchSpaceConfig, *, share_positions: bool = True, **student: Any) -> SupernetShape:
        """The shape covering ``space``; ``student`` gives vocab_size, num_labels, ... (the run's)."""
        op_labels = labels.op_labels(space.op_families, space.attention_heads, space.kernel_sizes, space.ffn_ratios,
                                     space.activations)
        return cls(hidden_sizes=tuple(space.hidden_sizes), embedding_sizes=tuple(space.embedding_sizes),
                   num_layers=tuple(space.num_layers), positions=space.nodes_per_cell - 2, op_labels=op_labels,
                   share_positions=share_positions, **student)

    def slot(self, position: int, label: str) -> str:
        """The name of the shared operation a node at ``position`` (1-based) with ``label`` uses."""
        return label if self.share_positions else f"p{position}_{label}"

    def check_covers(self, genome: Genome) -> None:
        """Raise :class:`SupernetCoverageError` naming the first choice of ``genome`` the supernet lacks."""
        problems = []
        if genome.hidden_size > self.max_hidden:
            problems.append(f"hidden_size {genome.hidden_size} > {self.max_hidden}")
        if genome.embedding_size > self.max_embedding:
            problems.append(f"embedding_size {genome.embedding_size} > {self.max_embedding}")
        if genome.num_layers > self.max_layers:
            problems.append(f"{genome.num_layers} layers > {self.max_layers}")
        known = set(self.op_labels)
        for layer, cell in enumerate(genome.cells):
            if cell.num_nodes - 2 > self.positions:
                problems.append(f"layer {layer} has {cell.num_nodes - 2} operation nodes > {self.positions}")
            problems += [f"layer {layer} op {op!r} is not in the space" for op in cell.ops[1:-1] if op not in known]
        if problems:
            raise SupernetCoverageError(
                f"genome {genome.hash()[:12]} is outside the supernet's space: {'; '.join(problems)} "
                "(fix: train the supernet on a search space that contains it)")

    def student_config(self, genome: Genome) -> StudentConfig:
        """The stand-alone student's config for ``genome`` (the architecture only: no defenses, no training)."""
        return StudentConfig(
            genome=genome.architecture().to_dict(), vocab_size=self.vocab_size,
            max_position_embeddings=self.max_position_embeddings, type_vocab_size=self.type_vocab_size,
            num_labels=self.num_labels, pad_token_id=self.pad_token_id, hidden_dropout_prob=self.dropout,
            layer_norm_eps=self.layer_norm_eps, initializer_range=self.initializer_range,
        )


class _SupernetLayer(nn.Module):
    """One layer's choice block: every shared operation of the layer, and its LayerNorm."""

    def __init__(self, shape: SupernetShape) -> None:
        super().__init__()
        H = shape.max_hidden
        positions = [0] if shape.share_positions else range(1, shape.positions + 1)
        ops: dict[str, nn.Module] = {}
        for position in positions:
            for label in shape.op_labels:
                ops[shape.slot(position, label)] = build_op(label, H, shape.dropout)
        self.ops = nn.ModuleDict(ops)
        self.LayerNorm = nn.LayerNorm(H, eps=shape.layer_norm_eps)


class Supernet(nn.Module):
    """The shared weights of every student of a :class:`SupernetShape` (module docstring)."""

    def __init__(self, shape: SupernetShape) -> None:
        super().__init__()
        self.shape = shape
        H, E = shape.max_hidden, shape.max_embedding
        self.word_embeddings = nn.Embedding(shape.vocab_size, E, padding_idx=shape.pad_token_id)
        self.embedding_projection = nn.Linear(E, H)
        self.position_embeddings = nn.Embedding(shape.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, H)
        self.embedding_norm = nn.LayerNorm(H, eps=shape.layer_norm_eps)
        self.layers = nn.ModuleList(_SupernetLayer(shape) for _ in range(shape.max_layers))
        self.pooler = nn.Linear(H, H)
        self.classifier = nn.Linear(H, shape.num_labels)
        for module in self.modules():
            init_student_weights(module, shape.initializer_range)
        self._skeletons: OrderedDict[str, StudentForSequenceClassification] = OrderedDict()

    @property
    def config(self) -> SupernetShape:
        """For :func:`~rosearch.student.modeling.init_embedding_from_teacher` (reads ``initializer_range``)."""
        return self.shape

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    # -- taking a student out -------------------------------------------------------------------

    def skeleton(self, genome: Genome) -> StudentForSequenceClassification:
        """The student module of ``genome`` whose own (uninitialised) weights are never read: its code and
        shapes, for :func:`torch.func.functional_call`; the last few are kept."""
        key = genome.architecture().hash()
        cached = self._skeletons.get(key)
        if cached is None:
            cached = _uninitialised_student(self.shape, genome)
            self._skeletons[key] = cached
            if len(self._skeletons) > SKELETONS_KEPT:
                self._skeletons.popitem(last=False)
        else:
            self._skeletons.move_to_end(key)
        cached.train(self.training)
        return cached

    def sub_parameters(self, genome: Genome) -> dict[str, Tensor]:
        """The student of ``genome``'s parameters, named as its state dict names them: slices (views or
        block concatenations) of the shared weights, so gradients through them reach the supernet."""
        self.shape.check_covers(genome)
        shared = dict(self.named_parameters())
        out = {}
        for name, param in self.skeleton(genome).named_parameters():
            source, blocks = source_of(self.shape, name, genome)
            out[name] = _slice(shared[source], tuple(param.shape), blocks)
        return out

    def forward(self, genome: Genome, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False) -> Any:
        """The student of ``genome`` on this batch, computed with the shared weights (gradients reach them)."""
        skeleton = self.skeleton(genome)
        kwargs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids,
                  "output_hidden_states": output_hidden_states, "return_dict": True}
        return functional_call(skeleton, self.sub_parameters(genome), (input_ids,), kwargs, strict=True)

    def extract(self, genome: Genome, device: torch.device | str = "cpu") -> StudentForSequenceClassification:
        """A stand-alone student of ``genome`` holding copies of its slices of the shared weights (eval mode)."""
        return extract_student(self.shape, dict(self.named_parameters()), genome, device=device)


def extract_student(shape: SupernetShape, shared: Mapping[str, Tensor], genome: Genome, *,
                    device: torch.device | str = "cpu") -> StudentForSequenceClassification:
    """A stand-alone student of ``genome`` whose weights are copied from ``shared`` (a supernet's named
    parameters: live ones, or a worker's tensors over the object store's read-only arrays)."""
    shape.check_covers(genome)
    student = _uninitialised_student(shape, genome)
    state = {}
    for name, param in student.named_parameters():
        source, blocks = source_of(shape, name, genome)
        state[name] = _slice(shared[source].detach(), tuple(param.shape), blocks)
    student.load_state_dict(state, strict=True)  # copies
    return student.to(device).eval()


def _uninitialised_student(shape: SupernetShape, genome: Genome) -> StudentForSequenceClassification:
    """A student of ``genome`` without initialising its weights (they are overwritten or never read):
    ~20 ms instead of ~100 ms, once per training step. ``meta`` tensors would save the memory but
    cost more time (torch's device mode intercepts every call)."""
    with no_init_weights():
        return StudentForSequenceClassification(shape.student_config(genome))


def source_of(shape: SupernetShape, name: str, genome: Genome) -> tuple[str, int]:
    """The shared parameter a student parameter is sliced from, and how many blocks its first axis has."""
    parts = name.split(".")
    if parts[0] in ("pooler", "classifier"):
        return name, 1
    if parts[1] == "embeddings":  # student.embeddings.<module>.<param>
        module = "embedding_norm" if parts[2] == "LayerNorm" else parts[2]
        return f"{module}.{parts[3]}", 1
    layer = int(parts[2])  # student.layers.<l>.ops.<j>.<rest> | student.layers.<l>.LayerNorm.<param>
    if parts[3] == "LayerNorm":
        return f"layers.{layer}.LayerNorm.{parts[4]}", 1
    index = int(parts[4])
    label = genome.cells[layer].ops[index + 1]
    rest = ".".join(parts[5:])
    blocks = FAMILIES[labels.parse_op(label).family].blocks_of(rest)
    return f"layers.{layer}.ops.{shape.slot(index + 1, label)}.{rest}", blocks

def _slice(weight: Tensor, shape: tuple[int, ...], blocks: int) -> Tensor:
    """The leading ``shape`` corner of ``weight``; with ``blocks`` > 1 the first axis is that many equal
    blocks (attention's q|k|v, GLU's value|gate), each cut to its leading ``shape[0] // blocks`` rows."""
    if len(shape) != weight.dim():
        raise ValueError(f"cannot slice a {tuple(weight.shape)} weight to {shape}")
    rest = tuple(slice(0, n) for n in shape[1:])
    if blocks == 1:
        return weight[(slice(0, shape[0]), *rest)]
    full, part = weight.shape[0] // blocks, shape[0] // blocks
    return torch.cat([weight[(slice(b * full, b * full + part), *rest)] for b in range(blocks)], dim=0)


def covered_labels(genomes: Iterable[Genome]) -> set[str]:
    """Every operation label the genomes use (for coverage checks of a sampler)."""
    return {op for g in genomes for cell in g.cells for op in cell.ops[1:-1]}
