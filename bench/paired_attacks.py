"""Paired differences between two saved attacks on the same dev sentences.

``bench/robustness.py`` pairs every row with the plain-KD row of the same invocation, which shares
one config. Rows that need different configs — a student of the plain teacher against a student of
the adversarially fine-tuned one (``--set teacher.adversarial=ascc``) — are attacked in separate
invocations; their per-example outcomes are saved under the work dir's ``attacks/`` (each row's
``file`` in the summary JSON), and this script pairs them::

    python bench/paired_attacks.py runs/bench-robustness/attacks/pwws-A.json runs/bench-robustness/attacks/pwws-B.json

It prints A - B for clean accuracy and accuracy under attack, in points, with a 95 % paired
bootstrap interval, and refuses files of different recipes, sample sizes or samples (the sentences'
sha256, recorded in every result saved since 2026-12-07).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from common import BenchError
from robustness import outcome_bits
from rosearch.evaluate.bootstrap import paired_difference_interval


def load_attack(path: Path) -> dict[str, Any]:
    """One saved (row, recipe) result; a clear error when it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BenchError(f"{path}: not a readable attack result ({err})") from err
    missing = [k for k in ("recipe", "n", "clean", "robust") if k not in data]
    if missing:
        raise BenchError(f"{path}: not a bench/robustness.py attack result (missing {', '.join(missing)})")
    return data


def paired(a: dict[str, Any], b: dict[str, Any], *, resamples: int, seed: int) -> dict[str, Any]:
    """A - B for clean accuracy and accuracy under attack (fractions), with paired 95 % intervals."""
    sample_a, sample_b = a.get("examples"), b.get("examples")
    same_sample = sample_a is None or sample_b is None or sample_a == sample_b  # older results have no digest
    if a["recipe"] != b["recipe"] or a["n"] != b["n"] or len(a["clean"]) != len(b["clean"]) or not same_sample:
        raise BenchError(f"the two results do not pair: {a['recipe']} on {a['n']} sentences "
                         f"(sample {str(sample_a)[:12]}) vs {b['recipe']} on {b['n']} "
                         f"(sample {str(sample_b)[:12]}) (fix: compare one recipe's results on the same --n and --seed)")
    out: dict[str, Any] = {"recipe": a["recipe"], "n": a["n"]}
    for figure in ("clean", "robust"):
        x, y = outcome_bits(a[figure]), outcome_bits(b[figure])
        diff, low, high = paired_difference_interval(x, y, resamples=resamples, seed=seed)
        out[figure] = {"a": float(x.mean()), "b": float(y.mean()), "difference": diff, "ci95": [low, high]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="saved attack result A (runs/bench-robustness/attacks/RECIPE-HASH.json)")
    parser.add_argument("b", type=Path, help="saved attack result B, the same recipe on the same sentences")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        result = paired(load_attack(args.a), load_attack(args.b), resamples=args.resamples, seed=args.seed)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for figure, label in (("clean", "clean accuracy"), ("robust", f"accuracy under {result['recipe']}")):
        f = result[figure]
        print(f"{label} (n={result['n']}): A {100 * f['a']:.1f} %, B {100 * f['b']:.1f} %, A - B "
              f"{100 * f['difference']:+.1f} [{100 * f['ci95'][0]:+.1f}, {100 * f['ci95'][1]:+.1f}] points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
