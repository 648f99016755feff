"""Attack throughput: rosearch's robustness evaluation against TextAttack's stock ``Attacker``.

Both sides attack the same model, with the same recipe, on the same seeded SST-2 dev sample, in
the same process and with the same torch thread count. They differ in what rosearch changes:

* baseline — TextAttack 0.3.11 as its documentation shows it: ``HuggingFaceModelWrapper``
  (every query padded to the tokenizer's ``model_max_length``), the stock recipe class, and
  ``Attacker(attack, dataset, AttackArgs(...)).attack_dataset()`` with default arguments plus
  only what running non-interactively needs (``num_examples``, ``silent``, ``disable_stdout``,
  no CSV/txt logs). A second baseline row sets ``tokenizer.model_max_length`` to
  ``data.max_length``, as a careful user would, so that padding alone does not decide the ratio;
* ours — :func:`rosearch.attack.runner.attack_model`: queries tokenised once per call, sorted by
  length and dynamically padded (:mod:`rosearch.attack.wrapper`), in one process and with
  ``attack.num_workers`` spawned processes.

**Seeding.** Our runner seeds python/numpy/torch before every example from its position ``i``
(``(seed * 1_000_003 + i) mod 2**32``), so that an example's attack does not depend on the
others. The stock ``Attacker`` seeds once (``AttackArgs.random_seed``) before its loop. To make
per-example results comparable, the baseline runs one ``Attacker`` per example with
``random_seed`` set to that example's seed; ``Attacker`` calls TextAttack's ``set_seed``, which
seeds the same three generators. The cost of building one ``Attacker`` per example is measured
separately (one ``Attacker`` over the whole sample, its own seed) and reported. Results are then
compared per example (status, perturbed text, queries): the mismatch count must be 0.

A cProfile run of each side says where the time goes. Run from the repository root::

    .venv/bin/python bench/attack_throughput.py            # the sst2-offline best student, deepwordbug, 50 examples
    .venv/bin/python bench/attack_throughput.py --tiny     # a random-weight student, no trained model needed
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import dataclasses
import io
import json
import logging
import pstats
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from common import BenchError, MachineInfo, console, describe_machine, print_machine, print_table, write_figures
from rosearch.attack.command import load_classifier
from rosearch.attack.resources import MissingResourceError, prepare_textattack
from rosearch.attack.runner import AttackReport, attack_model, sample_attack_examples
from rosearch.config import AttackConfig, Config, ConfigError, load_config
from rosearch.data.tasks import DataError, Example, load_examples, task_spec
from rosearch.runtime.settings import apply_run_settings

logger = logging.getLogger("bench.attack_throughput")

DEFAULT_CONFIG = Path("configs/sst2_offline.yaml")
DEFAULT_MODEL = Path("runs/sst2-offline/students/8fc1b5f9cb4aa649")  # the sst2-offline search's best student

# Recipes with a stock TextAttack class that runs offline (the baseline must be TextAttack's own).
STOCK_RECIPES = {"deepwordbug": "DeepWordBugGao2018", "pruthi": "Pruthi2019", "pwws": "PWWSRen2019"}

ResultKey = tuple[str, str | None, int]  # (status, perturbed text of a successful attack, queries)


@dataclass(frozen=True)
class Settings:
    """What to measure, as given on the command line (validated by :func:`settings_from_args`)."""

    config_path: Path
    overrides: tuple[str, ...]
    model: Path | None  # None: DEFAULT_MODEL
    tiny: bool
    recipe: str
    n: int
    workers: int
    threads: int
    profile_n: int
    top: int
    json_path: Path | None


@dataclass(frozen=True)
class SideRun:
    """One timed attack over the sample."""

    label: str
    seconds: float
    results: tuple[ResultKey, ...]

    @property
    def examples_per_minute(self) -> float:
        return 60.0 * len(self.results) / self.seconds


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    seconds: float


@dataclass(frozen=True)
class SideProfile:
    """cProfile of one side on the first ``examples`` examples, split into the parts of an attack."""

    label: str
    examples: int
    total_seconds: float
    parts: tuple[ProfileEntry, ...]
    top: tuple[ProfileEntry, ...]  # functions with the most self time


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="bench/attack_throughput.py",
        description="Examples attacked per minute: rosearch's attack runner against TextAttack's stock Attacker.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="config whose data/attack/run sections are used (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set attack.seed=1 (repeatable)")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"saved classifier directory with its tokenizer (default: {DEFAULT_MODEL})")
    parser.add_argument("--tiny", action="store_true",
                        help="attack a random-weight student built on the teacher's tokenizer (no trained model needed)")
    parser.add_argument("--recipe", default="deepwordbug", choices=sorted(STOCK_RECIPES),
                        help="attack recipe, one with a stock TextAttack class (default: %(default)s)")
    parser.add_argument("--n", type=int, default=50, help="seeded dev examples to attack (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="attack.num_workers of the parallel run of ours; 1 skips it (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    parser.add_argument("--profile-n", type=int, default=10,
                        help="examples in the cProfile run of each side; 0 skips profiling (default: %(default)s)")
    parser.add_argument("--top", type=int, default=8, help="cProfile entries to list per side (default: %(default)s)")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write all figures to this file")
    return settings_from_args(parser.parse_args(argv))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Check the numbers up front so that a typo fails before TextAttack's import."""
    for name, minimum in (("n", 1), ("workers", 1), ("threads", 1), ("profile_n", 0), ("top", 0)):
        value = getattr(args, name)
        if value < minimum:
            raise BenchError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")
    if args.tiny and args.model is not None:
        raise BenchError("--tiny builds a random-weight student; it cannot be combined with --model DIR")
    return Settings(
        config_path=args.config, overrides=tuple(args.overrides), model=args.model, tiny=args.tiny, recipe=args.recipe,
        n=args.n, workers=args.workers, threads=args.threads, profile_n=min(args.profile_n, args.n), top=args.top,
        json_path=args.json_path,
    )


