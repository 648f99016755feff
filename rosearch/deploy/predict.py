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
from rosearch.quiet import setup_logging
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
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
            raise PredictError(f"{self.model_dir}: the weights cannot be loaded ({type(err).__name__}: {_first_line(err)}) "
                               "(fix: export the model again; the folder is incomplete or damaged)") from None
        return model.eval()

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits [n, C] of ``texts`` (defended when the model has a defense), in input order."""
        texts = list(texts)
        if self._defend_here:
            texts = self.defense(texts)  # type: ignore[misc]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            inputs = encode(self.tokenizer, [texts[i] for i in index], self.max_length)
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


def _read_texts(args: argparse.Namespace, stdin: Iterable[str]) -> Iterator[str]:
    if args.texts and args.file:
        raise PredictError("give texts as arguments or --file, not both")
    if args.texts:
        yield from args.texts
        return
    if args.file is not None:
        if not args.file.is_file():
            raise PredictError(f"--file {args.file} does not exist")
        try:
            lines: Iterable[str] = args.file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise PredictError(f"--file {args.file} is not UTF-8 text ({err})") from None
    else:
        lines = stdin
    for line in lines:
        line = line.rstrip("\r\n")
        if line.strip():
            yield line


def run(args: argparse.Namespace) -> int:
    """Classify the texts and write one JSON line each to stdout."""
    setup_logging("WARNING")  # stdout is the JSONL; only problems go to stderr
    predictor = Predictor(args.model, args.backend, batch_size=args.batch_size, threads=args.threads)
    pending: list[str] = []

    def flush() -> None:
        for record in predictor.predict(pending):
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        pending.clear()

    for text in _read_texts(args, sys.stdin):
        pending.append(text)
        if len(pending) >= 64 * args.batch_size:  # stream long inputs in chunks, keeping memory flat
            flush()
    flush()
    return 0
