"""MATE-KD (Rashid, Lioutas & Rezagholizadeh, "MATE-KD: Masked Adversarial TExt, a Companion to
Knowledge Distillation", ACL 2021).

A masked-LM generator rewrites a random share of each sentence's tokens; it is trained to
*maximise* the teacher-student divergence on its rewrites, and the student is trained by KD on
both the original and the rewritten text. Text is discrete, so the generator's choice at each
masked position passes to teacher and student as a straight-through Gumbel-softmax one-hot
vector multiplied into their word-embedding matrices: the forward pass sees real tokens, the
backward pass gives the generator the gradient of the soft relaxation.

Generator (our choice, documented): a ``BertForMaskedLM`` whose embeddings and first
``mate_kd.generator_layers`` encoder layers are copied from the teacher (so it shares the
teacher's vocabulary and lexical knowledge), with a fresh MLM transform and the decoder tied to
the word embeddings; it is briefly MLM-trained on the transfer set (``mate_kd.pretrain_steps``)
once per run and cached, then every candidate starts from that copy. The paper uses a
separately pre-trained masked LM; offline we have none but the teacher, and a 2-layer
generator keeps the extra cost per step well below the teacher's.

Cost: every student step runs the generator and the teacher on the perturbed batch (the
teacher's logits on new text cannot be cached), and every generator update adds a backward
pass through teacher and student (dense [M, V] one-hot products with both embedding tables).
Measured on one CPU thread (all-MiniLM-L6 teacher, 2-layer H=128 student, batch 32, SST-2):
plain KD 36 ms/step; MATE-KD with a frozen generator 391 ms/step; one generator update every 10
student steps (the default, the paper's alternation of generator and student phases) 416 ms/step;
an update every step 1222 ms/step. On a GPU the teacher forward is a small share of a step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from transformers import BertForMaskedLM

from rosearch.data.batching import EncodedSplit, batch_indices, collate
from rosearch.files.cache import MATE_KD_GENERATOR, atomic_dir, check_key, read_entry
from rosearch.config import DistillConfig
from rosearch.distill.inputs import MethodInputsError
from rosearch.distill.losses import kd_loss_terms
from rosearch.distill.protocol import DistillMethod, MethodRun, PrepareContext, StudentContext
from rosearch.distill.teacher import load_teacher, teacher_fingerprint

if TYPE_CHECKING:
    from rosearch.distill.inputs import MethodInputs

logger = logging.getLogger(__name__)

CACHE_SUBDIR = MATE_KD_GENERATOR.folder
INFO_FILE = "generator_info.json"
PRETRAIN_LR = 1e-4  # MLM adaptation of the copied encoder + fresh head; brief, so a usual BERT fine-tuning rate


class MateKDError(ValueError):
    """The teacher or tokenizer cannot serve as the base of MATE-KD's generator."""


# --------------------------------------------------------------------------------------------
# Differentiable token choice
# --------------------------------------------------------------------------------------------


def gumbel_softmax_st(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Straight-through Gumbel-softmax over the last axis, with explicit randomness.

    Forward: the one-hot of ``argmax(logits + g)`` (a sample from ``softmax(logits)``), with
    ``g`` standard Gumbel noise drawn from ``generator``. Backward: the gradient of
    ``softmax((logits + g) / temperature)`` (Jang et al., 2017; Bengio et al., 2013).
    """
    if temperature <= 0:
        raise ValueError(f"gumbel_softmax_st temperature must be > 0, got {temperature!r}")
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    gumbels = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))  # [..., V]
    soft = ((logits.float() + gumbels) / temperature).softmax(dim=-1)  # [..., V]
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    return hard - soft.detach() + soft


@contextlib.contextmanager
def soft_token_embeddings(model: nn.Module, positions: Tensor, one_hot: Tensor) -> Iterator[None]:
    """Inside the block, ``model``'s word embedding at ``positions`` ([B, T] bool, M True) is
    ``one_hot @ E`` ([M, V] x [V, D]) instead of a table lookup.

    The caller passes the one-hot's argmax as the token ids, so the forward values are the
    lookup's; the backward pass carries the gradient into ``one_hot`` (and the generator behind
    it). Uses a forward hook on ``model.get_input_embeddings()``, removed on exit.
    """
    embedding = model.get_input_embeddings()

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
        replaced = one_hot.to(module.weight.dtype) @ module.weight  # [M, D]
        return output.masked_scatter(positions.unsqueeze(-1), replaced)  # [B, T, D]

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def choose_positions(
    input_ids: Tensor, attention_mask: Tensor, prob: float, special_ids: Tensor, generator: torch.Generator | None
) -> Tensor:
    """[B, T] bool: each real, non-special token independently with probability ``prob``."""
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special_ids)  # [B, T]
    draws = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)  # [B, T]
    return candidates & (draws < prob)


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


def build_generator(teacher: nn.Module, num_layers: int) -> "BertForMaskedLM":
    """A ``BertForMaskedLM`` with the teacher's embeddings and first ``num_layers`` layers."""
    if getattr(teacher.config, "model_type", None) != "bert":
        raise MateKDError(
            f"mate_kd builds its generator from a BERT-family teacher, got model_type "
            f"{getattr(teacher.config, 'model_type', None)!r} (fix: use a BERT teacher or drop mate_kd)"
        )
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = max(1, min(num_layers, int(config.num_hidden_layers)))
    config.architectures = ["BertForMaskedLM"]
    config.is_decoder = False
    generator = BertForMaskedLM(config)
    missing, _ = generator.bert.load_state_dict(teacher.base_model.state_dict(), strict=False)
    missing = [key for key in missing if not key.endswith("position_ids")]
    if missing:
        raise MateKDError(f"teacher weights do not cover the generator's encoder: missing {missing[:5]}")
    generator.tie_weights()
    return generator


