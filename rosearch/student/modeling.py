"""The student: an HF ``PreTrainedModel`` built from a :class:`~rosearch.search_space.genome.Genome`.

In the manner of ``transformers/models/bert/modeling_bert.py``: a base model (factorised
embeddings + one searched cell per layer, the cell operations from :mod:`rosearch.student.ops`)
and a sequence-classification head, configured by
:class:`~rosearch.student.configuration.StudentConfig`. Because both are ordinary HF classes, an
exported student reloads with ``from_pretrained`` and works with any tool that takes a HF model.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from rosearch.defense.tokenizer import defended_tokenizer_class
from rosearch.search_space.genome import CellSpec, Genome
from rosearch.student.configuration import StudentConfig
from rosearch.student.ops import build_op

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class StudentEmbeddings(nn.Module):
    """Factorised word embeddings (V x E, then E -> H, as in ALBERT) + positions + token types."""

    def __init__(self, config: StudentConfig, genome: Genome) -> None:
        super().__init__()
        H, E = genome.hidden_size, genome.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.embedding_projection = nn.Linear(E, H)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        B, T = input_ids.shape
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings={self.position_embeddings.num_embeddings} "
                "(fix: truncate inputs to that length)"
            )
        positions = torch.arange(T, device=input_ids.device)  # [T]
        x = self.embedding_projection(self.word_embeddings(input_ids))  # [B, T, H]
        x = x + self.position_embeddings(positions)[None] + self.token_type_embeddings(token_type_ids)  # [B, T, H]
        return self.dropout(self.LayerNorm(x))


class StudentCell(nn.Module):
    """One layer: the cell's DAG of operations, then residual + LayerNorm.

    Nodes are computed in index order (a topological order: edges only point forward); node
    j > 0 applies ``ops[j-1]`` to the sum of its predecessors, the output node sums its own.
    """

    def __init__(self, cell: CellSpec, hidden_size: int, dropout: float, layer_norm_eps: float) -> None:
        super().__init__()
        self.predecessors: tuple[tuple[int, ...], ...] = tuple(cell.predecessors(j) for j in range(cell.num_nodes))
        self.ops = nn.ModuleList(build_op(label, hidden_size, dropout) for label in cell.ops[1:-1])
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        nodes = [x]  # node outputs, each [B, T, H]
        for j, op in enumerate(self.ops, start=1):
            nodes.append(op(sum(nodes[i] for i in self.predecessors[j]), mask))
        out = sum(nodes[i] for i in self.predecessors[-1])  # [B, T, H]
        return self.LayerNorm(x + self.dropout(out))


def init_student_weights(module: nn.Module, std: float) -> None:
    """BERT's scheme for linear/embedding/LayerNorm weights. Convolutions keep PyTorch's
    fan-in-scaled init: a depthwise filter has fan-in k, and std 0.02 would start it near zero.
    (A function, so the weight-sharing supernet starts its shared weights as students start theirs.)
    Modules on the ``meta`` device (the supernet's shape-only students) have no values to set."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, Tensor) and weight.is_meta:
        return
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(mean=0.0, std=std)
        if module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.data.normal_(mean=0.0, std=std)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


class StudentPreTrainedModel(PreTrainedModel):
    """Weight initialisation and HF plumbing shared by the student models."""

    config_class = StudentConfig
    base_model_prefix = "student"

    def _init_weights(self, module: nn.Module) -> None:
        init_student_weights(module, self.config.initializer_range)


class StudentModel(StudentPreTrainedModel):
    """Embeddings and the stack of cells; returns the last hidden state [B, T, H]."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config)
        genome = config.genome_obj
        self.embeddings = StudentEmbeddings(config, genome)
        self.layers = nn.ModuleList(
            StudentCell(cell, genome.hidden_size, config.hidden_dropout_prob, config.layer_norm_eps)
            for cell in genome.cells
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput | tuple[Tensor, ...]:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else getattr(self.config, "use_return_dict", True)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq_len], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()  # [B, T]

        x = self.embeddings(input_ids, token_type_ids)  # [B, T, H]
        hidden_states: tuple[Tensor, ...] = (x,)
        for layer in self.layers:
            x = layer(x, mask)  # [B, T, H]
            hidden_states += (x,)
        hidden_states_out = hidden_states if output_hidden_states else None
        if not return_dict:
            return tuple(t for t in (x, hidden_states_out) if t is not None)
        return BaseModelOutput(last_hidden_state=x, hidden_states=hidden_states_out)


class StudentForSequenceClassification(StudentPreTrainedModel):
    """The student with a BERT-like head: pool, dense H -> H + tanh, dropout, linear to labels."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.student = StudentModel(config)
        H = config.genome_obj.hidden_size
        self.pooler = nn.Linear(H, H)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(H, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.student.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.student.set_input_embeddings(value)

    def pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, T, H] -> [B, H]: mean over real tokens (``pooling="mean"``) or the first token."""
        if self.config.pooling == "cls":
            return hidden[:, 0]
        real = attention_mask.bool().unsqueeze(-1)  # [B, T, 1]
        total = hidden.masked_fill(~real, 0.0).sum(dim=1)  # [B, H]
        return total / real.sum(dim=1).clamp_min(1).to(hidden.dtype)  # [B, H]

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple[Tensor, ...]:
        """Logits [B, num_labels]; with ``labels``, also the loss (cross-entropy, or MSE when
        ``num_labels == 1``); with ``output_hidden_states``, L+1 tensors [B, T, H] (embeddings,
        then each layer) as HF BERT returns them. ``smoothing_copies`` (what a smoothing
        ``DefendedTokenizerFast`` adds: rows come in groups of k copies of one text) makes the
        logits [B / k, num_labels], the log of each group's mean probability."""
        copies = kwargs.pop("smoothing_copies", None)
        return_dict = return_dict if return_dict is not None else getattr(self.config, "use_return_dict", True)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = self.student(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        pooled = torch.tanh(self.pooler(self.pool(outputs.last_hidden_state, attention_mask)))  # [B, H]
        logits = self.classifier(self.dropout(pooled))  # [B, C]
        if copies is not None:
            logits = mean_of_copies(logits, copies)  # [B / k, C]

        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels.view(-1))
        if not return_dict:
            out = tuple(t for t in (logits, outputs.hidden_states) if t is not None)
            return (loss,) + out if loss is not None else out
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def mean_of_copies(logits: Tensor, copies: Tensor | int) -> Tensor:
    """[B, C] logits of groups of k consecutive copies -> [B / k, C]: the log of each group's mean
    probability (``rosearch.defense.smoothing.mean_probability_logits`` in torch; k = 1 unchanged)."""
    counts = torch.as_tensor(copies).flatten()
    k = int(counts[0]) if counts.numel() else 1
    if counts.numel() == 0 or bool((counts != k).any()) or k < 1 or logits.shape[0] % k:
        raise ValueError(f"smoothing_copies {counts.tolist()} do not split {logits.shape[0]} rows into groups of "
                         "each text's copies (fix: tokenize with return_tensors so every text keeps its copies; "
                         "a transformers pipeline keeps them only at batch_size=1, its default)")
    if k == 1:
        return logits
    probabilities = torch.softmax(logits.float(), dim=-1).view(-1, k, logits.shape[-1]).mean(dim=1)
    return torch.log(probabilities.clamp_min(torch.finfo(torch.float32).tiny))


def init_embedding_from_teacher(model: StudentForSequenceClassification | StudentModel, teacher_embedding: Tensor) -> None:
    """Start the student's V x E word embeddings from the teacher's lexical knowledge.

    Each row becomes the coordinates of the teacher's (centred) embedding row on the teacher
    matrix's top-E principal directions, so the student's E dimensions keep as much of the
    teacher's embedding variance as E dimensions can. Coordinates are rescaled to an overall std
    of ``initializer_range`` (the scale the rest of the model expects at initialisation), and the
    sign of each direction is fixed (largest loading positive) so the result is deterministic.
    """
    embedding = model.get_input_embeddings()
    V, E = embedding.weight.shape
    if teacher_embedding.dim() != 2:
        raise ValueError(f"teacher_embedding must be a [vocab, dim] matrix, got shape {tuple(teacher_embedding.shape)}")
    Vt, D = teacher_embedding.shape
    if Vt != V:
        raise ValueError(
            f"teacher embedding has {Vt} rows but the student vocabulary has {V} "
            "(fix: build the student with the teacher's vocab_size)"
        )
    if E > D:
        raise ValueError(
            f"student embedding width E={E} exceeds the teacher embedding width D={D}: PCA can give at most D "
            "components (fix: choose embedding_size <= D)"
        )
    X = teacher_embedding.detach().to(device="cpu", dtype=torch.float64)  # [V, D]
    X = X - X.mean(dim=0, keepdim=True)
    # principal directions = eigenvectors of the D x D scatter matrix: much cheaper than an SVD
    # of the V x D matrix when V is a 30k vocabulary (seconds instead of half a minute on CPU)
    eigenvalues, eigenvectors = torch.linalg.eigh(X.T @ X)  # ascending: [D], [D, D] (columns)
    eigenvalues = eigenvalues.flip(0).clamp_min(0.0)  # [D], descending
    directions = eigenvectors.flip(1)[:, :E].T  # [E, D], rows = top-E principal directions
    signs = torch.sign(directions.gather(1, directions.abs().argmax(dim=1, keepdim=True)))  # [E, 1]
    directions = directions * signs
    coords = X @ directions.T  # [V, E]
    coords = coords * (model.config.initializer_range / coords.std().clamp_min(1e-12))
    with torch.no_grad():
        embedding.weight.copy_(coords.to(embedding.weight.dtype))
    explained = float(eigenvalues[:E].sum() / eigenvalues.sum().clamp_min(1e-12))
    logger.debug("initialised %dx%d student embeddings from teacher PCA (%.1f%% of the given embedding variance)", V, E, 100 * explained)


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForSequenceClassification`` know the student,
    and ``AutoTokenizer`` the defended tokenizer of students with input defenses, so an exported
    student (defenses included) loads through the Auto API and ``pipeline``. Idempotent; call it
    explicitly."""
    # lazy: transformers' Auto* registries are slow to load; only registering the student classes needs them
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    AutoConfig.register(StudentConfig.model_type, StudentConfig, exist_ok=True)
    AutoModel.register(StudentConfig, StudentModel, exist_ok=True)
    AutoModelForSequenceClassification.register(StudentConfig, StudentForSequenceClassification, exist_ok=True)
    AutoTokenizer.register(StudentConfig, fast_tokenizer_class=defended_tokenizer_class(), exist_ok=True)
