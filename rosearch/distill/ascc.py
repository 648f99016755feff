"""``ascc``: adversarial distillation inside the convex hull of each token's substitution set.

After ASCC (Dong et al., "Towards Robustness Against Natural Language Word Substitutions", ICLR
2021) and DNE (Zhou et al., "Defense against Synonym Substitution-based Adversarial Attacks via
Dirichlet Neighborhood Ensemble", ACL 2021). A word-substitution attacker (PWWS, TextFooler)
replaces a word by one of a known candidate set; every such swap moves the word's embedding to
a vertex of the convex hull of {word} ∪ candidates. Training against the worst point of that
hull covers every combination of swaps at once, at the price of a few extra forward/backward
passes per step instead of a discrete attack.

Per training step, on the clean batch:

1. every token whose word has substitutes gets hull weights ``w = softmax(eta)`` over its set
   (its own id first), ``eta = 0`` (the hull's centre) to start;
2. ``ascc.steps`` times: the student runs on the hull points ``sum_j w_j * E[s_j]`` (its own word
   embedding table E) and ``eta`` climbs the sign of the gradient of the soft KD loss (the
   student's divergence from the teacher), ``ascc.step_size`` per step;
3. the student is trained on the worst hull points found, with the usual KD loss against the
   teacher's cached soft targets *of the clean text*, weighted by ``ascc.weight``.

The teacher is not run on hull points: it would cost a teacher forward per step, and a swap
inside a word's substitution set should not change what the teacher says about the text (an
attacker's swaps are meant to preserve the meaning). Substitution sets are the union of WordNet
synonyms (PWWS's candidates) and counter-fitted neighbours (TextFooler's), as ``ascc.sources``
says, mapped through the student's input defense (so a synonym-encoded student's sets are over
the codes it really sees) and restricted to words that are one token of the tokenizer; tokens
of longer words keep their embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from rosearch.attack.resources import prepare_textattack
from rosearch.defense.words import word_counts
from rosearch.distill.hull import HullEmbedding, token_hulls, word_substitutions, worst_hull_weights
from rosearch.distill.losses import kd_loss
from rosearch.distill.protocol import DistillMethod, MethodRun, PrepareContext, StudentContext
from rosearch.files.tokenizer_files import materialize_tokenizer

if TYPE_CHECKING:
    from rosearch.config import AttackConfig
    from rosearch.data.tasks import Example

logger = logging.getLogger(__name__)


def training_substitutions(attack: "AttackConfig", cache_dir: str, examples: Sequence["Example"],
                           sources: Sequence[str], max_per_word: int) -> dict[str, tuple[str, ...]]:
    """The substitutes of every word of ``examples``' text: what the student's and the adversarial
    teacher's hulls are built from (WordNet provisioned for nltk first when it is a source)."""
    if "wordnet" in sources:
        prepare_textattack(attack, cache_dir)  # nltk's WordNet layout
    texts = [t for e in examples for t in (e.text_a, e.text_b) if t]
    return word_substitutions(sorted(word_counts(texts)), sources, neighbors_path=attack.neighbors_path,
                              max_per_word=max_per_word)


class AsccRun(MethodRun):
    """``ascc.weight`` x the KD loss at the worst hull points of each clean batch."""

    def __init__(self, ctx: StudentContext) -> None:
        cfg = ctx.cfg.ascc
        inputs = ctx.inputs
        inputs.require("ascc")
        tokenizer = materialize_tokenizer(inputs.tokenizer_files)
        table, size = token_hulls(inputs.substitutions, tokenizer, ctx.defense, cfg.max_candidates + 1)
        embedding = ctx.student.get_input_embeddings()
        if embedding.num_embeddings < len(size):
            raise ValueError(f"ascc: the student's vocabulary ({embedding.num_embeddings}) is smaller than the "
                             f"tokenizer's ({len(size)}); the substitution table cannot index it")
        self.hull = HullEmbedding(embedding, table.to(ctx.device), size.to(ctx.device))
        self.cfg = cfg
        self.alpha, self.temperature = ctx.cfg.alpha, ctx.cfg.temperature
        self.teacher_logits = ctx.teacher_logits
        self.covered = int((size > 1).sum())
        self.moved = 0.0
        self.batches = 0
        logger.info("ascc: %d tokens with a substitution hull (mean size %.1f), %d ascent steps of %g, weight %g",
                    self.covered, float(size[size > 1].float().mean()) if self.covered else 1.0, cfg.steps,
                    cfg.step_size, cfg.weight)

    def loss(self, student: nn.Module, batch: dict[str, Tensor], out: Any, indices: list[int], step: int) -> Tensor:
        target = self.teacher_logits[indices]  # [B, C]
        ids, valid = self.hull.candidates(batch["input_ids"])
        weights = worst_hull_weights(
            student, batch, self.hull, ids, valid, steps=self.cfg.steps, step_size=self.cfg.step_size,
            loss_fn=lambda logits: kd_loss(logits, target, batch["labels"], alpha=1.0, temperature=self.temperature))
        self.moved += float(1.0 - weights[..., 0][valid[..., 1]].mean()) if bool(valid[..., 1].any()) else 0.0
        self.batches += 1
        logits = self.hull.forward(student, batch, ids, weights)
        return self.cfg.weight * kd_loss(logits, target, batch["labels"], alpha=self.alpha, temperature=self.temperature)

    def stats(self) -> dict[str, float]:
        return {"ascc_tokens_with_hull": float(self.covered),
                "ascc_mean_weight_off_original": self.moved / max(1, self.batches)}


class Ascc(DistillMethod):
    """The ascc method (:class:`~rosearch.distill.protocol.DistillMethod`)."""

    name = "ascc"
    description = ("adversarial KD in the convex hull of each token's WordNet / counter-fitted substitutes, the "
                   "worst hull point found by signed-gradient ascent (ASCC, Dong et al. ICLR 2021; DNE, Zhou et al. "
                   "ACL 2021)")

    def needs_inputs(self) -> bool:
        return True

    def prepare(self, ctx: PrepareContext) -> dict[str, Any]:
        """The substitutes of every word of the training text (raw words; each student maps them
        through its own defense)."""
        cfg = ctx.config.distill.ascc
        substitutions = training_substitutions(ctx.config.attack, str(ctx.config.run.cache_dir), ctx.train_examples,
                                               cfg.sources, max_per_word=4 * cfg.max_candidates)
        logger.info("ascc: substitutes for %d training words (%s)", len(substitutions), ", ".join(cfg.sources))
        return {"substitutions": substitutions}

    def start(self, ctx: StudentContext) -> AsccRun:
        return AsccRun(ctx)


ASCC = Ascc()
