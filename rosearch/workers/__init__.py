"""Backends: where candidate tasks run (Ray by default, or in the driver).

The only package that imports Ray. The driver builds one backend per search with
:func:`make_backend` and iterates ``backend.run(tasks)``, recording each outcome as it
arrives; a candidate's failure is an outcome, never an exception.
"""

from __future__ import annotations

import logging
from typing import Any

from rosearch.config import WorkersConfig
from rosearch.workers.base import (
    Backend,
    BackendSetupError,
    CandidateOutcome,
    CandidateTask,
    TaskFn,
    TaskResult,
    format_error,
    is_transient_failure,
    worker_name,
)
from rosearch.workers.inprocess import InProcessBackend
from rosearch.workers.ray_backend import RayBackend, preflight

logger = logging.getLogger(__name__)

__all__ = [
    "Backend",
    "BackendSetupError",
    "CandidateOutcome",
    "CandidateTask",
    "TaskFn",
    "TaskResult",
    "InProcessBackend",
    "RayBackend",
    "format_error",
    "is_transient_failure",
    "check_workers",
    "make_backend",
    "preflight",
    "worker_name",
]


def check_workers(cfg: WorkersConfig) -> None:
    """Fail fast on a ``workers`` section that cannot work (e.g. an unreachable Ray address)."""
    if cfg.backend == "ray":
        preflight(address=cfg.address, num_cpus=cfg.num_cpus_per_candidate, num_gpus=cfg.num_gpus_per_candidate,
                  max_retries=cfg.max_retries, timeout_s=cfg.timeout_s, connect_timeout_s=cfg.connect_timeout_s)


def make_backend(cfg: WorkersConfig, fn: TaskFn, shared: Any) -> Backend:
    """The backend ``cfg.backend`` names, set up from the ``workers`` config section."""
    if cfg.backend == "inprocess":
        if cfg.timeout_s is not None:
            logger.warning("workers.timeout_s=%g is not enforced by the inprocess backend", cfg.timeout_s)
        return InProcessBackend(fn, shared)
    if cfg.backend == "ray":
        return RayBackend(
            fn, shared,
            address=cfg.address,
            num_cpus=cfg.num_cpus_per_candidate,
            num_gpus=cfg.num_gpus_per_candidate,
            max_retries=cfg.max_retries,
            timeout_s=cfg.timeout_s,
            connect_timeout_s=cfg.connect_timeout_s,
        )
    raise BackendSetupError(f"workers.backend={cfg.backend!r} is unknown (fix: use 'ray' or 'inprocess')")