def load_model(config: Config, settings: Settings, num_labels: int) -> tuple[nn.Module, Any, str]:
    """The attacked model (eval mode, CPU), its tokenizer and a one-line description."""
    if settings.tiny:
        return _random_student(config, num_labels)
    path = settings.model or DEFAULT_MODEL
    if not (path / "config.json").is_file():
        raise BenchError(
            f"no saved model at {path} (fix: pass --model DIR with a classifier and its tokenizer, e.g. a student "
            "exported by `rosearch export`, or run with --tiny for a random-weight student)"
        )
    model, tokenizer = load_classifier(path, None)
    if model.config.num_labels != num_labels:
        raise BenchError(f"model {path} has {model.config.num_labels} labels, the task has {num_labels} (fix: --model)")
    return model.eval(), tokenizer, str(path)


def _random_student(config: Config, num_labels: int) -> tuple[nn.Module, Any, str]:
    """kd_throughput's fixed student (4 layers, H=256) with random weights, on the teacher's tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from kd_throughput import STUDENT_GENOME_JSON, build_student
    from rosearch.distill.teacher import resolve_model_path

    path = resolve_model_path(config.teacher.model)
    try:
        teacher_config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise BenchError(f"--tiny needs teacher.model={config.teacher.model!r}'s config and tokenizer locally ({err}); "
                         "fix: install the offline backbone (bash scripts/setup.sh)") from err
    model = build_student(teacher_config, int(tokenizer.pad_token_id), num_labels, dropout=0.0, seed=config.run.seed)
    return model.eval(), tokenizer, f"random-weight student ({json.loads(STUDENT_GENOME_JSON)['hidden_size']} hidden)"


# --------------------------------------------------------------------------------------------
# The two sides
# --------------------------------------------------------------------------------------------


def example_seed(seed: int, index: int) -> int:
    """The seed our runner gives example ``index`` (rosearch.attack.runner._seed_example)."""
    return (seed * 1_000_003 + index) % 2**32


def stock_status(result: Any) -> str:
    return type(result).__name__.removesuffix("AttackResult").lower()  # Successful / Failed / Skipped / Maximized


def stock_key(result: Any) -> ResultKey:
    status = stock_status(result)
    perturbed = result.perturbed_result.attacked_text.text if status == "successful" else None
    return status, perturbed, int(result.num_queries)


def our_keys(report: AttackReport) -> tuple[ResultKey, ...]:
    return tuple((r.status, r.perturbed, r.queries) for r in report.examples)


def build_stock_attack(recipe: str, model: nn.Module, tokenizer: Any) -> Any:
    """TextAttack's own wrapper and recipe class, with their defaults."""
    import textattack
    from textattack.models.wrappers import HuggingFaceModelWrapper

    recipe_class = getattr(textattack.attack_recipes, STOCK_RECIPES[recipe])
    return recipe_class.build(HuggingFaceModelWrapper(model, tokenizer))


