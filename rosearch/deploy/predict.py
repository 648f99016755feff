"""``rosearch predict``: classify texts with an exported student or any HF classifier directory.

Texts come from the arguments, a file (one per line) or stdin; each prints as one JSON line
(``text``, ``label``, ``probabilities`` by label name), in input order. Texts are batched by
length (padding only to each batch's longest). ``--backend torch`` runs the PyTorch weights,
``onnx`` / ``onnx-int8`` the ONNX Runtime graphs ``rosearch export --onnx [--int8]`` wrote.

A student with input defenses (``defense.json.gz``) gets them on every text before tokenising,
on every backend: the ONNX graphs hold only the tensor model, the defense is text preprocessing
applied here (and by the student's own tokenizer class when it is loaded through ``AutoTokenizer``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from rosearch.defense.pipeline import Defense, DefenseError, load_defense
from rosearch.defense.tokenizer import DEFENDED_TOKENIZER_CLASS
from rosearch.deploy.onnx import INT8_FILE, ONNX_FILE, OnnxExportError, encode, max_length_of, open_session, session_logits
from rosearch.errors import UserError
from rosearch.files.model_files import ModelDirError, check_model_config, weights_problem
from rosearch.runtime.logs import setup_logging
from rosearch.student.modeling import register_auto_classes

logger = logging.getLogger(__name__)

BACKENDS = {"torch": None, "onnx": ONNX_FILE, "onnx-int8": INT8_FILE}


class PredictError(UserError, ValueError):
    """The model directory or the input cannot be used; the message says how to fix it."""


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Predictor:
    """A classifier directory on one backend: ``predict(texts)`` -> one dict per text."""

    def __init__(self, model_dir: str | Path, backend: str = "torch", *, batch_size: int = 32,
                 threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise PredictError(f"unknown backend {backend!r} (fix: one of {', '.join(BACKENDS)})")
        if batch_size < 1:
            raise PredictError(f"batch size must be >= 1, got {batch_size}")
        self.model_dir, self.backend, self.batch_size = Path(model_dir), backend, batch_size
        if not self.model_dir.is_dir():
            raise PredictError(f"model directory {self.model_dir} does not exist "
                               "(fix: pass a folder written by `rosearch export` or by save_pretrained)")
        if not (self.model_dir / "config.json").is_file():
            raise PredictError(f"{self.model_dir} has no config.json, so it is not a Hugging Face model folder "
                               "(fix: pass a folder written by `rosearch export` or by save_pretrained)")
        try:
            check_model_config(self.model_dir)
        except ModelDirError as err:
            raise PredictError(str(err)) from None
        register_auto_classes()
        try:
            self.config = AutoConfig.from_pretrained(self.model_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self.defense: Defense | None = load_defense(self.model_dir)
        except DefenseError as err:
            raise PredictError(str(err)) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise PredictError(f"{self.model_dir} cannot be loaded ({type(err).__name__}: {_first_line(err)}) "
                               "(fix: export the model again; the folder is incomplete or damaged)") from None
        # a defended student's own tokenizer applies the defense; any other tokenizer gets it here
        self._defend_here = self.defense is not None and type(self.tokenizer).__name__ != DEFENDED_TOKENIZER_CLASS
        self.model: Any = None
        self.session: Any = None
        if BACKENDS[backend] is None:
            self.model = self._load_torch(threads)
            self.max_length = max_length_of(self.model, self.tokenizer)
        else:
            path = self.model_dir / BACKENDS[backend]
            if not path.is_file():
                raise PredictError(f"{self.model_dir} has no {path.name} (fix: `rosearch export RUN --onnx"
                                   f"{' --int8' if backend == 'onnx-int8' else ''}`, or --backend torch)")
            try:
                self.session = open_session(path, threads)
            except OnnxExportError as err:
                raise PredictError(str(err)) from None
            self.max_length = max_length_of(_ConfigOnly(self.config), self.tokenizer)
        id2label = getattr(self.config, "id2label", None) or {}
        self.labels = [str(id2label.get(i, i)) for i in range(int(self.config.num_labels))]

    def _load_torch(self, threads: int | None) -> Any:
        if threads is not None:
            torch.set_num_threads(threads)
        has_safetensors = (self.model_dir / "model.safetensors").is_file()
        try:
            model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, use_safetensors=has_safetensors)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as err:
            problem = weights_problem(self.model_dir, err)
            if problem is not None:
                raise PredictError(problem) from None
            raise PredictError(f"{self.model_dir}: the weights cannot be loaded ({type(err).__name__}: {_first_line(err)}) "
                               "(fix: export the model again; the folder is incomplete or damaged)") from None
        return model.eval()

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits [n, C] of ``texts`` (defended when the model has a defense), in input order."""
        items: list[str | tuple[str, str]] = [split_pair(t) for t in texts]
        if self._defend_here:
            items = [tuple(self.defense(list(t))) if isinstance(t, tuple) else self.defense([t])[0]  # type: ignore[misc]
                     for t in items]
        out = np.zeros((len(items), len(self.labels)), dtype=np.float32)
        for pairs in (False, True):  # a batch holds one kind: single texts or sentence pairs
            kind = [i for i, t in enumerate(items) if isinstance(t, tuple) == pairs]
            order = sorted(kind, key=lambda i: len("".join(items[i])))  # similar lengths share a batch
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                inputs = encode(self.tokenizer, [items[i] for i in index], self.max_length)
                out[index] = self._run(inputs)
        return out

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if self.session is not None:
            return session_logits(self.session, inputs)

        with torch.no_grad():
            tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
            return self.model(**tensors, return_dict=True).logits.float().numpy()

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One record per text: the text, the predicted label name and every label's probability."""
        probabilities = _softmax(self.logits(texts)) if texts else np.zeros((0, len(self.labels)))
        return [{"text": text, "label": self.labels[int(p.argmax())],
                 "probabilities": {label: round(float(v), 6) for label, v in zip(self.labels, p)}}
                for text, p in zip(texts, probabilities)]


