"""layer_kd's attention term: the student's attention distributions, matched to the teacher's.

The searched student's attention ops run fused ``scaled_dot_product_attention``, which returns
no probabilities. :class:`StudentAttentionProbe` recomputes them in a forward hook from each op's
own inputs and query/key projection (one extra [B, T, H] x [H, 3H] matmul per op), so the
probabilities are exactly those the op attends with (before dropout) and the gradient reaches
the op's query and key weights. The teacher side is cached (head-averaged, per sequence), so
the term costs no teacher forward.

Head counts differ (the teacher's 12 against the student's 2/4/8), so both sides are averaged
over heads; a cell holding several attention ops contributes the mean of their distributions.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from rosearch.distill.losses import attention_kl_loss, uniform_layer_map
from rosearch.distill.protocol import DistillMethod, MethodRun, StudentContext, TeacherRequest
from rosearch.student.ops import SelfAttention

if TYPE_CHECKING:
    from rosearch.data.batching import EncodedSplit
    from rosearch.config import Config, DistillConfig
    from rosearch.distill.teacher_cache import TeacherOutputs

logger = logging.getLogger(__name__)


def head_mean_attention(op: SelfAttention, x: Tensor, mask: Tensor) -> Tensor:
    """Attention probabilities of ``op`` on input ``x`` [B, T, H], averaged over heads: [B, T, T].

    Mirrors :class:`~rosearch.student.ops.SelfAttention`: padded inputs zeroed, padded keys
    masked, a row with no real key attends everywhere (its output is discarded anyway).
    """
    B, T, H = x.shape
    real = mask.bool()  # [B, T]
    x = x.masked_fill(~real.unsqueeze(-1), 0.0)
    q, k, _ = op.qkv(x).split(H, dim=2)  # 2 x [B, T, H]
    hd = H // op.heads
    q = q.view(B, T, op.heads, hd).transpose(1, 2)  # [B, nh, T, hd]
    k = k.view(B, T, op.heads, hd).transpose(1, 2)  # [B, nh, T, hd]
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, nh, T, T]
    keys = real | ~real.any(dim=1, keepdim=True)  # [B, T]
    scores = scores.masked_fill(~keys[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1).mean(dim=1)  # [B, T, T]


def _student_layers(student: nn.Module) -> nn.ModuleList | None:
    """The per-layer cells of a searched student (``base_model.layers``), or None for other models."""
    base = getattr(student, "base_model", student)
    layers = getattr(base, "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


class StudentAttentionProbe:
    """Captures the head-mean attention of every student layer that has attention ops.

    ``layer_numbers`` are 1-based layer indices (HF ``hidden_states`` numbering). Hooks fire only
    inside :meth:`recording`, so the extra forwards of other methods (augmented batches,
    MATE-KD's perturbed text) pay nothing.
    """

    def __init__(self, student: nn.Module) -> None:
        layers = _student_layers(student)
        self.ops: dict[int, list[SelfAttention]] = {}
        if layers is not None:
            for number, layer in enumerate(layers, start=1):
                found = [m for m in layer.modules() if isinstance(m, SelfAttention)]
                if found:
                    self.ops[number] = found
        self.layer_numbers: tuple[int, ...] = tuple(self.ops)
        self._captured: dict[int, list[Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, number: int):
        def hook(module: nn.Module, args: tuple[Tensor, Tensor], output: Tensor) -> None:
            x, mask = args
            self._captured.setdefault(number, []).append(head_mean_attention(module, x, mask))
        return hook

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Capture during one forward; read the result with :meth:`probabilities`."""
        self._captured = {}
        self._handles = [op.register_forward_hook(self._hook(n)) for n, ops in self.ops.items() for op in ops]
        try:
            yield
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def probabilities(self) -> dict[int, Tensor]:
        """Layer number -> [B, T, T] from the last recorded forward (mean over the layer's ops)."""
        missing = [n for n in self.layer_numbers if n not in self._captured]
        if missing:
            raise RuntimeError(f"no attention was recorded for student layers {missing}; forward inside recording()")
        return {n: torch.stack(self._captured[n]).mean(dim=0) for n in self.layer_numbers}


class AttentionTerm:
    """``layer_kd.attention_weight`` x mean KL over mapped (student, teacher) attention layers.

    Student attention layers pair with the cached teacher attention layers by
    :func:`~rosearch.distill.losses.uniform_layer_map` (the last student attention layer meets
    the last cached teacher layer). A student without attention ops gets no term (logged).
    """

    def __init__(self, student: nn.Module, teacher: "TeacherOutputs") -> None:
        if not teacher.attention_layers:
            raise ValueError(
                "layer_kd's attention term needs cached teacher attention, but the teacher outputs hold none "
                "(fix: compute them with rosearch.distill.methods.teacher_cache_request(config, ...).kwargs(), or "
                "set distill.layer_kd.attention_weight=0)"
            )
        self.probe = StudentAttentionProbe(student)
        self.pairs: list[tuple[int, int]] = []
        if not self.probe.layer_numbers:
            logger.info("layer_kd: the student has no attention ops; no attention term")
            return
        mapped = uniform_layer_map(len(self.probe.layer_numbers), tuple(teacher.attention_layers))
        self.pairs = [(self.probe.layer_numbers[j - 1], t) for j, t in mapped]
        logger.info("layer_kd: attention KL on (student, teacher) layer pairs %s", self.pairs)

    @property
    def active(self) -> bool:
        return bool(self.pairs)

    def recording(self) -> contextlib.AbstractContextManager:
        return self.probe.recording() if self.active else contextlib.nullcontext()

    def loss(
        self, teacher: "TeacherOutputs", split: "EncodedSplit", indices: list[int], mask: Tensor
    ) -> Tensor:
        """Mean attention KL over the pairs for the batch just recorded ([B, T] ``mask``)."""
        probs = self.probe.probabilities()
        losses = [
            attention_kl_loss(
                probs[s],  # [B, T, T]
                teacher.attention_batch(t, split, indices).to(mask.device, non_blocking=True),  # [B, T, T]
                mask,
            )
            for s, t in self.pairs
        ]
        return torch.stack(losses).mean()


# --------------------------------------------------------------------------------------------
# The method: cached teacher layers, the hidden-state weight, the attention term per student
# --------------------------------------------------------------------------------------------


def layer_kd_teacher_layers(config: "Config", num_teacher_layers: int) -> tuple[int, ...]:
    """Teacher layers layer_kd distils from: ``teacher.cache_hidden_layers`` when set, else the
    layers the deepest student of the search space maps to (uniformly, last to last).

    A shallower student then maps uniformly onto these; caching every teacher layer instead
    would cost memory for layers no student reads. (The whole config: the answer crosses the
    ``teacher`` and ``search_space`` sections.)
    """
    explicit = config.teacher.cache_hidden_layers
    if explicit:
        return tuple(sorted(set(explicit)))
    if num_teacher_layers < 1:
        raise ValueError(f"num_teacher_layers must be >= 1, got {num_teacher_layers}")
    deepest = max(config.search_space.num_layers)
    return tuple(t for _, t in uniform_layer_map(deepest, tuple(range(1, num_teacher_layers + 1))))


class LayerKDRun(MethodRun):
    """The attention term of one distillation (the hidden-state term is the trainer's, at ``layer_kd.weight``)."""

    def __init__(self, ctx: StudentContext) -> None:
        self.weight = ctx.cfg.layer_kd.attention_weight
        self.teacher = ctx.teacher
        self.train = ctx.train
        self.attention = AttentionTerm(ctx.student, ctx.teacher)

    def recording(self) -> contextlib.AbstractContextManager:
        return self.attention.recording()

    def loss(self, student: nn.Module, batch: dict[str, Tensor], out: object, indices: list[int],
             step: int) -> Tensor | None:
        if not self.attention.active:
            return None
        return self.weight * self.attention.loss(self.teacher, self.train, indices, batch["attention_mask"])


class LayerKD(DistillMethod):
    """The layer_kd method (:class:`~rosearch.distill.protocol.DistillMethod`)."""

    name = "layer_kd"
    description = ("hidden-state MSE through learned projections + KL of head-averaged attention "
                   "distributions on uniformly mapped layers (Jiao et al., TinyBERT, 2020; Wang et al., MiniLM, 2020)")

    def teacher_request(self, config: "Config", num_teacher_layers: int) -> TeacherRequest:
        """Hidden states for the MSE, head-averaged attention for the KL (the same layers, minus the embeddings)."""
        knobs = config.distill.layer_kd
        layers = layer_kd_teacher_layers(config, num_teacher_layers)
        return TeacherRequest(layers=layers if knobs.weight > 0 else (),
                              attention_layers=tuple(layer for layer in layers if layer > 0)
                              if knobs.attention_weight > 0 else ())

    def hidden_weight(self, cfg: "DistillConfig", teacher: "TeacherOutputs") -> float:
        if cfg.layer_kd.weight > 0 and not teacher.layers:
            raise ValueError(
                "layer_kd's hidden-state term needs cached teacher hidden states, but the teacher outputs hold none "
                "(fix: compute them with rosearch.distill.methods.teacher_cache_request(config, ...).kwargs(), or set "
                "distill.layer_kd.weight=0)"
            )
        return cfg.layer_kd.weight

    def start(self, ctx: StudentContext) -> LayerKDRun | None:
        return LayerKDRun(ctx) if ctx.cfg.layer_kd.attention_weight > 0 else None


LAYER_KD = LayerKD()
