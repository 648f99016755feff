"""What every backend shares: the task/outcome records and the call that turns one task-function
call into an outcome.

A backend's single promise is that a candidate never takes the search down: whatever the
task function does (returns, raises, returns something that is not plain metrics), the
backend yields exactly one :class:`CandidateOutcome` for it, which the driver records durably.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from rosearch.errors import UserError

TRACEBACK_FRAMES = 3  # frames of the traceback kept in a failed outcome's error text


class BackendSetupError(UserError, ValueError):
    """A backend cannot start with the given settings (bad ``workers.*`` value, unreachable cluster)."""


@dataclass(frozen=True)
class CandidateTask:
    """One genome to evaluate; plain strings, ints and bytes so it ships cheaply to any worker.

    ``kind`` says what to do with it: ``"train"`` (distil and measure) or ``"attack"`` (run the
    full adversarial attack on an already trained student whose files are in ``payload``).
    ``max_steps`` is the KD step budget of a ``"train"`` task (successive halving trains the same
    genome at several budgets); None means the run's ``distill.max_steps``.
    """

    genome_hash: str
    genome_json: str
    seed: int
    generation: int
    kind: Literal["train", "attack"] = "train"
    payload: Mapping[str, bytes] = field(default_factory=dict)
    max_steps: int | None = None


@dataclass(frozen=True)
class TaskResult:
    """What a task function returns when it has files for the driver as well as metrics.

    Files (e.g. the trained student's ``model.safetensors``) travel back with the outcome rather
    than through a shared file system, so a Ray cluster needs none.
    """

    metrics: Mapping[str, Any]
    artifacts: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateOutcome:
    """The result of evaluating one task, successful or not (never an exception)."""

    genome_hash: str
    status: Literal["ok", "failed"]
    metrics: dict[str, Any]  # {} when failed; JSON-serialisable values
    error: str | None  # "ExcType: message" + last traceback lines when failed
    attempts: int  # 1 + retries used
    seconds: float  # wall time of the successful/final attempt
    worker: str  # e.g. "hostname:pid:cuda:0"
    artifacts: Mapping[str, bytes] = field(default_factory=dict)  # files for the driver to keep (ok only)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


TaskFn = Callable[[CandidateTask, Any], "dict[str, Any] | TaskResult"]  # (task, shared) -> metrics; raises on failure


@runtime_checkable
class Backend(Protocol):
    """Where candidate tasks run; the driver sees only this seam."""

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateOutcome]:
        """Yield one outcome per task, each as soon as it finishes (any order)."""
        ...

    def submit(self, task: CandidateTask) -> None:
        """Start ``task`` without waiting (asynchronous strategies keep every worker busy this way)."""
        ...

    def next_outcome(self) -> CandidateOutcome:
        """Block until one submitted task finishes and return its outcome (completion order)."""
        ...

    def capacity(self) -> int:
        """How many candidates can run at once now (at least 1)."""
        ...

    def close(self) -> None:
        """Release what the backend started (idempotent)."""
        ...


# Failures of the machine, not of the candidate: a resumed search tries such candidates again.
TRANSIENT_ERRORS: frozenset[str] = frozenset({
    "TimeoutError", "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError",
    "RaySystemError", "LocalRayletDiedError",
})


def is_transient_failure(error: str | None) -> bool:
    """True when a stored error (``ExcType: ...``, see :func:`format_error`) was the machine's fault."""
    return bool(error) and error.split(":", 1)[0].strip() in TRANSIENT_ERRORS


def format_error(exc: BaseException, *, frames: int = TRACEBACK_FRAMES) -> str:
    """``ExcType: message`` followed by the innermost traceback frames, for the results DB."""
    head = f"{type(exc).__name__}: {exc}"
    tail = "".join(traceback.format_tb(exc.__traceback__)[-frames:]).rstrip() if frames > 0 else ""
    return f"{head}\nTraceback (innermost {frames} frames):\n{tail}" if tail else head


def device_label(gpu_ids: Sequence[int | str] = ()) -> str:
    """``cuda:<ids>`` when this process has GPUs assigned or visible, else ``cpu``.

    Torch is consulted only if it is already imported: a label is not worth the import.
    """
    if gpu_ids:
        return "cuda:" + ",".join(str(i) for i in gpu_ids)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible != "-1":
        return "cuda:" + visible
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def worker_name(gpu_ids: Sequence[int | str] = (), node: str | None = None) -> str:
    """``hostname:pid:device`` of the current process, recorded with every outcome.

    On Ray the host part also names the node (``hostname/node-<id>``): several Ray nodes may
    share a host, and the store should say which node ran what.
    """
    host = socket.gethostname() if node is None else f"{socket.gethostname()}/node-{node}"
    return f"{host}:{os.getpid()}:{device_label(gpu_ids)}"


def plain_metrics(metrics: Any) -> dict[str, Any]:
    """Check that a task function returned JSON-ready metrics; unwrap numpy scalars.

    Raises TypeError naming the offending key, which the caller turns into a failed outcome.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"the task function must return a dict of metrics, got {type(metrics).__name__}")
    plain: dict[str, Any] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metric names must be strings, got {key!r} ({type(key).__name__})")
        if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy / torch scalar
            value = value.item()
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"metric {key!r} has a value of type {type(value).__name__} that is not JSON-serialisable "
                "(fix: return plain numbers, e.g. float(x) or tensor.item())"
            ) from exc
        plain[key] = value
    return plain


def run_task(fn: TaskFn, task: CandidateTask, shared: Any, *, worker: str) -> CandidateOutcome:
    """Call ``fn(task, shared)`` once and wrap the result, or the exception, as an outcome."""
    start = time.perf_counter()
    try:
        result = fn(task, shared)
        artifacts = plain_artifacts(result.artifacts) if isinstance(result, TaskResult) else {}
        metrics = plain_metrics(result.metrics if isinstance(result, TaskResult) else result)
    except Exception as exc:  # a candidate's own failure: recorded, never raised
        return failed_outcome(task, format_error(exc), seconds=time.perf_counter() - start, worker=worker)
    return CandidateOutcome(
        genome_hash=task.genome_hash, status="ok", metrics=metrics, error=None,
        attempts=1, seconds=time.perf_counter() - start, worker=worker, artifacts=artifacts,
    )


def plain_artifacts(artifacts: Any) -> dict[str, bytes]:
    """Check that returned files are ``{plain file name: bytes}`` (no paths: the driver picks the folder)."""
    if not isinstance(artifacts, Mapping):
        raise TypeError(f"TaskResult.artifacts must be a dict of file name -> bytes, got {type(artifacts).__name__}")
    for name, content in artifacts.items():
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            raise TypeError(f"artifact name {name!r} must be a plain file name (no folders, not hidden)")
        if not isinstance(content, bytes):
            raise TypeError(f"artifact {name!r} must be bytes, got {type(content).__name__}")
    return dict(artifacts)


def failed_outcome(task: CandidateTask, error: str, *, seconds: float, worker: str, attempts: int = 1) -> CandidateOutcome:
    """A failed outcome for ``task`` (empty metrics)."""
    return CandidateOutcome(
        genome_hash=task.genome_hash, status="failed", metrics={}, error=error,
        attempts=attempts, seconds=seconds if math.isfinite(seconds) else 0.0, worker=worker,
    )
