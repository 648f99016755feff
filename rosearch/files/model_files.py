"""Checks of a classifier directory given to ``predict`` and ``attack``, before and after loading it.

A hand-edited or foreign ``config.json`` with a string where a size belongs makes torch fail deep
inside a layer constructor with a TypeError; weights that cannot be loaded make transformers talk
about TF 2.0 checkpoints. These helpers name the field or file and the fix instead. Standard
library only.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from rosearch.errors import UserError

# config.json fields every BERT-like classifier (and a rosearch student) reads as sizes or counts
INT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size", "num_labels", "embedding_size")
FLOAT_FIELDS = ("layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range")
PICKLE_WEIGHTS = "pytorch_model.bin"
SAFETENSORS_WEIGHTS = "model.safetensors"


class ModelDirError(UserError, ValueError):
    """A model directory's files cannot be used; the message names the file or field and the fix."""


def check_model_config(model_dir: Path, flag: str = "--model") -> dict:
    """``model_dir/config.json`` as a dict, refusing one whose size and rate fields have the wrong type."""
    path = model_dir / "config.json"
    fix = "(fix: correct it, or pass a folder written by `rosearch export` or save_pretrained)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelDirError(f"{flag} {model_dir}: {path.name} cannot be read as JSON ({exc}) {fix}") from None
    if not isinstance(data, dict):
        raise ModelDirError(f"{flag} {model_dir}: {path.name} holds a {type(data).__name__}, not a JSON object {fix}")
    for name in INT_FIELDS:
        value = data.get(name)
        if name in data and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ModelDirError(f"{flag} {model_dir}: {path.name} field {name!r} must be a positive integer, "
                                f"got {value!r} {fix}")
    for name in FLOAT_FIELDS:
        value = data.get(name)
        if name in data and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ModelDirError(f"{flag} {model_dir}: {path.name} field {name!r} must be a number, got {value!r} {fix}")
    if "id2label" in data and not isinstance(data["id2label"], dict):
        raise ModelDirError(f"{flag} {model_dir}: {path.name} field 'id2label' must be a mapping of label id to "
                            f"name, got {data['id2label']!r} {fix}")
    return data


def weights_problem(model_dir: Path, err: BaseException) -> str | None:
    """What is wrong with the weights, when loading them failed for a reason a user can act on, else None.

    The case this names: a directory whose only weights are a ``pytorch_model.bin`` pickle that
    is not a plain state dict (e.g. ``torch.save(model)``). torch loads weights with
    ``weights_only=True`` and refuses such a pickle; transformers then says "If you tried to load a
    PyTorch model from a TF 2.0 checkpoint", which is not the case.
    """
    if (model_dir / SAFETENSORS_WEIGHTS).is_file() or not (model_dir / PICKLE_WEIGHTS).is_file():
        return None
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, pickle.UnpicklingError) and "Weights only load failed" in str(cause):
            return (f"{model_dir} holds no {SAFETENSORS_WEIGHTS}, only {PICKLE_WEIGHTS}, a pickle that is not a plain "
                    "tensor state dict (a whole pickled model?); torch refuses to unpickle arbitrary objects from "
                    f"it (weights_only=True), since that could run any code (fix: if you trust the file, load it in "
                    f"your own code and save the model with save_pretrained(dir) to get {SAFETENSORS_WEIGHTS})")
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, OSError):
        return (f"{model_dir} holds no {SAFETENSORS_WEIGHTS}, and its {PICKLE_WEIGHTS} cannot be loaded (damaged, "
                f"or not a PyTorch checkpoint) (fix: save the model again with save_pretrained(dir))")
    return None