def stock_dataset(examples: Sequence[Example], text_columns: tuple[str, ...]) -> Any:
    import textattack

    if examples[0].text_b is None:
        return textattack.datasets.Dataset([(e.text_a, e.label) for e in examples])
    return textattack.datasets.Dataset([((e.text_a, e.text_b), e.label) for e in examples], input_columns=text_columns)


def run_stock(attack: Any, examples: Sequence[Example], text_columns: tuple[str, ...], seed: int, *,
              per_example_seed: bool) -> list[Any]:
    """``Attacker.attack_dataset`` with default ``AttackArgs``: one Attacker per example seeded as
    our runner seeds it, or (``per_example_seed=False``) one Attacker over all with ``seed``."""
    import textattack

    quiet = dict(silent=True, disable_stdout=True)  # no CSV/txt logs: their defaults are None
    results: list[Any] = []
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm, print()
        if per_example_seed:
            for i, example in enumerate(examples):
                args = textattack.AttackArgs(num_examples=1, random_seed=example_seed(seed, i), **quiet)
                results += textattack.Attacker(attack, stock_dataset([example], text_columns), args).attack_dataset()
        else:
            args = textattack.AttackArgs(num_examples=len(examples), random_seed=seed, **quiet)
            results += textattack.Attacker(attack, stock_dataset(examples, text_columns), args).attack_dataset()
    return results


def timed(label: str, run: Callable[[], tuple[ResultKey, ...]]) -> SideRun:
    logger.info("timing: %s", label)
    start = time.perf_counter()
    results = run()
    seconds = time.perf_counter() - start
    logger.info("timing: %s: %.1fs", label, seconds)
    return SideRun(label=label, seconds=seconds, results=results)


def mismatches(a: Sequence[ResultKey], b: Sequence[ResultKey]) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------

# (label, file suffix, function) whose cumulative time is a part of an attack; "wrapper" and
# "goal function" are totals from which the parts inside them are subtracted.
_MODEL = ("torch/nn/modules/module.py", "_wrapped_call_impl")  # outermost module call = the model's forward
_TOKENIZER = ("transformers/tokenization_utils_base.py", "__call__")
_GET_RESULTS = ("textattack/goal_functions/goal_function.py", "get_results")
_TRANSFORM = ("textattack/attack.py", "_get_transformations_uncached")
_CONSTRAIN = ("textattack/attack.py", "_filter_transformations_uncached")
_OUR_WRAPPER = ("rosearch/attack/wrapper.py", "__call__")
_STOCK_WRAPPER = ("textattack/models/wrappers/huggingface_model_wrapper.py", "__call__")
_OUR_TOTAL = ("rosearch/attack/runner.py", "run_attack")
_STOCK_TOTAL = ("textattack/attacker.py", "attack_dataset")


def _cumtime(stats: dict, where: tuple[str, str]) -> float:
    suffix, func = where
    return sum(row[3] for key, row in stats.items() if key[2] == func and key[0].replace("\\", "/").endswith(suffix))


