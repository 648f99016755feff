"""Inference latency of the teacher vs an exported student on the runtimes people deploy on:
PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime dynamic int8, at batch 1 and batch 32.

Inputs are real SST-2 dev sentences, tokenised once beforehand (tokenisation is the same for
both models and is not timed), each batch padded to its own longest sentence. All 12
configurations (2 models x 3 runtimes x 2 batch sizes) are measured in one process, in
interleaved rounds: every round times each configuration once over the same batches, so load
from other processes on a shared machine hits all of them alike, and every ratio compares
figures of the same rounds. Reported: the median over rounds of the mean ms per batch.

With ``--smoothing-copies K`` (default 8; 0 leaves it out) a third model, ``smoothed``, is the
student answering each text by K copies (the smoothing defense's cost: K forward passes, run as
one batch of K rows per text): its copies come from the student's own smoothing defense when it
carries one, else they are K copies of the defended text (the same tokens, so the same cost).

Beside the timings: parameters, file sizes (safetensors, ONNX fp32, ONNX int8) and dev accuracy
of each model on each runtime. The student folder must come from
``rosearch export RUN --onnx --int8`` (its graphs and their dev accuracies are in metrics.json);
the teacher's graphs are exported here, with the same checks, into ``--teacher-onnx``. Run from
the repository root::

    .venv/bin/python bench/latency.py --student runs/quickstart/export/rank1-<hash> [--json bench/results/latency.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import BenchError, console, describe_machine, print_machine, print_table, write_figures  # noqa: E402

from rosearch.config import load_config  # noqa: E402
from rosearch.data.tasks import load_examples  # noqa: E402
from rosearch.defense.pipeline import Defense, defend_copies, load_defense  # noqa: E402
from rosearch.deploy.onnx import (  # noqa: E402
    INT8_FILE, ONNX_FILE, encode, max_length_of, open_session, session_logits, write_onnx_variants,
)
from rosearch.runtime.logs import setup_logging  # noqa: E402

RUNTIMES = ("torch fp32", "ort fp32", "ort int8")
BATCH_SIZES = (1, 32)


def _teacher_dir(config_path: Path) -> Path:
    from rosearch.distill.teacher import resolve_model_path
    from rosearch.prepare.inputs import teacher_output_dir

    config = load_config(config_path, [])
    path = Path(resolve_model_path(config.teacher.model)) if config.teacher.finetuned else teacher_output_dir(config)
    if not (path / "config.json").is_file():
        raise BenchError(f"no fine-tuned teacher at {path} (fix: `rosearch teacher --config {config_path}` first, "
                         "or pass --teacher DIR)")
    return path


def _load(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rosearch.student.modeling import register_auto_classes

    register_auto_classes()
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _graphs(name: str, folder: Path, model: Any, tokenizer: Any, onnx_dir: Path, texts: list[str], labels: list[int]) -> tuple[Path, dict]:
    """The folder holding ``model.onnx`` / ``model.int8.onnx`` and their export report."""
    metrics = folder / "metrics.json"
    if (folder / INT8_FILE).is_file() and metrics.is_file() and "onnx" in json.loads(metrics.read_text()):
        return folder, json.loads(metrics.read_text())["onnx"]
    report_path = onnx_dir / "report.json"
    if (onnx_dir / INT8_FILE).is_file() and report_path.is_file():
        return onnx_dir, json.loads(report_path.read_text())
    console().print(f"exporting the {name}'s ONNX graphs into {onnx_dir} (checked on {len(texts)} dev texts)")
    onnx_dir.mkdir(parents=True, exist_ok=True)
    report = write_onnx_variants(model, onnx_dir, tokenizer, texts, labels, int8=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return onnx_dir, report


def _runner(runtime: str, model: Any, graphs: Path, threads: int) -> Callable[[dict[str, np.ndarray]], Any]:
    if runtime == "torch fp32":
        def run_torch(inputs: dict[str, np.ndarray]) -> Any:
            with torch.no_grad():
                return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}, return_dict=True).logits
        return run_torch
    session = open_session(graphs / (ONNX_FILE if runtime == "ort fp32" else INT8_FILE), threads)
    return lambda inputs: session_logits(session, inputs)


def _time_once(run: Callable[[dict[str, np.ndarray]], Any], batches: list[dict[str, np.ndarray]]) -> float:
    """Mean ms per batch over ``batches`` (one pass)."""
    start = time.perf_counter()
    for inputs in batches:
        run(inputs)
    return 1000 * (time.perf_counter() - start) / len(batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, required=True, help="a folder of `rosearch export RUN --onnx --int8`")
    parser.add_argument("--teacher", type=Path, help="teacher folder (default: the fine-tuned teacher of --config)")
    parser.add_argument("--config", type=Path, default=Path("configs/quickstart.yaml"))
    parser.add_argument("--teacher-onnx", type=Path, default=Path("runs/latency/teacher-onnx"),
                        help="where the teacher's graphs are written (reused when present)")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue/SST-2"))
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of PyTorch and ONNX Runtime")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (the median is reported)")
    parser.add_argument("--texts-b1", type=int, default=48, help="sentences timed one at a time per round")
    parser.add_argument("--batches-b32", type=int, default=3, help="batches of 32 timed per round")
    parser.add_argument("--smoothing-copies", type=int, default=8,
                        help="copies per text of the smoothed student row (0: no such row)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    if args.threads < 1 or args.rounds < 1 or args.texts_b1 < 1 or args.batches_b32 < 1:
        raise BenchError("--threads, --rounds, --texts-b1 and --batches-b32 must be positive")
    if not 0 <= args.smoothing_copies <= 256:
        raise BenchError(f"--smoothing-copies must be from 0 to 256, got {args.smoothing_copies}")
    torch.set_num_threads(args.threads)
    out = console()
    print_machine(out, describe_machine(torch.device("cpu")))

    dev = load_examples("sst2", "dev", args.data_dir)
    texts, labels = [e.text_a for e in dev], [e.label for e in dev]
    folders = {"teacher": args.teacher or _teacher_dir(args.config), "student": args.student}
    if not (args.student / "config.json").is_file():
        raise BenchError(f"{args.student} is not an exported student (fix: `rosearch export RUN --onnx --int8 --out DIR`)")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))  # a seeded sample of dev sentences, the same for every model
    b1_texts = [texts[i] for i in order[:args.texts_b1]]
    b32_texts = [[texts[i] for i in order[k * 32:(k + 1) * 32]] for k in range(args.batches_b32)]

    runners: dict[tuple[str, str, int], Callable] = {}
    inputs: dict[tuple[str, int], list[dict[str, np.ndarray]]] = {}
    facts: dict[str, dict[str, Any]] = {}
    for name, folder in folders.items():
        model, tokenizer = _load(folder)
        defense = load_defense(folder)
        defend = (lambda xs: defense(xs)) if defense is not None else (lambda xs: list(xs))  # noqa: E731
        graphs, report = _graphs(name, folder, model, tokenizer, args.teacher_onnx, defend(texts), labels)
        max_length = max_length_of(model, tokenizer)
        inputs[(name, 1)] = [encode(tokenizer, [t], max_length) for t in defend(b1_texts)]
        inputs[(name, 32)] = [encode(tokenizer, defend(chunk), max_length) for chunk in b32_texts]
        for runtime in RUNTIMES:
            for batch in BATCH_SIZES:
                runners[(name, runtime, batch)] = _runner(runtime, model, graphs, args.threads)
        if name == "student" and args.smoothing_copies:
            copy = _copier(defense, args.smoothing_copies)
            inputs[("smoothed", 1)] = [encode(tokenizer, copy([t]), max_length) for t in b1_texts]
            inputs[("smoothed", 32)] = [encode(tokenizer, copy(chunk), max_length) for chunk in b32_texts]
            for runtime in RUNTIMES:
                for batch in BATCH_SIZES:
                    runners[("smoothed", runtime, batch)] = _runner(runtime, model, graphs, args.threads)
        weights = folder / "model.safetensors"
        facts[name] = {
            "folder": str(folder), "params": sum(p.numel() for p in model.parameters()),
            "safetensors_mb": weights.stat().st_size / 1e6 if weights.is_file() else None,
            "onnx_mb": report["size_mb"], "int8_mb": report["int8"]["size_mb"],
            "dev_accuracy": {"torch fp32": report["dev_accuracy_torch"], "ort fp32": report["dev_accuracy_onnx"],
                             "ort int8": report["int8"]["dev_accuracy"]},
            "max_abs_logit_diff": report["max_abs_logit_diff"], "check_texts": report["check_texts"],
            "defense": list(defense.names) if defense is not None else [],
        }

    for key, run in runners.items():  # warm-up: first-call allocations and ORT's lazy initialisation
        _time_once(run, inputs[(key[0], key[2])][:2])
    samples: dict[tuple[str, str, int], list[float]] = {key: [] for key in runners}
    for _ in range(args.rounds):
        for key, run in runners.items():
            samples[key].append(_time_once(run, inputs[(key[0], key[2])]))
    ms = {key: statistics.median(v) for key, v in samples.items()}

    rows = []
    smoothed = f"smoothed ms (k={args.smoothing_copies})"
    for runtime in RUNTIMES:
        for batch in BATCH_SIZES:
            t, s = ms[("teacher", runtime, batch)], ms[("student", runtime, batch)]
            rows.append((runtime, batch, f"{t:.2f}", f"{s:.2f}", f"{t / s:.1f}x",
                         f"{ms[('teacher', 'torch fp32', batch)] / t:.2f}x", f"{ms[('student', 'torch fp32', batch)] / s:.2f}x")
                        + ((f"{ms[('smoothed', runtime, batch)]:.2f}",) if args.smoothing_copies else ()))
    print_table(out, f"latency, ms per batch (median of {args.rounds} interleaved rounds; {args.threads} thread(s); "
                     f"batch 1: {args.texts_b1} sentences, batch 32: {args.batches_b32} batches per round)",
                ("runtime", "batch", "teacher ms", "student ms", "student speed-up", "teacher vs torch", "student vs torch")
                + ((smoothed,) if args.smoothing_copies else ()), rows)
    size_rows = []
    for name, f in facts.items():
        acc = f["dev_accuracy"]
        size_rows.append((name, f"{f['params'] / 1e6:.2f}M", _mb(f["safetensors_mb"]), _mb(f["onnx_mb"]), _mb(f["int8_mb"]),
                          f"{acc['torch fp32']:.4f}", f"{acc['ort fp32']:.4f}", f"{acc['ort int8']:.4f}",
                          f"{f['max_abs_logit_diff']:.1g}"))
    print_table(out, f"models (dev accuracy on the {len(texts)} SST-2 dev sentences)",
                ("model", "params", "safetensors MB", "onnx MB", "int8 MB", "acc torch", "acc ort fp32", "acc ort int8",
                 "max |Δlogit| ort"), size_rows)
    write_figures(args.json, {
        "machine": dataclasses.asdict(describe_machine(torch.device("cpu"))), "threads": args.threads, "rounds": args.rounds,
        "texts_b1": args.texts_b1, "batches_b32": args.batches_b32, "models": facts,
        "ms_per_batch": {f"{m}|{r}|b{b}": v for (m, r, b), v in ms.items()},
        "samples": {f"{m}|{r}|b{b}": v for (m, r, b), v in samples.items()},
    })
    return 0


def _copier(defense: Defense | None, copies: int) -> Callable[[list[str]], list[str]]:
    """Texts -> every text's smoothing copies, consecutive: the student's own smoothing when it carries
    ``copies`` of them, else ``copies`` repeats of the defended text (the same rows, so the same cost)."""
    if defense is not None and defense.copies_per_text == copies:
        return lambda texts: defend_copies(defense, texts)
    return lambda texts: [t for t in (defense(texts) if defense is not None else texts) for _ in range(copies)]


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"latency: {err}", file=sys.stderr)
        sys.exit(2)