def _generator_logits(generator: "BertForMaskedLM", batch: dict[str, Tensor], positions: Tensor,
                      mask_token_id: int, special_ids: Tensor) -> Tensor:
    """MLM logits [M, V] at ``positions`` after replacing them by [MASK]; special tokens banned."""
    masked = batch["input_ids"].masked_fill(positions, mask_token_id)  # [B, T]
    inputs = {"input_ids": masked, "attention_mask": batch["attention_mask"]}
    if "token_type_ids" in batch:
        inputs["token_type_ids"] = batch["token_type_ids"]
    hidden = generator.bert(**inputs).last_hidden_state  # [B, T, H]
    logits = generator.cls(hidden[positions])  # [M, V]; the head only where it is needed
    return logits.index_fill(-1, special_ids, float("-inf"))


def generator_key(teacher_fp: str, train: EncodedSplit, cfg: DistillConfig, seed: int) -> str:
    """Cache key of the generator: teacher, transfer set and every pre-training setting."""
    return MATE_KD_GENERATOR.key({
        "teacher": teacher_fp, "train": train.fingerprint, "layers": cfg.mate_kd.generator_layers,
        "steps": cfg.mate_kd.pretrain_steps, "mask_prob": cfg.mate_kd.mask_prob, "batch_size": cfg.batch_size,
        "lr": PRETRAIN_LR, "seed": seed,
    })


def _generator_ready(path: Path, key: str) -> bool:
    """Whether ``path`` holds the finished generator of ``key`` (its info file is written last)."""
    def finished(p: Path) -> bool:
        check_key(json.loads((p / INFO_FILE).read_text(encoding="utf-8")).get("key"), key)
        return True

    return read_entry(path, finished, what="mate_kd generator", log=logger) is not None


def load_or_pretrain_generator(
    teacher: nn.Module,
    teacher_dir: str,
    train: EncodedSplit,
    cfg: DistillConfig,
    *,
    special_token_ids: Sequence[int],
    mask_token_id: int,
    seed: int,
    device: torch.device | str,
    cache_dir: str | Path,
) -> Path:
    """Directory of the MLM-adapted generator for this teacher and transfer set (built once).

    Keyed by the teacher's fingerprint, the split's fingerprint, and the generator settings;
    written to a temporary sibling and renamed into place, so concurrent runs never read half a
    checkpoint.
    """
    key = generator_key(teacher_fingerprint(teacher_dir), train, cfg, seed)
    final = MATE_KD_GENERATOR.entry(cache_dir, key)
    if _generator_ready(final, key):
        logger.info("mate_kd: generator cache hit %s", final)
        return final
    device = torch.device(device)
    generator = build_generator(teacher, cfg.mate_kd.generator_layers).to(device)
    start = time.perf_counter()
    accuracy = _pretrain(generator, train, cfg, special_token_ids, mask_token_id, seed, device)
    info = {"steps": cfg.mate_kd.pretrain_steps, "mlm_accuracy_last_10pct": accuracy,
            "seconds": round(time.perf_counter() - start, 2), "layers": generator.config.num_hidden_layers}
    with atomic_dir(final, keep=lambda p: _generator_ready(p, key)) as tmp:  # a concurrent winner's is as good
        generator.save_pretrained(tmp)
        stamped = {**MATE_KD_GENERATOR.stamp(key), **info}
        (tmp / INFO_FILE).write_text(json.dumps(stamped, indent=2) + "\n", encoding="utf-8")
    logger.info("mate_kd: generator (%d layers) MLM-adapted for %d steps in %.1fs, masked-token accuracy %.3f -> %s",
                info["layers"], info["steps"], info["seconds"], accuracy, final)
    return final


