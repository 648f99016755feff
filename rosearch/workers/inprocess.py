"""Candidate tasks in the driver process, one task after another: for debugging and tests.

Same outcome semantics as the Ray backend (an exception becomes a failed outcome carrying the
error text and traceback; the other tasks still run), with two documented differences:
``timeout_s`` is not enforced (there is no second process to kill), and there are no retries
(a crash of the driver process is a crash of the search, which resumes from its checkpoint).
"""

from __future__ import annotations

import logging
from collections import deque
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
        self._queue: deque[CandidateTask] = deque()

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateOutcome]:
        """Yield each task's outcome as soon as it is computed, in task order."""
        self._check_open()
        for task in tasks:
            self.submit(task)
            yield self.next_outcome()

    def submit(self, task: CandidateTask) -> None:
        """Queue ``task``; it runs inside the next :meth:`next_outcome` call."""
        self._check_open()
        self._queue.append(task)

    def next_outcome(self) -> CandidateOutcome:
        """Run the oldest queued task now and return its outcome."""
        self._check_open()
        if not self._queue:
            raise RuntimeError("next_outcome called with no submitted task (fix: submit one first)")
        task = self._queue.popleft()
        outcome = run_task(self._fn, task, self._shared, worker=worker_name())
        if not outcome.ok:
            logger.warning("candidate %s failed: %s", task.genome_hash[:12], (outcome.error or "").splitlines()[0])
        return outcome

    def capacity(self) -> int:
        """One: tasks run one after another in this process."""
        return 1

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("InProcessBackend used after close() (fix: create a new backend)")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> InProcessBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
