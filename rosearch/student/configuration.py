"""The student's configuration: a HF ``PretrainedConfig`` that carries the genome.

In the manner of ``transformers/models/bert/configuration_bert.py``: the config alone, with no
model code, so that what an exported ``config.json`` holds is defined in one short file. The
networks it configures are in :mod:`rosearch.student.modeling`.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from rosearch.search_space.genome import Genome, InvalidGenomeError

POOLING_MODES: tuple[str, ...] = ("mean", "cls")
_GENOME_DERIVED = ("hidden_size", "embedding_size", "num_hidden_layers")


class StudentConfigError(ValueError):
    """A :class:`StudentConfig` value is missing or impossible."""


class StudentConfig(PretrainedConfig):
    r"""Configuration of a searched student.

    Args:
        genome (`dict`, *optional*):
            The architecture, as ``Genome.to_dict()``: hidden size, embedding width and one cell
            per layer. Optional only so that HF can build a default config to diff against;
            a model cannot be built without it.
        vocab_size (`int`, *optional*, defaults to 30522):
            Vocabulary size; the teacher's, so that the student reads the teacher's tokens.
        max_position_embeddings (`int`, *optional*, defaults to 512):
            Longest sequence the learned position embeddings cover.
        type_vocab_size (`int`, *optional*, defaults to 2):
            Number of token types (segments) of sentence-pair tasks.
        pad_token_id (`int`, *optional*, defaults to 0):
            Id of the padding token (its word-embedding row gets no gradient).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on embeddings, inside operations (attention weights, FFN), on each cell's
            output and in the classification head.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of every LayerNorm.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal initialisation of linear and embedding weights.
        pooling (`str`, *optional*, defaults to `"mean"`):
            ``"mean"``: masked mean over real tokens; ``"cls"``: the first token.
        kwargs:
            Passed to :class:`~transformers.PretrainedConfig` (``num_labels``, ``id2label``, ...).

    ``hidden_size``, ``embedding_size`` and ``num_hidden_layers`` are read-only views of the
    genome (``None`` without one).
    """

    model_type = "rosearch_student"

    def __init__(
        self,
        genome: dict[str, Any] | None = None,
        vocab_size: int = 30522,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        pad_token_id: int = 0,
        hidden_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        pooling: str = "mean",
        **kwargs: Any,
    ) -> None:
        for key in _GENOME_DERIVED:
            if key in kwargs:
                raise StudentConfigError(
                    f"StudentConfig {key}={kwargs[key]!r} cannot be set: it comes from the genome "
                    "(fix: pass genome=Genome(...).to_dict() instead)"
                )
        for name, value in (("vocab_size", vocab_size), ("max_position_embeddings", max_position_embeddings),
                            ("type_vocab_size", type_vocab_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StudentConfigError(f"StudentConfig {name} must be a positive integer, got {value!r}")
        if not 0 <= pad_token_id < vocab_size:
            raise StudentConfigError(f"StudentConfig pad_token_id={pad_token_id} must be in [0, vocab_size={vocab_size})")
        if not 0.0 <= hidden_dropout_prob < 1.0:
            raise StudentConfigError(f"StudentConfig hidden_dropout_prob must be in [0, 1), got {hidden_dropout_prob}")
        if pooling not in POOLING_MODES:
            raise StudentConfigError(f"StudentConfig pooling={pooling!r} is unknown; use one of {list(POOLING_MODES)}")
        self.genome = _parse_genome(genome).to_dict() if genome is not None else None
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.pooling = pooling
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def genome_obj(self) -> Genome:
        """The genome as a :class:`Genome`; raises :class:`StudentConfigError` when there is none."""
        if self.genome is None:
            raise StudentConfigError(
                "StudentConfig has no genome, so no student can be built from it "
                "(fix: StudentConfig(genome=Genome(...).to_dict(), ...))"
            )
        return _parse_genome(self.genome)

    @property
    def hidden_size(self) -> int | None:
        return None if self.genome is None else self.genome["hidden_size"]

    @property
    def embedding_size(self) -> int | None:
        return None if self.genome is None else self.genome["embedding_size"]

    @property
    def num_hidden_layers(self) -> int | None:
        return None if self.genome is None else len(self.genome["cells"])


def _parse_genome(genome: Any) -> Genome:
    if isinstance(genome, Genome):
        return genome
    try:
        return Genome.from_dict(genome)
    except InvalidGenomeError as exc:
        raise StudentConfigError(f"StudentConfig genome is invalid: {exc}") from exc