def _entry_name(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    path = filename.replace("\\", "/")
    for anchor in ("site-packages/", "/rosearch/"):
        if anchor in path:
            path = ("rosearch/" if anchor == "/rosearch/" else "") + path.split(anchor, 1)[1]
            break
    return f"{path}:{line}({func})"


def profile_side(label: str, run: Callable[[], object], *, ours: bool, examples: int, top: int) -> SideProfile:
    """cProfile ``run`` and split its time: model forward, tokenisation, the wrapper's own work
    (padding, batching, tensor copies), goal-function bookkeeping (result objects, query
    counting, caches), transformations (candidate generation and pre-transformation
    constraints), constraints, and the rest (search method, AttackedText edits, loop)."""
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, func): (prim calls, calls, tottime, cumtime, callers)}
    total = _cumtime(stats, _OUR_TOTAL if ours else _STOCK_TOTAL)
    model, tokenise = _cumtime(stats, _MODEL), _cumtime(stats, _TOKENIZER)
    wrapper = _cumtime(stats, _OUR_WRAPPER if ours else _STOCK_WRAPPER)
    goal = _cumtime(stats, _GET_RESULTS)
    transform, constrain = _cumtime(stats, _TRANSFORM), _cumtime(stats, _CONSTRAIN)
    parts = [
        ("model forward", model),
        ("tokenisation", tokenise),
        ("wrapper: padding, batching, tensor copies", max(0.0, wrapper - model - tokenise)),
        ("goal function: results, query counting, caches", max(0.0, goal - wrapper)),
        ("transformations (candidates + pre-transformation constraints)", transform),
        ("constraints", constrain),
    ]
    parts.append(("rest: search method, AttackedText, loop, setup", max(0.0, total - sum(s for _, s in parts))))
    by_self = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    return SideProfile(label=label, examples=examples, total_seconds=total,
                       parts=tuple(ProfileEntry(n, s) for n, s in parts),
                       top=tuple(ProfileEntry(_entry_name(k), row[2]) for k, row in by_self))


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    machine: MachineInfo
    command: str
    setup: dict[str, Any]
    baseline: SideRun  # stock, tokenizer as saved
    baseline_tuned: SideRun  # stock, model_max_length = data.max_length
    stock_one_attacker: SideRun  # stock, tuned padding, one Attacker over all (own seed): timing only
    ours: SideRun
    ours_parallel: SideRun | None
    profiles: tuple[SideProfile, ...]

    def to_dict(self) -> dict[str, Any]:
        def side(run: SideRun | None) -> dict[str, Any] | None:
            if run is None:
                return None
            return {"label": run.label, "seconds": run.seconds, "examples_per_minute": run.examples_per_minute}

        return {
            "machine": dataclasses.asdict(self.machine), "command": self.command, "setup": self.setup,
            "baseline": side(self.baseline), "baseline_tuned": side(self.baseline_tuned),
            "stock_one_attacker": side(self.stock_one_attacker), "ours": side(self.ours),
            "ours_parallel": side(self.ours_parallel),
            "ratio": self.ours.examples_per_minute / self.baseline.examples_per_minute,
            "ratio_vs_tuned": self.ours.examples_per_minute / self.baseline_tuned.examples_per_minute,
            "mismatches": self.mismatch_counts(), "worker_startup_seconds": self.worker_startup_seconds(),
            "results": [list(k) for k in self.ours.results],
            "profiles": [dataclasses.asdict(p) for p in self.profiles],
        }

    def worker_startup_seconds(self) -> float | None:
        """The parallel run's fixed cost, assuming the work itself divides evenly among workers."""
        if self.ours_parallel is None:
            return None
        return max(0.0, self.ours_parallel.seconds - self.ours.seconds / self.setup["workers"])

    def mismatch_counts(self) -> dict[str, int]:
        counts = {
            "ours vs baseline": mismatches(self.ours.results, self.baseline.results),
            "ours vs tuned baseline": mismatches(self.ours.results, self.baseline_tuned.results),
        }
        if self.ours_parallel is not None:
            counts["ours parallel vs ours sequential"] = mismatches(self.ours_parallel.results, self.ours.results)
        return counts


