"""The ``rosearch`` command: one subcommand per user task, each driven by one config file.

This module is the whole command-line surface: the one registry of commands (:data:`COMMANDS`),
their arguments and help. It imports only the standard library and light rosearch modules, so
``rosearch --help`` and ``rosearch <command> --help`` start fast; a command's implementation
(torch, transformers, Ray, TextAttack) is imported when the command runs. Every error a user can
fix derives from :class:`~rosearch.errors.UserError` and prints as one message with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Any, Callable, NamedTuple, Sequence

from rosearch.config import ConfigError
from rosearch.errors import Interrupted, UserError
from rosearch.runtime.logs import LOG_LEVEL_ENV


class Command(NamedTuple):
    """One subcommand: its help line, its arguments, and what runs it (importing its implementation)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# search, teacher, distill: one config file (+ --set overrides) each
# --------------------------------------------------------------------------------------------


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="YAML or TOML config file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set distill.max_steps=200 (repeatable)",
    )


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in run.output_dir/run.name")
    parser.add_argument("--ray-address", help="join a Ray cluster ('auto' or host:port) instead of local Ray")


def _add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--genome", action="append", default=[], help="genome JSON file (repeatable); default: sample")
    parser.add_argument("--count", type=_positive_int, default=1,
                        help="how many genomes to sample when no --genome is given")


def _add_ablate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--genome", required=True,
                        help="the base genome: a genome JSON file, or the hash (6+ leading characters) of a stored one")
    parser.add_argument("--seeds", type=_positive_int, default=3,
                        help="seeds per genome (k >= 2); the same k seeds for the base and every neighbour")
    parser.add_argument("--genes", default="all",
                        help="comma-separated genes to vary: op,hidden,embedding,depth,defense,training "
                             "(default: all; 'none': only the base's seed noise)")


def _run_ablate(args: argparse.Namespace) -> int:
    from rosearch.commands.training import cmd_ablate  # lazy: torch, transformers, Ray

    return cmd_ablate(args)


def _run_search(args: argparse.Namespace) -> int:
    from rosearch.commands.training import cmd_search  # lazy: torch, transformers, Ray

    return cmd_search(args)


def _run_teacher(args: argparse.Namespace) -> int:
    from rosearch.commands.training import cmd_teacher  # lazy: torch, transformers, Ray

    return cmd_teacher(args)


def _run_distill(args: argparse.Namespace) -> int:
    from rosearch.commands.training import cmd_distill  # lazy: torch, transformers, Ray

    return cmd_distill(args)


# --------------------------------------------------------------------------------------------
# attack, predict: a trained classifier
# --------------------------------------------------------------------------------------------


