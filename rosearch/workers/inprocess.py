"""Candidate tasks in the driver process, one task after another: for debugging and tests.

Same outcome semantics as the Ray backend (an exception becomes a failed outcome carrying the
error text and traceback; the other tasks still run), with two documented differences:
``timeout_s`` is not enforced (there is no second process to kill), and there are no retries
(a crash of the driver process is a crash of the search, which resumes from its checkpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from rosearch.workers.base import CandidateOutcome, CandidateTask, TaskFn, run_task, worker_name

logger = logging.getLogger(__name__)


class InProcessBackend:
    """Runs ``fn(task, shared)`` directly; ``shared`` is passed by reference, never copied."""

    def __init__(self, fn: TaskFn, shared: Any) -> None:
        self._fn = fn
        self._shared = shared
        self._closed = False

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateOutcome]:
        """Yield each task's outcome as soon as it is computed, in task order."""
        if self._closed:
            raise RuntimeError("InProcessBackend.run called after close() (fix: create a new backend)")
        worker = worker_name()
        for task in tasks:
            outcome = run_task(self._fn, task, self._shared, worker=worker)
            if not outcome.ok:
                logger.warning("candidate %s failed: %s", task.genome_hash[:12], (outcome.error or "").splitlines()[0])
            yield outcome

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> InProcessBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
