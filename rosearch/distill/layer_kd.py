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
from rosearch.student.ops import SelfAttention

if TYPE_CHECKING:
    from rosearch.batching import EncodedSplit
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
    """``attention_loss_weight`` x mean KL over mapped (student, teacher) attention layers.

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
