"""The ONNX / int8 part of ``rosearch export --onnx [--int8]``: graphs written into a student's
folder, checked on the run's real dev texts, figures added to metrics.json and the model card.

The check texts go through the student's input defense first (the graphs see what the model
sees); the defense itself stays outside the graphs (see :mod:`rosearch.deploy.onnx`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from rosearch.config import Config
from rosearch.data.tasks import load_examples, task_spec
from rosearch.defense.pipeline import Defense, defend_pair
from rosearch.deploy.onnx import INT8_FILE, ONNX_FILE, write_onnx_variants

logger = logging.getLogger(__name__)

CHECK_LIMIT = 2000  # dev texts the logit check and the accuracies run on (SST-2 dev: all 872)


def dev_texts(config: Config, limit: int = CHECK_LIMIT) -> tuple[list[Any], list[int]]:
    """The first ``limit`` dev examples of the run's task: texts (or pairs) and labels."""
    examples = load_examples(task_spec(config.data), "dev", config.data.data_dir)[:limit]
    texts = [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]
    return texts, [e.label for e in examples]


def add_onnx_variants(folder: Path, model: torch.nn.Module, tokenizer: Any, config: Config, defense: Defense | None,
                      *, int8: bool, name: str | None = None) -> dict[str, Any]:
    """Write and check ``model.onnx`` (and ``model.int8.onnx``) in ``folder``; record the figures
    under ``"onnx"`` in its metrics.json and as a section of its README.md (which calls the folder
    ``name``, its published name); return them."""
    texts, labels = dev_texts(config)
    report = write_onnx_variants(model, folder, tokenizer, defend_pair(defense, texts), labels, int8=int8)
    total = len(load_examples(task_spec(config.data), "dev", config.data.data_dir)) if len(texts) == CHECK_LIMIT else len(texts)
    report["check_split"] = f"{config.data.task} dev" + ("" if total == len(texts) else f" (first {len(texts)} of {total})")
    report["defense_in_graph"] = False
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["onnx"] = report
    metrics_path.write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    with (folder / "README.md").open("a", encoding="utf-8") as card:
        card.write(onnx_card_section(report, name or folder.name, defense))
    return report


def onnx_card_section(report: dict[str, Any], folder: str, defense: Defense | None) -> str:
    """The model card's ONNX Runtime section: files, the check, int8's accuracy change, usage."""
    rows = [
        ("`model.onnx` (fp32)", f"{report['size_mb']:.1f} MB", _acc(report.get("dev_accuracy_onnx")), "-"),
    ]
    int8 = report.get("int8")
    if int8:
        change = int8.get("dev_accuracy_change")
        rows.append((f"`{INT8_FILE}` (dynamic int8)", f"{int8['size_mb']:.1f} MB", _acc(int8.get("dev_accuracy")),
                     "n/a" if change is None else f"{change:+.4f}"))
    table = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    defense_note = (
        "\nThe graphs hold only the tensor model. This student's input defenses (`defense.json.gz`) are text "
        "preprocessing: apply `rosearch.defense.load_defense(folder)` to every text before the tokenizer, as "
        "`rosearch predict --backend onnx` does; the figures above were measured that way.\n"
        if defense is not None else "")
    if defense is not None and defense.copies_per_text > 1:
        defense_note += (
            f"Smoothing cannot live in a graph (its {defense.copies_per_text} copies per text are text): "
            "`rosearch predict --backend onnx` runs every text's copies through the session in the same batches "
            "and answers their mean probability; the accuracies above are of one copy, the unsmoothed model.\n")
    return f"""
## ONNX Runtime

Inputs `input_ids`, `attention_mask`, `token_type_ids` (int64, dynamic batch and sequence axes,
up to {report['max_sequence_length']} tokens), output `logits`. Checked at export against PyTorch on
{report['check_texts']} texts of {report['check_split']}: max |Δlogit| {report['max_abs_logit_diff']:.2g}
(tolerance {report['logit_tolerance']:g}); PyTorch dev accuracy {_acc(report.get('dev_accuracy_torch'))}.

| graph | size | dev accuracy (ONNX Runtime) | change vs fp32 |
|---|---|---|---|
{table}
{defense_note}
```bash
rosearch predict --model {folder} --backend onnx "a gripping film"   # or --backend onnx-int8
```
"""


def _acc(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


__all__ = ["CHECK_LIMIT", "ONNX_FILE", "add_onnx_variants", "dev_texts", "onnx_card_section"]
