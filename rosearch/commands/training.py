"""What ``rosearch search``, ``rosearch teacher`` and ``rosearch distill`` do, given parsed arguments.

:mod:`rosearch.cli` parses the command line and imports this module only when one of these
commands runs (it pulls in torch, transformers and Ray).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from functools import partial

from rich.console import Console
from rich.table import Table

from rosearch.prepare import inputs as prepare  # prepare.prepare_inputs looked up per call (tests replace it)
from rosearch.commands.ablate import run_ablation
from rosearch.config import Config, load_config
from rosearch.defense.names import DEFENSE_NAMES
from rosearch.evaluate.candidate import evaluate_candidate
from rosearch.files.outputs import publish_modes
from rosearch.prepare.preflight import check_data_files, check_teacher_fit, load_genome_files, teacher_shape
from rosearch.results.summary_view import summary_lines, summary_table
from rosearch.files.rundir import ensure_writable_dir
from rosearch.runtime.settings import apply_run_settings
from rosearch.search import candidate_seed, run_search
from rosearch.search_space.cost import count_parameters
from rosearch.search_space.neighbours import parse_genes
from rosearch.search_space.sampling import sample_genome
from rosearch.files.tokenizer_files import read_tokenizer_files

logger = logging.getLogger("rosearch")

SEARCH_FAILED_RC = 3  # the search ran, but too many of its candidates failed (run.max_failed_share)


def _console() -> Console:
    """Stdout console; wide when redirected to a file so result tables are not truncated."""
    console = Console()
    return console if console.is_terminal else Console(width=220)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def cmd_teacher(args: argparse.Namespace) -> int:
    """Fine-tune (or load) the teacher and cache its outputs on the training split."""
    config = _config(args)
    check_data_files(config.data)  # before the teacher is loaded
    device = apply_run_settings(config.run)
    start = time.perf_counter()
    inputs = prepare.prepare_inputs(config, device)
    _console().print(
        f"teacher {inputs.teacher_dir}: dev accuracy {inputs.teacher_dev_accuracy:.4f}; "
        f"outputs cached for {len(inputs.train)} training examples ({time.perf_counter() - start:.1f}s)"
    )
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil students (given genomes, or sampled from the search space) and report dev accuracy."""
    config = _config(args)
    check_data_files(config.data)
    shape = teacher_shape(config.teacher)  # seconds: data files, teacher shape, genome files and output dir before preparation
    check_teacher_fit(config, shape)
    genomes = load_genome_files(args.genome, config, shape) if args.genome else []
    carried = {name for genome in genomes for name in genome.defenses} - set(config.search_space.defenses_used())
    if carried:  # prepare what the given genomes' defenses need, as if the search could choose them
        choices = [n for n in DEFENSE_NAMES if n in carried | set(config.search_space.defense_choices)]
        config = load_config(args.config, [*args.overrides, f"search_space.defense_choices={json.dumps(choices)}"])
    ensure_writable_dir(config.run.run_dir, "run directory")
    device = apply_run_settings(config.run)
    inputs = prepare.prepare_inputs(config, device)
    if not args.genome:
        rng = random.Random(config.run.seed)
        counter = partial(
            count_parameters, vocab_size=inputs.vocab_size, num_labels=inputs.num_labels,
            max_position_embeddings=inputs.max_position_embeddings, type_vocab_size=inputs.type_vocab_size,
        )
        genomes = [sample_genome(rng, config.search_space, param_count=counter) for _ in range(args.count)]

    out_root = config.run.run_dir / "students"
    rows = []
    for i, genome in enumerate(genomes):
        logger.info("student %d/%d: %s", i + 1, len(genomes), genome.hash()[:12])
        # the same seed a search uses for this genome, so a search's winner is reproduced exactly
        seed = candidate_seed(config.run.seed, genome.hash())
        model, metrics = evaluate_candidate(genome, inputs, config.distill, seed=seed, device=device)
        out = out_root / metrics.genome_hash[:16]
        model.save_pretrained(out)
        for name, content in read_tokenizer_files(inputs.teacher_dir).items():  # so `rosearch attack --model` works
            (out / name).write_bytes(content)
        publish_modes(out)
        (out / "genome.json").write_text(genome.to_json())
        defense = inputs.defense(genome.defenses)
        if defense is not None:  # the student is only itself with its input defenses (attack and predict load them)
            defense.save(out)
        (out / "metrics.json").write_text(json.dumps(metrics.to_dict() | {"teacher_dev_accuracy": inputs.teacher_dev_accuracy}, indent=2))
        rows.append((out, genome, metrics))

    table = Table(title=f"distilled students (teacher dev accuracy {inputs.teacher_dev_accuracy:.4f})")
    for column in ("student", "H", "E", "L", "defenses", "params", "MFLOPs", "dev acc", "train s"):
        table.add_column(column)
    for out, genome, m in rows:
        table.add_row(
            str(out), str(genome.hidden_size), str(genome.embedding_size), str(genome.num_layers),
            "+".join(genome.defenses) or "-",
            f"{m.params / 1e6:.2f}M", f"{m.flops / 1e6:.1f}", f"{m.dev_accuracy:.4f}", f"{m.train_seconds:.0f}",
        )
    _console().print(table)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume) an evolutionary search and print the best students."""
    overrides = list(args.overrides)
    if args.ray_address:
        overrides += ["workers.backend=ray", f"workers.address={args.ray_address}"]
    config = load_config(args.config, overrides)
    apply_run_settings(config.run)
    summary = run_search(config, resume=args.resume)
    _console().print(summary_table(summary))
    for line in summary_lines(summary):
        _console().print(line)
    verdict = summary.failure_verdict(config.run.max_failed_share)
    if verdict:
        logger.error("search %s: %s", summary.run_dir, verdict)
        return SEARCH_FAILED_RC
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    """Evaluate a genome and its one-gene neighbours under k seeds and print the paired effects."""
    config = _config(args)
    apply_run_settings(config.run)
    result = run_ablation(config, args.genome, args.seeds, parse_genes(args.genes))
    console = _console()
    console.print(f"ablation around {result.base_hash[:12]}: {len(result.seeds)} seeds {result.seeds}; "
                  f"{result.evaluated} evaluated now, {result.reused} found in the store, {result.failed} failed")
    console.print(f"noise: {result.noise_source}")
    table = Table(title="paired effects: mean of (variant - base) per seed, 95% t-interval; "
                        "noise floor = the base's seed sd", title_justify="left")
    for column in ("gene", "change", "metric", "seeds", "base", "noise floor", "variant", "mean diff", "95% CI",
                   "verdict"):
        table.add_column(column, justify="left" if column in ("gene", "change", "metric", "verdict") else "right")
    for row in result.rows:
        if row.skipped and not row.seeds:
            table.add_row(row.gene, row.change, row.metric, "0", "", "", "", "", "", f"skipped: {row.skipped}")
            continue
        table.add_row(row.gene, row.change, row.metric, str(row.seeds), f"{row.base_mean:.4f}", f"{row.base_sd:.4f}",
                      f"{row.variant_mean:.4f}", f"{row.mean_diff:+.4f}", f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]",
                      row.verdict)
    console.print(table)
    console.print(f"wrote {', '.join(str(p) for p in result.paths)}")
    return 0