class _ConfigOnly:
    """What :func:`max_length_of` reads from a model, for backends without the PyTorch model."""

    def __init__(self, config: Any) -> None:
        self.config = config


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadLine:
    """An input line that is not text (not UTF-8): answered with an error object in its place."""

    line: int
    error: str

    def record(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.error}


def _decode_line(raw: bytes, number: int) -> str | BadLine:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return BadLine(number, f"not UTF-8 text ({err.reason} at byte {err.start}: "
                               f"{raw[err.start:err.start + 4]!r}); the line was not classified")


def _read_texts(args: argparse.Namespace, stdin: Iterable[bytes]) -> Iterator[tuple[int, str | BadLine]]:
    """(line number, text or BadLine) of every non-blank input line, in order; bytes are decoded one
    line at a time, so one line in another encoding costs only that line."""
    if args.texts and args.file:
        raise PredictError("give texts as arguments or --file, not both")
    if args.texts:
        for number, text in enumerate(args.texts, start=1):
            try:  # a non-UTF-8 argument arrives with surrogate escapes
                text.encode("utf-8")
            except UnicodeEncodeError:
                yield number, _decode_line(text.encode("utf-8", "surrogateescape"), number)
                continue
            yield number, text
        return
    if args.file is not None:
        if not args.file.is_file():
            raise PredictError(f"--file {args.file} does not exist")
        try:
            lines: Iterable[bytes] = args.file.read_bytes().splitlines()
        except OSError as err:
            raise PredictError(f"--file {args.file} cannot be read ({err.strerror or err})") from None
    else:
        lines = stdin
    for number, raw in enumerate(lines, start=1):
        item = _decode_line(raw.rstrip(b"\r\n"), number)
        if isinstance(item, BadLine) or item.strip():
            yield number, item


def _stdin_bytes() -> Iterable[bytes]:
    """Standard input as raw lines: decoding is per line (:func:`_decode_line`), not the stream's."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return buffer
    return (line.encode("utf-8", "surrogateescape") for line in sys.stdin)  # a text stream put in its place


def split_pair(text: str) -> str | tuple[str, str]:
    """A text, or a sentence pair when it holds a tab (``first<TAB>second``, as GLUE's TSVs write pairs)."""
    if "\t" not in text:
        return text
    first, second = text.split("\t", 1)
    return first, second


def run(args: argparse.Namespace) -> int:
    """Classify the texts and write one JSON line each to stdout (an error object for a line that is
    not text); exit code 2 when any line was bad, after every good line was answered."""
    setup_logging("WARNING")  # stdout is the JSONL; only problems go to stderr
    predictor = Predictor(args.model, args.backend, batch_size=args.batch_size, threads=args.threads)
    pending: list[str | BadLine] = []
    bad: list[int] = []

    def flush() -> None:
        texts = [item for item in pending if isinstance(item, str)]
        answers = iter(predictor.predict(texts))
        for item in pending:
            record = item.record() if isinstance(item, BadLine) else next(answers)
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        pending.clear()

    for number, item in _read_texts(args, _stdin_bytes()):
        pending.append(item)
        if isinstance(item, BadLine):
            bad.append(number)
        if len(pending) >= 64 * args.batch_size:  # stream long inputs in chunks, keeping memory flat
            flush()
    flush()
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        logger.error("predict: %d input line(s) are not UTF-8 text (line %s); each has an error object in the "
                     "output (fix: convert the input to UTF-8, e.g. iconv -f latin1 -t utf-8)", len(bad), shown)
        return 2
    return 0
