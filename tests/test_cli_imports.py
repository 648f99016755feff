"""``rosearch --help`` stays light: the parser imports neither torch, Ray, transformers nor TextAttack.

(The wall time is measured, not asserted here: ``time .venv/bin/rosearch --help``, see the README.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from rosearch.cli import COMMANDS, PREDICT_BACKENDS

HEAVY = ("torch", "ray", "transformers", "textattack", "onnxruntime", "pandas", "datasets")


def imported_by(argv: list[str]) -> tuple[int, set[str]]:
    """Exit code of ``rosearch <argv>`` run in a fresh interpreter, and the top-level packages it imported."""
    code = (
        "import sys\n"
        "from rosearch.cli import main\n"
        "try:\n"
        f"    rc = main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "print('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES "))
    return done.returncode, set(line.split()[1:])


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMANDS)])
def test_help_imports_no_heavy_package(argv):
    rc, modules = imported_by(argv)
    assert rc == 0
    assert not modules & set(HEAVY), f"rosearch {' '.join(argv)} imported {sorted(modules & set(HEAVY))}"


def test_importtime_of_help_lists_no_heavy_package():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "rosearch.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: rosearch" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "rosearch" in imported and not imported & set(HEAVY)


def test_a_user_error_from_a_command_prints_one_message(tmp_path):
    rc, _ = imported_by(["stats", str(tmp_path / "no-such-run")])
    assert rc == 2


def test_predict_backends_match_the_implementation():
    from rosearch.deploy.predict import BACKENDS

    assert PREDICT_BACKENDS == tuple(BACKENDS)


def test_every_user_facing_error_is_a_user_error():
    from rosearch.attack.command import AttackInputError
    from rosearch.attack.resources import MissingResourceError
    from rosearch.config import ConfigError
    from rosearch.data.tasks import DataError
    from rosearch.deploy.onnx import OnnxExportError
    from rosearch.deploy.predict import PredictError
    from rosearch.distill.teacher import TeacherError
    from rosearch.distill.teacher_cache import TeacherCacheError
    from rosearch.errors import UserError
    from rosearch.evolution.operators import SearchSpaceExhaustedError
    from rosearch.prepare.inputs import ProxySetError
    from rosearch.commands.export import ExportError
    from rosearch.results.stats import StatsError
    from rosearch.records.store import ResultStoreError
    from rosearch.search_space.genome import InvalidGenomeError
    from rosearch.search_space.sampling import BudgetError
    from rosearch.workers import BackendSetupError

    for cls in (AttackInputError, MissingResourceError, ConfigError, DataError, OnnxExportError, PredictError,
                TeacherError, TeacherCacheError, SearchSpaceExhaustedError, ProxySetError, ExportError, StatsError,
                ResultStoreError, InvalidGenomeError, BudgetError, BackendSetupError):
        assert issubclass(cls, UserError), cls
