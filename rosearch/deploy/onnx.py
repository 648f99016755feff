"""ONNX and int8 variants of a sequence classifier, checked by ONNX Runtime against PyTorch.

The graph is the tensor model only: ``input_ids``, ``attention_mask`` (and ``token_type_ids``
when the tokenizer produces them), each ``[batch, sequence]`` int64 with both axes dynamic, to
``logits [batch, num_labels]``. Tokenisation and a student's input defense (text -> text) are
not in the graph: ``rosearch predict`` applies the defense and the tokenizer before running it.

It is written by PyTorch's ``torch.export``-based exporter (``dynamo=True``; the TorchScript
exporter is deprecated and, on this model, gave logits off by ~5e-3). int8 is ONNX Runtime's
dynamic quantisation: int8 weights for MatMul and Gather (embeddings), activations quantised
per batch at run time, no calibration data needed; convolutions stay fp32 (see ``INT8_OPS``).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rosearch.errors import UserError

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 18
LOGITS_ATOL = 1e-4  # fp32 ORT vs PyTorch: different kernels, same arithmetic
EXAMPLE_SHAPE = (2, 8)  # traced example; both axes are exported as symbolic
# Conv stays fp32: ORT runs ConvInteger without an optimised kernel, and with it a convolutional
# student's int8 graph took 2.1x the fp32 time at batch 32 (258 vs 125 ms); MatMul + Gather only: 102 ms
INT8_OPS = ("MatMul", "Gather")
_EXPORTER_LOGGERS = ("onnx_ir", "onnxscript")  # the graph optimiser's passes log every rewrite at INFO


class OnnxExportError(UserError, ValueError):
    """A model cannot be exported to ONNX, or its graph does not compute the model's logits."""


class _LogitsOnly(nn.Module):
    """The classifier as a function of token tensors to logits (what the ONNX graph holds)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          return_dict=True).logits


def max_length_of(model: nn.Module, tokenizer: Any) -> int:
    """The longest input the model takes: its position table, capped by the tokenizer's limit."""
    positions = int(getattr(model.config, "max_position_embeddings", 512))
    limit = getattr(tokenizer, "model_max_length", None)
    return min(positions, int(limit)) if isinstance(limit, int) and limit > 0 else positions


def export_onnx(model: nn.Module, path: str | Path, *, max_length: int) -> Path:
    """Write ``model`` (an HF sequence classifier on CPU) as an ONNX graph with dynamic batch and
    sequence axes (sequences up to ``max_length`` tokens); return the path."""
    path = Path(path)
    model = model.to("cpu").eval()
    vocab = int(getattr(model.config, "vocab_size", 2))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, max(2, vocab), EXAMPLE_SHAPE, generator=generator)
    example = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    batch, sequence = torch.export.Dim("batch", max=1 << 16), torch.export.Dim("sequence", max=max_length)
    shapes = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
    chatty = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [log.level for log in chatty]
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # their per-pass INFO notes show with --verbose only
        for log in chatty:
            log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # the exporter's notes on axis naming and its deprecation notices are not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's internal pytree deprecations
            torch.onnx.export(
                _LogitsOnly(model), example, str(path), input_names=list(INPUT_NAMES), output_names=["logits"],
                dynamo=True, dynamic_shapes=shapes, opset_version=OPSET, external_data=False, verbose=False,
                optimize=True,
            )
    except Exception as err:  # the exporter raises many types; all mean "this model does not export"
        raise OnnxExportError(f"{type(model).__name__} could not be exported to ONNX: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from err
    finally:
        for log, level in zip(chatty, levels):
            log.setLevel(level)
    return path


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """ONNX Runtime dynamic int8 quantisation of the graph ``source`` (after its recommended
    shape-inference pre-processing) into ``target``."""
    # lazy: ONNX Runtime only for --onnx / --int8 export and the onnx predict backends
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = Path(target)
    root, chatter = logging.getLogger(), _QuantiserChatter()
    root.addFilter(chatter)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            # ORT's symbolic pass cannot follow these graphs; ONNX shape inference and graph optimisation still run
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OPS))
    finally:
        root.removeFilter(chatter)
    return target


class _QuantiserChatter(logging.Filter):
    """ORT's quantiser notes every node it skips on the root logger at INFO ("Ignore MatMul due to
    non constant B", ...) and warns about every boolean tensor it cannot quantise: re-labelled DEBUG.
    Its other warnings and errors pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root" or "onnxruntime" not in record.pathname:
            return True
        message = str(record.msg)
        # a boolean tensor (the attention mask; elem_type 9) is never quantised: expected, not a problem
        bool_tensor = message.startswith("Inference failed or unsupported type to quantize") and "elem_type: 9" in message
        if record.levelno >= logging.WARNING and not bool_tensor:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def open_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for the graph at ``path`` (``threads``: intra-op threads, None = ORT's default)."""
    # lazy: ONNX Runtime only for --onnx / --int8 export and the onnx predict backends
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's own warnings (e.g. unused initialisers) are not the user's concern
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own pybind types (InvalidProtobuf, Fail, NoSuchFile)
        raise OnnxExportError(f"{path} is not a loadable ONNX graph ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}) "
                              "(fix: export it again with `rosearch export RUN --onnx`)") from None