def _pretrain(
    generator: "BertForMaskedLM", train: EncodedSplit, cfg: DistillConfig, special_token_ids: Sequence[int],
    mask_token_id: int, seed: int, device: torch.device,
) -> float:
    """MLM on the transfer set (masked positions replaced by [MASK], as the generator is used).

    Returns the masked-token accuracy over the last ~10% of steps (nan with 0 steps).
    """
    steps = cfg.mate_kd.pretrain_steps
    if steps == 0:
        return float("nan")
    rng = random.Random(seed)
    special = torch.tensor(sorted(set(special_token_ids)), dtype=torch.long, device=device)
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    hits, total = 0, 0
    tail_start = steps - max(1, steps // 10)
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        masks = torch.Generator(device=device).manual_seed(seed)
        optimizer = torch.optim.AdamW(generator.parameters(), lr=PRETRAIN_LR, weight_decay=0.01)
        generator.train()
        order: list[list[int]] = []
        for step in range(steps):
            if not order:
                order = batch_indices(train.lengths, cfg.batch_size, shuffle=True, rng=rng, bucketing=True)[::-1]
            batch = collate(train, order.pop(), device)
            positions = choose_positions(batch["input_ids"], batch["attention_mask"], cfg.mate_kd.mask_prob, special, masks)
            if not bool(positions.any()):
                continue
            logits = _generator_logits(generator, batch, positions, mask_token_id, special)  # [M, V]
            targets = batch["input_ids"][positions]  # [M]
            loss = nn.functional.cross_entropy(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(generator.parameters(), 1.0)
            optimizer.step()
            if step >= tail_start:
                hits += int((logits.argmax(-1) == targets).sum())
                total += int(targets.numel())
    generator.eval()
    return hits / total if total else float("nan")


# --------------------------------------------------------------------------------------------
# The method inside the trainer
# --------------------------------------------------------------------------------------------


class MateKD(MethodRun):
    """MATE-KD's state during one distillation: live teacher, generator and its optimizer.

    Each student step calls :meth:`loss` (``mate_kd.weight`` x :meth:`student_loss`); at the start of every
    ``mate_kd.generator_every`` steps, ``mate_kd.generator_steps`` generator updates maximise
    the teacher-student divergence on the current batch first (the student in eval mode, its
    weights untouched). The student's term is the soft KD loss ``T²·KL(p_t ‖ p_s)`` on a fresh
    rewrite of the batch, the teacher's soft labels as targets (a rewrite may flip the label,
    so there is no hard-label term).
    """

    def __init__(self, inputs: "MethodInputs", cfg: DistillConfig, num_labels: int, seed: int,
                 device: torch.device) -> None:
        inputs.require("mate_kd")
        self.cfg = cfg
        self.device = device
        self.teacher, _ = load_teacher(inputs.teacher_path(), num_labels, device)
        self.teacher.requires_grad_(False)
        self.generator = BertForMaskedLM.from_pretrained(inputs.generator_path()).to(device).eval()
        self.special = torch.tensor(inputs.special_token_ids, dtype=torch.long, device=device)
        self.mask_token_id = int(inputs.mask_token_id)
        self.optimizer = torch.optim.AdamW(self.generator.parameters(), lr=cfg.mate_kd.generator_lr, weight_decay=0.0)
        self.rng = torch.Generator(device=device).manual_seed(seed + 7919)  # masks and Gumbel noise
        self.divergences: list[float] = []
        self.changed = 0
        self.rewritten = 0

    def _inputs(self, batch: dict[str, Tensor], ids: Tensor) -> dict[str, Tensor]:
        inputs = {"input_ids": ids, "attention_mask": batch["attention_mask"]}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        return inputs

    def _update_generator(self, student: nn.Module, batch: dict[str, Tensor]) -> None:
        """One maximisation step: minimise -T²·KL(teacher ‖ student) on a differentiable rewrite."""
        positions = choose_positions(batch["input_ids"], batch["attention_mask"], self.cfg.mate_kd.mask_prob,
                                     self.special, self.rng)
        if not bool(positions.any()):
            return
        logits = _generator_logits(self.generator, batch, positions, self.mask_token_id, self.special)  # [M, V]
        one_hot = gumbel_softmax_st(logits, self.cfg.mate_kd.gumbel_temperature, self.rng)  # [M, V]
        ids = batch["input_ids"].masked_scatter(positions, one_hot.argmax(dim=-1).detach())  # [B, T]
        was_training = student.training
        student.eval()
        try:
            with soft_token_embeddings(self.teacher, positions, one_hot):
                t_logits = self.teacher(**self._inputs(batch, ids)).logits  # [B, C]
            with soft_token_embeddings(student, positions, one_hot):
                s_logits = student(**self._inputs(batch, ids)).logits  # [B, C]
        finally:
            student.train(was_training)
        divergence = kd_loss_terms(s_logits, t_logits, batch["labels"], alpha=1.0,
                                   temperature=self.cfg.temperature)["soft"]
        params = [p for p in self.generator.parameters() if p.requires_grad]
        grads = torch.autograd.grad(-divergence, params, allow_unused=True)  # the student's weights get no gradient
        for param, grad in zip(params, grads):
            param.grad = grad
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if bool(torch.isfinite(divergence)):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.divergences.append(float(divergence.detach()))

    def student_loss(self, student: nn.Module, batch: dict[str, Tensor], step: int) -> Tensor:
        """The student's KD term on a generator rewrite of ``batch`` (after any generator updates due)."""
        if (step - 1) % self.cfg.mate_kd.generator_every == 0:
            for _ in range(self.cfg.mate_kd.generator_steps):
                self._update_generator(student, batch)
        with torch.no_grad():
            positions = choose_positions(batch["input_ids"], batch["attention_mask"], self.cfg.mate_kd.mask_prob,
                                         self.special, self.rng)
            ids = batch["input_ids"]
            if bool(positions.any()):
                logits = _generator_logits(self.generator, batch, positions, self.mask_token_id, self.special)
                sample = gumbel_softmax_st(logits, 1.0, self.rng).argmax(dim=-1)  # [M]: a sample of the generator
                self.changed += int((sample != ids[positions]).sum())
                self.rewritten += int(positions.sum())
                ids = ids.masked_scatter(positions, sample)
            t_logits = self.teacher(**self._inputs(batch, ids)).logits  # [B, C]
        s_logits = student(**self._inputs(batch, ids)).logits  # [B, C]
        return kd_loss_terms(s_logits, t_logits, batch["labels"], alpha=1.0, temperature=self.cfg.temperature)["soft"]

    def loss(self, student: nn.Module, batch: dict[str, Tensor], out: Any, indices: list[int], step: int) -> Tensor:
        """``mate_kd.weight`` x the student's term on a rewrite of the clean batch."""
        return self.cfg.mate_kd.weight * self.student_loss(student, batch, step)

    def stats(self) -> dict[str, Any]:
        tail = self.divergences[-max(1, len(self.divergences) // 10):] if self.divergences else []
        return {
            "mate_kd_generator_updates": len(self.divergences),
            "mate_kd_divergence_last_10pct": sum(tail) / len(tail) if tail else math.nan,
            "mate_kd_changed_token_share": self.changed / self.rewritten if self.rewritten else math.nan,
        }


class MateKDMethod(DistillMethod):
    """The mate_kd method (:class:`~rosearch.distill.protocol.DistillMethod`)."""

    name = "mate_kd"
    runs_teacher = True
    description = ("masked-LM generator rewrites masked tokens to maximise teacher-student divergence "
                   "(Gumbel-softmax, straight-through), student distils on clean and perturbed text "
                   "(Rashid et al., MATE-KD, ACL 2021)")

    def needs_inputs(self) -> bool:
        return True

    def prepare(self, ctx: PrepareContext) -> dict[str, Any]:
        """The MLM-adapted generator (cached under ``mate_kd/<key>/``) and the tokens it must not touch."""
        config, tokenizer = ctx.config, ctx.tokenizer
        generator_dir = load_or_pretrain_generator(
            ctx.teacher, ctx.teacher_dir, ctx.train, config.distill, special_token_ids=tuple(tokenizer.all_special_ids),
            mask_token_id=_mask_token_id(tokenizer), seed=config.run.seed, device=ctx.device,
            cache_dir=config.run.cache_dir,
        )
        return {"generator_dir": str(generator_dir), "special_token_ids": tuple(sorted(set(tokenizer.all_special_ids))),
                "mask_token_id": _mask_token_id(tokenizer)}

    def start(self, ctx: StudentContext) -> MateKD:
        return MateKD(ctx.inputs, ctx.cfg, ctx.train.num_labels, ctx.seed, ctx.device)


def _mask_token_id(tokenizer: Any) -> int:
    if tokenizer.mask_token_id is None:
        raise MethodInputsError(
            f"mate_kd needs a tokenizer with a mask token, {type(tokenizer).__name__} has none "
            "(fix: use a BERT-family teacher, or drop mate_kd from distill.methods)"
        )
    return int(tokenizer.mask_token_id)


MATE_KD = MateKDMethod()