def run_benchmark(config: Config, settings: Settings, command: str) -> BenchResult:
    """Load model and sample, warm both sides up, then time ours, ours in workers, and the baselines."""
    task = task_spec(config.data)
    model, tokenizer, description = load_model(config, settings, task.num_labels)
    dev = load_examples(task.name, "dev", config.data.data_dir)
    attack_cfg = dataclasses.replace(config.attack, recipe=settings.recipe, num_examples=settings.n, num_workers=1)
    examples = sample_attack_examples(dev, settings.n, attack_cfg.seed)
    columns, seed, max_length = task.text_columns, attack_cfg.seed, config.data.max_length
    cache_dir = config.run.cache_dir

    prepare_textattack(attack_cfg, cache_dir)
    import textattack  # noqa: F401  (a ~10 s import, left out of every timing)

    stock_tokenizer = copy.deepcopy(tokenizer)  # the baseline's, as saved (model_max_length from the model dir)
    tuned_tokenizer = copy.deepcopy(tokenizer)
    tuned_tokenizer.model_max_length = max_length
    saved_max_length = int(stock_tokenizer.model_max_length)
    padded_to = 512 if saved_max_length == int(1e30) else saved_max_length  # HuggingFaceModelWrapper's rule

    def ours(cfg: AttackConfig, subset: Sequence[Example]) -> AttackReport:
        return attack_model(model, tokenizer, subset, cfg, cache_dir=cache_dir, model_name=Path(description).name,
                            max_length=max_length, device="cpu", text_columns=columns)

    def stock(tok: Any, subset: Sequence[Example], *, per_example_seed: bool = True) -> tuple[ResultKey, ...]:
        attack = build_stock_attack(settings.recipe, model, tok)  # built inside the timing, as ours is
        return tuple(stock_key(r) for r in run_stock(attack, subset, columns, seed, per_example_seed=per_example_seed))

    logger.info("warm-up: one example on each side (untimed)")
    ours(attack_cfg, examples[:1])
    stock(tuned_tokenizer, examples[:1])

    ours_run = timed("ours (attack_model), sequential", lambda: our_keys(ours(attack_cfg, examples)))
    parallel_run = None
    if settings.workers > 1:
        parallel_cfg = dataclasses.replace(attack_cfg, num_workers=settings.workers)
        parallel_run = timed(f"ours, attack.num_workers={settings.workers}",
                             lambda: our_keys(ours(parallel_cfg, examples)))
    tuned_run = timed(f"stock, tokenizer.model_max_length={max_length}", lambda: stock(tuned_tokenizer, examples))
    one_run = timed("stock, one Attacker over all examples (its own seed; timing only)",
                    lambda: stock(tuned_tokenizer, examples, per_example_seed=False))
    baseline_run = timed(f"stock, tokenizer as saved (pads to {padded_to})", lambda: stock(stock_tokenizer, examples))

    profiles: list[SideProfile] = []
    if settings.profile_n:
        subset = examples[: settings.profile_n]
        logger.info("profile: cProfile of each side on %d examples", len(subset))
        profiles.append(profile_side("ours (sequential)", lambda: ours(attack_cfg, subset), ours=True,
                                     examples=len(subset), top=settings.top))
        profiles.append(profile_side(f"stock, pads to {padded_to}", lambda: stock(stock_tokenizer, subset), ours=False,
                                     examples=len(subset), top=settings.top))
        profiles.append(profile_side(f"stock, pads to {max_length}", lambda: stock(tuned_tokenizer, subset),
                                     ours=False, examples=len(subset), top=settings.top))

    statuses = [status for status, _, _ in ours_run.results]
    attacked = [q for status, _, q in ours_run.results if status != "skipped"]
    setup = {
        "config": str(settings.config_path), "overrides": list(settings.overrides), "model": description,
        "model_params": sum(p.numel() for p in model.parameters()), "recipe": settings.recipe, "n": len(examples),
        "sample_seed": seed, "max_length": max_length, "saved_model_max_length": saved_max_length,
        "stock_padding": padded_to, "our_model_batch_size": attack_cfg.model_batch_size,
        "threads": torch.get_num_threads(), "workers": settings.workers,
        "outcomes": {s: statuses.count(s) for s in ("successful", "failed", "skipped")},
        "mean_queries": sum(attacked) / len(attacked) if attacked else 0.0,
    }
    return BenchResult(machine=describe_machine(torch.device("cpu")), command=command, setup=setup,
                       baseline=baseline_run, baseline_tuned=tuned_run, stock_one_attacker=one_run, ours=ours_run,
                       ours_parallel=parallel_run, profiles=tuple(profiles))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(result: BenchResult) -> None:
    out = console()
    print_machine(out, result.machine)
    s = result.setup
    print_table(out, "setup", ("", ""), [
        ("command", result.command),
        ("model", f"{s['model']} — {s['model_params'] / 1e6:.2f}M parameters"),
        ("attack", f"{s['recipe']} on {s['n']} seeded SST-2 dev examples (seed {s['sample_seed']}); "
                   f"{s['outcomes']['successful']} successful / {s['outcomes']['failed']} failed / "
                   f"{s['outcomes']['skipped']} skipped, {s['mean_queries']:.1f} queries per attacked example"),
        ("padding", f"stock: every query to {s['stock_padding']} tokens (tokenizer as saved) or {s['max_length']}; "
                    f"ours: to the longest query of each length-sorted batch of {s['our_model_batch_size']}"),
        ("threads", f"{s['threads']} torch thread(s) per side; workers: {s['workers']}"),
    ], align="left")

    base = result.baseline.examples_per_minute
    runs = [result.baseline, result.baseline_tuned, result.stock_one_attacker, result.ours]
    if result.ours_parallel is not None:
        runs.append(result.ours_parallel)
    rows = [(r.label, f"{r.examples_per_minute:.1f}", f"{r.examples_per_minute / base:.2f}", f"{r.seconds:.1f}")
            for r in runs]
    caption = None
    startup = result.worker_startup_seconds()
    if startup is not None:
        w = s["workers"]
        caption = (f"workers: about {startup:.1f} s of process start-up (spawn, imports incl. TextAttack, model transfer) "
                   f"= parallel - sequential / {w}; {w} workers pay off once the sequential attack takes more than "
                   f"{startup * w / (w - 1):.0f} s and {w} CPUs are free")
    print_table(out, "attack throughput (examples attacked per minute, textattack import excluded)",
                ("", "examples/min", "× baseline", "seconds"), rows, caption=caption)
    print_table(out, "identical results? (per example: status, perturbed text, queries)", ("comparison", "mismatches"),
                [(k, str(v)) for k, v in result.mismatch_counts().items()])
    for p in result.profiles:
        print_table(
            out, f"where the time goes: {p.label} (cProfile, {p.examples} examples)", ("part", "ms/example", "share"),
            [(e.name, f"{1000 * e.seconds / p.examples:.1f}", f"{100 * e.seconds / p.total_seconds:.1f}%")
             for e in p.parts],
            caption=f"total {1000 * p.total_seconds / p.examples:.1f} ms/example",
        )
        print_table(out, f"{p.label}: most self time (cProfile)", ("function", "ms/example"),
                    [(e.name, f"{1000 * e.seconds / p.examples:.1f}") for e in p.top])


def main(argv: Sequence[str] | None = None) -> int:
    command = " ".join([".venv/bin/python", "bench/attack_throughput.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = parse_args(argv)
        config = load_config(settings.config_path, settings.overrides)
        apply_run_settings(dataclasses.replace(config.run, device="cpu", num_threads=settings.threads))
        result = run_benchmark(config, settings, command)
    except (BenchError, ConfigError, DataError, MissingResourceError) as err:
        logging.basicConfig(level=logging.INFO)  # no-op once apply_run_settings configured logging
        logger.error("%s", err)
        return 2
    report(result)
    write_figures(settings.json_path, result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