def encode(tokenizer: Any, texts: Sequence[str | tuple[str, str]], max_length: int) -> dict[str, np.ndarray]:
    """Token tensors of ``texts`` (single texts or ``(a, b)`` pairs; padded to the batch's longest),
    int64, with every graph input."""
    texts = list(texts)
    pairs = bool(texts) and isinstance(texts[0], (tuple, list))
    first, second = ([t[0] for t in texts], [t[1] for t in texts]) if pairs else (texts, None)
    batch = tokenizer(first, second, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    ids = batch["input_ids"].astype(np.int64)
    out = {"input_ids": ids, "attention_mask": batch["attention_mask"].astype(np.int64)}
    types = batch.get("token_type_ids")
    out["token_type_ids"] = types.astype(np.int64) if types is not None else np.zeros_like(ids)
    return out


def session_logits(session: Any, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Logits [B, C] of an ONNX Runtime session (fed the inputs its graph declares)."""
    wanted = [i.name for i in session.get_inputs()]
    return session.run(["logits"], {name: inputs[name] for name in wanted})[0]


def torch_logits(model: nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Logits [B, C] of the PyTorch model on the same token tensors."""
    with torch.no_grad():
        tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
        return model(**tensors, return_dict=True).logits.float().numpy()


def batches(texts: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(texts[i:i + size]) for i in range(0, len(texts), size)]


@dataclass(frozen=True)
class OnnxCheck:
    """PyTorch vs ONNX Runtime on the same (defended) texts: the logit gap and both accuracies."""

    n: int
    max_abs_diff: float
    torch_accuracy: float | None
    onnx_accuracy: float | None
    onnx_predictions: np.ndarray  # [n] argmax of the ORT logits


def compare_with_torch(model: nn.Module, session: Any, tokenizer: Any, texts: Sequence[Any],
                       labels: Sequence[int] | None, *, max_length: int, batch_size: int = 32) -> OnnxCheck:
    """Run both runtimes on ``texts`` and measure the largest logit difference (and accuracies)."""
    gaps, torch_pred, onnx_pred = [], [], []
    model = model.eval()
    for chunk in batches(texts, batch_size):
        inputs = encode(tokenizer, chunk, max_length)
        reference, graph = torch_logits(model, inputs), session_logits(session, inputs)
        gaps.append(float(np.abs(reference - graph).max()))
        torch_pred.append(reference.argmax(-1))
        onnx_pred.append(graph.argmax(-1))
    t, o = np.concatenate(torch_pred), np.concatenate(onnx_pred)
    accuracy = (lambda p: float((p == np.asarray(labels)).mean())) if labels is not None else (lambda p: None)
    return OnnxCheck(len(texts), max(gaps), accuracy(t), accuracy(o), o)


def session_predictions(session: Any, tokenizer: Any, texts: Sequence[Any], *, max_length: int,
                        batch_size: int = 32) -> np.ndarray:
    """Argmax labels [n] of an ONNX Runtime session on ``texts``."""
    out = [session_logits(session, encode(tokenizer, chunk, max_length)).argmax(-1) for chunk in batches(texts, batch_size)]
    return np.concatenate(out)


def size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def write_onnx_variants(model: nn.Module, folder: str | Path, tokenizer: Any, texts: Sequence[Any],
                        labels: Sequence[int] | None, *, int8: bool, atol: float = LOGITS_ATOL) -> dict[str, Any]:
    """Write ``model.onnx`` (and ``model.int8.onnx``) into ``folder`` and check them on ``texts``
    (already defended: the graphs see what the model sees). Raise :class:`OnnxExportError` when
    the fp32 graph's logits differ from PyTorch's by more than ``atol``; return the figures
    (for metrics.json): logit gap, accuracies, int8 accuracy change and agreement, sizes."""
    if not texts:
        raise OnnxExportError("the ONNX check needs at least one text")
    folder = Path(folder)
    max_length = max_length_of(model, tokenizer)
    fp32 = export_onnx(model, folder / ONNX_FILE, max_length=max_length)
    check = compare_with_torch(model, open_session(fp32), tokenizer, texts, labels, max_length=max_length)
    if not check.max_abs_diff <= atol:
        raise OnnxExportError(f"ONNX Runtime logits differ from PyTorch's by up to {check.max_abs_diff:.3g} on "
                              f"{check.n} texts (tolerance {atol}): the graph does not compute this model")
    report: dict[str, Any] = {
        "file": ONNX_FILE, "opset": OPSET, "inputs": list(INPUT_NAMES), "dynamic_axes": ["batch", "sequence"],
        "max_sequence_length": max_length, "check_texts": check.n, "max_abs_logit_diff": check.max_abs_diff,
        "logit_tolerance": atol, "dev_accuracy_torch": check.torch_accuracy, "dev_accuracy_onnx": check.onnx_accuracy,
        "size_mb": round(size_mb(fp32), 3),
    }
    logger.info("onnx: %s written; max |Δlogit| vs PyTorch %.2g on %d dev texts (tolerance %g)",
                fp32.name, check.max_abs_diff, check.n, atol)
    if int8:
        quantised = quantize_int8(fp32, folder / INT8_FILE)
        predictions = session_predictions(open_session(quantised), tokenizer, texts, max_length=max_length)
        entry: dict[str, Any] = {"file": INT8_FILE, "method": f"onnxruntime dynamic quantisation (QInt8 weights of {', '.join(INT8_OPS)})",
                                 "size_mb": round(size_mb(quantised), 3),
                                 "agreement_with_fp32": float((predictions == check.onnx_predictions).mean())}
        if labels is not None:
            entry["dev_accuracy"] = float((predictions == np.asarray(labels)).mean())
            entry["dev_accuracy_change"] = entry["dev_accuracy"] - float(check.onnx_accuracy)
            logger.info("onnx: %s written; dev accuracy %.4f -> %.4f (int8, %+.4f) on %d texts, %.1f -> %.1f MB",
                        quantised.name, check.onnx_accuracy, entry["dev_accuracy"], entry["dev_accuracy_change"],
                        check.n, report["size_mb"], entry["size_mb"])
        report["int8"] = entry
    return report