def _add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rosearch attack`` flags (all but --model default to the config's values; see
    :data:`rosearch.attack.command._OVERRIDES`)."""
    parser.add_argument("--model", required=True, type=Path, help="HF classifier dir or exported rosearch student dir")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer dir, when the model dir has none")
    parser.add_argument("--task", help="task name (default: data.task, sst2)")
    parser.add_argument("--data-dir", help="GLUE-format task files (default: data.data_dir; unset: HF datasets)")
    parser.add_argument("--recipe", action="append", help="attack recipe, repeatable (default: attack.recipe)")
    parser.add_argument("--n", type=int, help="dev examples to attack (default: attack.num_examples)")
    parser.add_argument("--seed", type=int, help="sample and recipe seed (default: attack.seed)")
    parser.add_argument("--query-budget", type=int, help="model queries per example (default: unlimited)")
    parser.add_argument("--batch-size", type=int, help="texts per model forward (default: attack.model_batch_size)")
    parser.add_argument("--workers", type=int, help="parallel attack processes (default: attack.num_workers)")
    parser.add_argument("--max-length", type=int, help="tokens after truncation (default: data.max_length)")
    parser.add_argument("--neighbors", help="synonym-neighbour table for textfooler-local (.json/.json.gz)")
    parser.add_argument("--sentence-encoder", help="local USE stand-in for textfooler-local (dir or pkg:...)")
    parser.add_argument("--wordnet-dir", help="WordNet 3.0 dict dir (default: $ROSEARCH_WORDNET_DIR, /usr/share/wordnet)")
    parser.add_argument("--nltk-data", help="NLTK data dir rosearch provisions (default: <cache-dir>/nltk_data)")
    parser.add_argument("--out", type=Path, help="output dir (default: <model>/attacks)")
    parser.add_argument("--cache-dir", help="rosearch cache dir (default: run.cache_dir)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: run.device)")
    parser.add_argument("--config", type=Path, help="YAML/TOML config whose attack/data/run sections give defaults")


def _run_attack(args: argparse.Namespace) -> int:
    from rosearch.attack.command import run  # lazy: torch, transformers, TextAttack

    return run(args)


PREDICT_BACKENDS = ("torch", "onnx", "onnx-int8")  # the keys of rosearch.deploy.predict.BACKENDS


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to classify (default: --file, else one per line from stdin); first<TAB>second is a sentence pair")
    parser.add_argument("--model", type=Path, required=True, help="exported student or HF classifier directory")
    parser.add_argument("--file", type=Path, help="UTF-8 file with one text per line")
    parser.add_argument("--backend", choices=list(PREDICT_BACKENDS), default="torch",
                        help="torch (the safetensors weights), onnx or onnx-int8 (the graphs of `export --onnx`)")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="texts per forward pass")
    parser.add_argument("--threads", type=_positive_int, help="intra-op CPU threads (default: the runtime's)")


def _run_predict(args: argparse.Namespace) -> int:
    from rosearch.deploy.predict import run  # lazy: torch, transformers, ONNX Runtime

    return run(args)


# --------------------------------------------------------------------------------------------
# stats, report, export, snapshot: the analysis of a finished (or running) run
# --------------------------------------------------------------------------------------------


def _add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory (runs/<run.name>)")
    parser.add_argument("--top-k", type=_positive_int, default=5, help="size of the top group compared with the rest")
    parser.add_argument("--out", type=Path, help="directory for the CSV tables (default: <run_dir>/stats)")


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory (runs/<run.name>)")
    parser.add_argument("--out", type=Path, help="HTML file to write (default: <run_dir>/report.html)")
    parser.add_argument("--top-k", type=_positive_int, default=5, help="students shown in detail (with cell drawings)")


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory (runs/<run.name>)")
    parser.add_argument("--top", type=_positive_int, default=3, help="how many of the best students to export")
    parser.add_argument("--out", type=Path, required=True, help="directory that receives one folder per student")
    parser.add_argument("--retrain-steps", type=_positive_int,
                        help="distil each student again for this many steps (default: the search's weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (for any distillation)")
    parser.add_argument("--onnx", action="store_true",
                        help="also write model.onnx (dynamic batch/sequence), checked by ONNX Runtime on the dev texts")
    parser.add_argument("--int8", action="store_true",
                        help="also write model.int8.onnx (ONNX Runtime dynamic quantisation; implies --onnx) "
                             "and record its dev-accuracy change")


def _add_snapshot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory (runs/<run.name>) or its results.sqlite")
    parser.add_argument("out", type=Path, help="file to write (must not exist), e.g. backups/run-2026-01-01.sqlite")


def _run_stats(args: argparse.Namespace) -> int:
    from rosearch.commands.analysis import run_stats  # lazy: pandas, scipy, rich

    return run_stats(args)


def _run_report(args: argparse.Namespace) -> int:
    from rosearch.commands.analysis import run_report  # lazy: pandas, matplotlib

    return run_report(args)


def _run_export(args: argparse.Namespace) -> int:
    from rosearch.commands.analysis import run_export  # lazy: torch, transformers, ONNX

    return run_export(args)


def _run_snapshot(args: argparse.Namespace) -> int:
    from rosearch.results.snapshot import run  # lazy: keeps the parser to the standard library

    return run(args)


# --------------------------------------------------------------------------------------------
# The registry and the entry point
# --------------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "attack": Command("attack a trained classifier with TextAttack recipes", _add_attack_arguments, _run_attack),
    "predict": Command("classify texts (arguments, --file or stdin) as JSON lines", _add_predict_arguments,
                       _run_predict),
    "stats": Command("statistics of a run: which shapes and operations go with robustness", _add_stats_arguments,
                     _run_stats),
    "report": Command("write a self-contained HTML report of a run", _add_report_arguments, _run_report),
    "export": Command("export a run's best students as Hugging Face model folders", _add_export_arguments, _run_export),
    "snapshot": Command("copy a run's results.sqlite consistently, even while it runs", _add_snapshot_arguments,
                        _run_snapshot),
    "search": Command("run or resume an evolutionary search for robust students", _add_search_arguments, _run_search),
    "ablate": Command("vary one gene at a time around a genome, k seeds each: paired effects on robustness",
                      _add_ablate_arguments, _run_ablate),
    "teacher": Command("fine-tune or load the teacher and cache its outputs", _add_config_args, _run_teacher),
    "distill": Command("distil students from the cached teacher and report dev accuracy", _add_distill_arguments,
                       _run_distill),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rosearch", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors too")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        # --debug also after the command (``run_search.py --debug`` puts it there)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of user errors too")
        p.add_argument("--verbose", "-v", action="store_true",
                       help="log level DEBUG: also show the library messages a normal run keeps quiet")
        p.set_defaults(run=command.run)
    return parser


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _catch_sigterm() -> tuple[bool, Any]:
    """Turn SIGTERM (a scheduler's stop) into :class:`Interrupted`, so a command ends like Ctrl-C:
    cleanly, within seconds. Returns (whether it was set: only on the main thread, the previous handler)."""
    if threading.current_thread() is not threading.main_thread():
        return False, None
    return True, signal.signal(signal.SIGTERM, _raise_interrupted)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:  # read by runtime.logs.setup_logging here and in every child process
        os.environ[LOG_LEVEL_ENV] = "DEBUG"
    caught, previous = _catch_sigterm()
    try:
        return args.run(args)
    except UserError as exc:  # bad input the user can fix: the message says how, no traceback
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        what = "config error" if isinstance(exc, ConfigError) else type(exc).__name__
        print(f"rosearch: {what}: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:  # Ctrl-C or SIGTERM: finished work is kept, locks released
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        hint = " — resume with --resume" if args.command == "search" else ""
        print(f"rosearch: interrupted{hint} ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    finally:
        if caught:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
