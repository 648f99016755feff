"""``rosearch attack``: attack a saved classifier (a teacher or an exported student) on dev data.

Values come from ``--config``'s attack (and data/run) sections when given; flags override them,
and the merged config is validated like any other, so a bad value is reported with its field
name. Results are printed as a table and written as JSON (per-example rows) + CSV (summary).
The flags themselves are defined in :mod:`rosearch.cli` (the one command registry).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rosearch.attack.recipes import recipe_names
from rosearch.attack.runner import attack_model, reports_table, sample_attack_examples, write_reports
from rosearch.config import Config, config_from_dict, load_config
from rosearch.data.tasks import load_examples, task_spec
from rosearch.defense.pipeline import load_defense
from rosearch.errors import UserError
from rosearch.files.model_files import ModelDirError, check_model_config, weights_problem
from rosearch.files.outputs import check_output_dir
from rosearch.runtime.settings import resolve_device
from rosearch.student.modeling import register_auto_classes
from rosearch.files.tokenizer_files import TOKENIZER_FILES

logger = logging.getLogger(__name__)


# flag dest -> (config section, key)
_OVERRIDES: dict[str, tuple[str, str]] = {
    "n": ("attack", "num_examples"),
    "seed": ("attack", "seed"),
    "query_budget": ("attack", "query_budget"),
    "batch_size": ("attack", "model_batch_size"),
    "workers": ("attack", "num_workers"),
    "neighbors": ("attack", "neighbors_path"),
    "sentence_encoder": ("attack", "sentence_encoder"),
    "wordnet_dir": ("attack", "wordnet_dir"),
    "nltk_data": ("attack", "nltk_data"),
    "task": ("data", "task"),
    "data_dir": ("data", "data_dir"),
    "max_length": ("data", "max_length"),
    "cache_dir": ("run", "cache_dir"),
    "device": ("run", "device"),
}


class AttackInputError(UserError, ValueError):
    """A ``rosearch attack`` flag names a model, tokenizer or recipe that does not exist."""


def merged_config(args: argparse.Namespace) -> Config:
    """``--config`` (or the defaults) with the given flags applied, validated."""
    data = (load_config(args.config) if args.config is not None else Config()).to_dict()
    for dest, (section, key) in _OVERRIDES.items():
        value = getattr(args, dest, None)
        if value is not None:
            data[section][key] = value
    return config_from_dict(data)


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES if name != "special_tokens_map.json")


def load_classifier(model_dir: Path, tokenizer_dir: Path | None) -> tuple[Any, Any]:
    """Model and tokenizer from ``model_dir`` (students load too); the tokenizer from
    ``tokenizer_dir`` when given, else from ``model_dir``."""
    if not (model_dir / "config.json").is_file():
        raise AttackInputError(f"--model {str(model_dir)!r} is not a saved model directory (no config.json there) "
                               "(fix: pass a directory written by `rosearch export` or save_pretrained)")
    source = tokenizer_dir if tokenizer_dir is not None else model_dir
    if not _has_tokenizer(source):
        raise AttackInputError(
            f"no tokenizer files in {str(source)!r} (fix: pass --tokenizer DIR, e.g. the teacher's directory)"
        )
    try:
        check_model_config(model_dir)
    except ModelDirError as err:
        raise AttackInputError(str(err)) from None
    register_auto_classes()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as err:
        problem = weights_problem(model_dir, err)
        if problem is None:
            raise AttackInputError(f"--model {str(model_dir)!r} cannot be loaded ({type(err).__name__}: "
                                   f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}) "
                                   "(fix: pass a folder written by `rosearch export` or save_pretrained)") from None
        raise AttackInputError(problem) from None
    tokenizer = AutoTokenizer.from_pretrained(source)
    return model, tokenizer


def is_attack_report(path: Path) -> bool:
    """True for what ``rosearch attack`` writes into its ``--out`` folder (and its temporary files)."""
    return path.is_file() and path.name.lstrip(".").startswith("attack_") and path.suffix in (".json", ".csv", ".tmp")


def run(args: argparse.Namespace) -> int:
    """Attack ``--model`` with each recipe on a seeded dev sample; print and write the results."""
    config = merged_config(args)
    attack = config.attack
    recipes = tuple(args.recipe) if args.recipe else (attack.recipe,)
    known = recipe_names()
    unknown = [r for r in recipes if r not in known]
    if unknown:  # before the model and data are loaded
        raise AttackInputError(f"--recipe {', '.join(map(repr, unknown))}: unknown recipe (known: {', '.join(known)})")
    spec = task_spec(config.data)
    model_dir = Path(args.model).expanduser()
    out_dir = args.out if args.out is not None else model_dir / "attacks"
    check_output_dir(out_dir, "--out", "the attack reports", is_attack_report)
    model, tokenizer = load_classifier(model_dir, args.tokenizer)
    if model.config.num_labels != spec.num_labels:
        raise AttackInputError(
            f"model {str(model_dir)!r} has {model.config.num_labels} labels but task {spec.name} has {spec.num_labels} "
            "(fix: pass the --task the model was trained on)"
        )
    defense = load_defense(model_dir)  # part of the deployed model: every attack query goes through it
    if defense is not None:
        logger.info("attack: %s carries input defenses %s; attacking the whole pipeline", model_dir, "+".join(defense.names))
    device = resolve_device(config.run.device)
    model.to(device).eval()
    dev = load_examples(spec, "dev", config.data.data_dir)
    if attack.num_examples > len(dev):  # documented: the whole split is attacked, and the user is told
        logger.warning("attack: --n / attack.num_examples=%d is more than the %d examples of %s's dev split; "
                       "attacking all %d", attack.num_examples, len(dev), spec.name, len(dev))
    examples = sample_attack_examples(dev, attack.num_examples, attack.seed)
    reports = []
    for recipe in recipes:
        reports.append(attack_model(
            model, tokenizer, examples, attack, recipe=recipe, cache_dir=config.run.cache_dir,
            model_name=model_dir.resolve().name, max_length=config.data.max_length, device=device,
            text_columns=spec.hf_text_columns, defense=defense,
        ))
    console = Console() if Console().is_terminal else Console(width=220)
    console.print(reports_table(reports))
    json_path, csv_path = write_reports(reports, out_dir)
    console.print(f"wrote {json_path} and {csv_path}")
    return 0
