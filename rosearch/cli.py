"""The ``rosearch`` command: one subcommand per user task, each driven by one config file.

Arguments are turned into a validated :class:`~rosearch.config.Config` here and nothing below
this module sees argparse.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.table import Table

from rosearch.attack.resources import MissingResourceError
from rosearch.config import Config, ConfigError, load_config
from rosearch.data import DataError
from rosearch.deploy.onnx import OnnxExportError
from rosearch.deploy.predict import PredictError
from rosearch.distill.teacher import TeacherError
from rosearch.distill.teacher_cache import TeacherCacheError
from rosearch.errors import UserError
from rosearch.evolution.operators import SearchSpaceExhaustedError
from rosearch.prepare import ProxySetError
from rosearch.results.export import ExportError
from rosearch.results.stats import StatsError
from rosearch.results.store import ResultStoreError
from rosearch.runtime import LOG_LEVEL_ENV
from rosearch.search_space.genome import InvalidGenomeError
from rosearch.search_space.sampling import BudgetError
from rosearch.workers import BackendSetupError

logger = logging.getLogger("rosearch")

USER_ERRORS = (
    ResultStoreError, DataError, TeacherError, BackendSetupError, BudgetError, SearchSpaceExhaustedError,
    InvalidGenomeError, MissingResourceError, ProxySetError, StatsError, ExportError, TeacherCacheError, UserError,
    OnnxExportError, PredictError,
)
SEARCH_FAILED_RC = 3  # the search ran, but too many of its candidates failed (run.max_failed_share)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="YAML or TOML config file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set distill.max_steps=200 (repeatable)",
    )


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="log level DEBUG: also show the library messages a normal run keeps quiet")


def _console() -> Console:
    """Stdout console; wide when redirected to a file so result tables are not truncated."""
    console = Console()
    return console if console.is_terminal else Console(width=220)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def cmd_teacher(args: argparse.Namespace) -> int:
    """Fine-tune (or load) the teacher and cache its outputs on the training split."""
    from rosearch.prepare import prepare_inputs
    from rosearch.runtime import apply_run_settings

    config = _config(args)
    device = apply_run_settings(config.run)
    start = time.perf_counter()
    inputs = prepare_inputs(config, device)
    _console().print(
        f"teacher {inputs.teacher_dir}: dev accuracy {inputs.teacher_dev_accuracy:.4f}; "
        f"outputs cached for {len(inputs.train)} training examples ({time.perf_counter() - start:.1f}s)"
    )
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil students (given genomes, or sampled from the search space) and report dev accuracy."""
    from rosearch.defense.names import DEFENSE_NAMES
    from rosearch.evaluate.candidate import evaluate_candidate
    from rosearch.prepare import prepare_inputs
    from rosearch.runtime import apply_run_settings
    from rosearch.search_space.cost import count_parameters
    from rosearch.search_space.genome import Genome
    from rosearch.search import candidate_seed
    from rosearch.search_space.sampling import sample_genome
    from rosearch.tokenizer_files import read_tokenizer_files

    from rosearch.preflight import check_teacher_fit, load_genome_files, teacher_shape
    from rosearch.rundir import ensure_writable_dir

    config = _config(args)
    shape = teacher_shape(config)  # seconds: teacher shape, genome files and output dir before preparation
    check_teacher_fit(config, shape)
    genomes = load_genome_files(args.genome, config, shape) if args.genome else []
    carried = {name for genome in genomes for name in genome.defenses} - set(config.search_space.defenses_used())
    if carried:  # prepare what the given genomes' defenses need, as if the search could choose them
        choices = [n for n in DEFENSE_NAMES if n in carried | set(config.search_space.defense_choices)]
        config = load_config(args.config, [*args.overrides, f"search_space.defense_choices={json.dumps(choices)}"])
    ensure_writable_dir(config.run.run_dir, "run directory")
    device = apply_run_settings(config.run)
    inputs = prepare_inputs(config, device)
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
        model, metrics = evaluate_candidate(genome, inputs, config, seed=seed, device=device)
        out = out_root / metrics.genome_hash[:16]
        model.save_pretrained(out)
        for name, content in read_tokenizer_files(inputs.teacher_dir).items():  # so `rosearch attack --model` works
            (out / name).write_bytes(content)
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
    from rosearch.runtime import apply_run_settings
    from rosearch.search import run_search

    overrides = list(args.overrides)
    if args.ray_address:
        overrides += ["workers.backend=ray", f"workers.address={args.ray_address}"]
    config = load_config(args.config, overrides)
    apply_run_settings(config.run)
    summary = run_search(config, resume=args.resume)
    from rosearch.results.summary_view import summary_lines, summary_table

    _console().print(summary_table(summary))
    for line in summary_lines(summary):
        _console().print(line)
    verdict = summary.failure_verdict(config.run.max_failed_share)
    if verdict:
        logger.error("search %s: %s", summary.run_dir, verdict)
        return SEARCH_FAILED_RC
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "search": (cmd_search, "run or resume an evolutionary search for robust students"),
    "teacher": (cmd_teacher, "fine-tune or load the teacher and cache its outputs"),
    "distill": (cmd_distill, "distil students from the cached teacher and report dev accuracy"),
}


def _extension_commands() -> dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]]:
    """Commands that own their arguments: attacks on any model, and the analysis of finished runs."""
    from rosearch.attack import command as attack_command
    from rosearch.deploy import predict
    from rosearch.results.commands import COMMANDS as RESULTS_COMMANDS

    return {
        "attack": (attack_command.add_arguments, attack_command.run, "attack a trained classifier with TextAttack recipes"),
        "predict": (predict.add_arguments, predict.run, "classify texts (arguments, --file or stdin) as JSON lines"),
        **RESULTS_COMMANDS,
    }


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` also after the command (``run_search.py --debug`` puts it there)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of user errors too")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rosearch", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors too")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, run, help_text) in _extension_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
        _add_debug(p)
        _add_verbose(p)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_config_args(p)
        _add_debug(p)
        _add_verbose(p)
        if name == "search":
            p.add_argument("--resume", action="store_true", help="continue the run in run.output_dir/run.name")
            p.add_argument("--ray-address", help="join a Ray cluster ('auto' or host:port) instead of local Ray")
        if name == "distill":
            p.add_argument("--genome", action="append", default=[], help="genome JSON file (repeatable); default: sample")
            p.add_argument("--count", type=int, default=1, help="how many genomes to sample when no --genome is given")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:  # read by runtime.setup_logging here and in every child process
        os.environ[LOG_LEVEL_ENV] = "DEBUG"
    try:
        return args.run(args) if args.command not in COMMANDS else COMMANDS[args.command][0](args)
    except USER_ERRORS as exc:  # bad input the user can fix: the message says how, no traceback
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        what = "config error" if isinstance(exc, ConfigError) else type(exc).__name__
        print(f"rosearch: {what}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
