"""Candidate tasks on Ray: a local Ray instance by default, or an existing cluster (``workers.address``).

How a search uses Ray, and why:

* the shared read-only inputs and the task function are ``ray.put`` once per backend; every
  task receives the two ObjectRefs, which Ray resolves in the worker to the stored objects
  (numpy arrays inside come back zero-copy and read-only from the node's object store);
* each *attempt* of a candidate is one streaming Ray task that first yields a "started" marker
  and then the outcome. The marker tells the driver when the candidate really began running (not
  when it was queued), so ``timeout_s`` measures running time, and which worker it runs on;
* retries are driven here, not by Ray's ``max_retries``: Ray re-runs a task transparently and
  does not expose the attempt count, and the results DB records honest ``attempts``. The policy
  is Ray's: system failures (worker process crash, node death, out-of-memory kill, lost object)
  are retried up to ``max_retries`` times; a Python exception in the candidate is deterministic
  and becomes a failed outcome at once; a timeout is not retried either. Each Ray task itself is
  submitted with ``max_retries=0, retry_exceptions=False``.

Workers import this module and the task function's module, so ``rosearch`` must be
importable on every node (Ray adds the driver's working directory to local workers' paths; on a
cluster install the package on the nodes or pass a ``runtime_env``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import ray
from ray.exceptions import (
    LocalRayletDiedError,
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    RayError,
    RaySystemError,
    WorkerCrashedError,
)

from rosearch.runtime.logs import WORKER_LOGGER, log_worker_lines
from rosearch.workers.base import (
    BackendSetupError,
    CandidateOutcome,
    CandidateTask,
    TaskFn,
    failed_outcome,
    run_task,
    worker_name,
)

logger = logging.getLogger(__name__)

CAPACITY_REFRESH_S = 5.0  # how stale the cached count of candidate slots may be
PROBE_TIMEOUT_S = 5.0  # an explicit cluster address must accept a TCP connection within this
DEFAULT_CONNECT_TIMEOUT_S = 30.0  # workers.connect_timeout_s's default
# HTTP/2's client connection preface and an empty SETTINGS frame: Ray's GCS (and Ray Client) speak gRPC,
# whose server answers with a SETTINGS frame; an HTTP/1 server, SSH or a database does not
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS_TYPE = 0x04
RETRYABLE_ERRORS = (WorkerCrashedError, NodeDiedError, OutOfMemoryError, LocalRayletDiedError, ObjectLostError, RaySystemError)
WORKER_LOG_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
_WORKER_HANDLER_NAME = "rosearch-worker"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Started:
    """First item of every attempt: the candidate is now running on ``worker``."""

    worker: str


def _configure_worker_logging(level: int) -> None:
    """Give the worker's root logger one stderr handler (Ray forwards stderr to the driver)."""
    root = logging.getLogger()
    if not any(h.get_name() == _WORKER_HANDLER_NAME for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_WORKER_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(WORKER_LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)


def _limit_threads(num_threads: int) -> None:
    """Keep torch to the task's CPUs so concurrent candidates do not oversubscribe a node.

    If torch is not imported yet the environment decides its pool size at import time.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(num_threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def _attempt(fn: TaskFn, shared: Any, task: CandidateTask, num_threads: int, log_level: int) -> Iterator[Any]:
    """Body of one Ray task (a streaming generator): report the start, then the outcome."""
    _configure_worker_logging(log_level)
    _limit_threads(num_threads)
    worker = worker_name(ray.get_gpu_ids(), node=ray.get_runtime_context().get_node_id()[:8])
    yield _Started(worker)
    yield run_task(fn, task, shared, worker=worker)


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------


@dataclass
class _Attempt:
    """Driver-side bookkeeping of one in-flight attempt."""

    task: CandidateTask
    number: int  # 1 for the first attempt
    submitted_at: float  # time.monotonic()
    started_at: float | None = None
    worker: str = "unknown"

    def elapsed(self, now: float) -> float:
        return now - (self.started_at if self.started_at is not None else self.submitted_at)


class RayBackend:
    """Runs candidate tasks as Ray tasks with ``num_cpus``/``num_gpus`` each (fractions allowed)."""

    def __init__(
        self,
        fn: TaskFn,
        shared: Any,
        *,
        address: str | None,
        num_cpus: float,
        num_gpus: float,
        max_retries: int,
        timeout_s: float | None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        _check_settings(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, timeout_s=timeout_s)
        self._max_retries = max_retries
        self._timeout_s = timeout_s
        self._num_threads = max(1, int(num_cpus))
        self._log_level = _worker_log_level()
        self._num_cpus, self._num_gpus = num_cpus, num_gpus
        self._pending: dict[Any, _Attempt] = {}  # in-flight attempts by their streaming generator
        self._ready: deque[CandidateOutcome] = deque()  # outcomes received, not yet handed out
        self._capacity: tuple[float, int] | None = None  # (read at, slots)
        self._owns_ray = _connect(address, connect_timeout_s)
        self._closed = False
        try:
            _check_resources(num_cpus=num_cpus, num_gpus=num_gpus, strict=address is None and self._owns_ray)
            self._fn_ref = ray.put(fn)
            self._shared_ref = ray.put(shared)
            self._remote = ray.remote(_attempt).options(
                num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0, retry_exceptions=False, num_returns="streaming",
            )
        except BaseException:
            self.close()
            raise

    @property
    def owns_ray(self) -> bool:
        """True when this backend started (or connected) Ray and will shut it down on close."""
        return self._owns_ray

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateOutcome]:
        """Submit every task, then yield outcomes in completion order as each one finishes.

        Abandoning the iterator early cancels the attempts still in flight.
        """
        self._check_open()
        for task in tasks:
            self.submit(task)
        try:
            for _ in range(len(tasks)):
                yield self.next_outcome()
        finally:
            self._cancel_all()

    def submit(self, task: CandidateTask) -> None:
        """Start the first attempt of ``task`` (Ray queues it until a node has its resources)."""
        self._check_open()
        self._submit(task, 1, self._pending)

    def next_outcome(self) -> CandidateOutcome:
        """Block until a submitted task has its outcome (retries of lost attempts happen inside)."""
        self._check_open()
        while not self._ready:
            if not self._pending:
                raise RuntimeError("next_outcome called with no submitted task in flight (fix: submit one first)")
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=self._wait_timeout(self._pending))
            for gen in ready:
                outcome = self._advance(gen, self._pending.pop(gen), self._pending)
                if outcome is not None:
                    self._ready.append(outcome)
            self._ready.extend(self._expire(self._pending))
        return self._ready.popleft()

    def capacity(self) -> int:
        """Candidates that fit at once on the live nodes (by CPUs, and GPUs when a candidate takes some).

        Read from Ray's node table at most every few seconds: nodes join and die during a run.
        """
        now = time.monotonic()
        if self._capacity is None or now - self._capacity[0] > CAPACITY_REFRESH_S:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
            self._capacity = (now, max(1, sum(_slots(r, self._num_cpus, self._num_gpus) for r in nodes)))
        return self._capacity[1]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("RayBackend used after close() (fix: create a new backend)")

    def _cancel_all(self) -> None:
        for gen in self._pending:
            ray.cancel(gen, force=True)
        self._pending.clear()
        self._ready.clear()

    def close(self) -> None:
        """Shut down Ray if this backend started it (idempotent); a joined Ray is left running."""
        if self._closed:
            return
        self._closed = True
        if ray.is_initialized():
            self._cancel_all()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------

    def _submit(self, task: CandidateTask, number: int, pending: dict[Any, _Attempt]) -> None:
        gen = self._remote.remote(self._fn_ref, self._shared_ref, task, self._num_threads, self._log_level)
        pending[gen] = _Attempt(task=task, number=number, submitted_at=time.monotonic())

    def _advance(self, gen: Any, attempt: _Attempt, pending: dict[Any, _Attempt]) -> CandidateOutcome | None:
        """Consume the next item of a ready attempt; return its outcome once it has one."""
        task = attempt.task
        try:
            item = ray.get(next(gen))
        except StopIteration:
            return self._failed(attempt, "RuntimeError: the Ray task ended without reporting an outcome")
        except RETRYABLE_ERRORS as exc:
            if attempt.number <= self._max_retries:
                logger.warning(
                    "candidate %s: attempt %d lost to a system failure (%s); retrying (%d of %d retries)",
                    task.genome_hash[:12], attempt.number, type(exc).__name__, attempt.number, self._max_retries,
                )
                self._submit(task, attempt.number + 1, pending)
                return None
            return self._failed(attempt, _ray_error_text(exc) + f" (after {attempt.number} attempt(s), workers.max_retries={self._max_retries})")
        except RayError as exc:  # e.g. the function could not be deserialised on the worker
            return self._failed(attempt, _ray_error_text(exc))
        if isinstance(item, _Started):
            attempt.started_at = time.monotonic()
            attempt.worker = item.worker
            pending[gen] = attempt
            return None
        outcome = replace(item, attempts=attempt.number)
        if not outcome.ok:
            logger.warning("candidate %s failed: %s", task.genome_hash[:12], (outcome.error or "").splitlines()[0])
        return outcome

    def _failed(self, attempt: _Attempt, error: str) -> CandidateOutcome:
        logger.warning("candidate %s failed: %s", attempt.task.genome_hash[:12], error.splitlines()[0])
        return failed_outcome(
            attempt.task, error, seconds=attempt.elapsed(time.monotonic()), worker=attempt.worker, attempts=attempt.number,
        )

    def _wait_timeout(self, pending: dict[Any, _Attempt]) -> float | None:
        """Seconds until the earliest running attempt hits ``timeout_s`` (None: wait for news)."""
        if self._timeout_s is None:
            return None
        deadlines = [a.started_at + self._timeout_s for a in pending.values() if a.started_at is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _expire(self, pending: dict[Any, _Attempt]) -> Iterator[CandidateOutcome]:
        """Cancel (force-kill) attempts running longer than ``timeout_s``; not retried."""
        if self._timeout_s is None:
            return
        now = time.monotonic()
        for gen, attempt in list(pending.items()):
            if attempt.started_at is not None and now - attempt.started_at >= self._timeout_s:
                del pending[gen]
                ray.cancel(gen, force=True)
                yield self._failed(attempt, f"TimeoutError: timeout after {self._timeout_s:g}s (workers.timeout_s)")


# --------------------------------------------------------------------------------------------
# Set-up helpers
# --------------------------------------------------------------------------------------------


def preflight(*, address: str | None, num_cpus: float, num_gpus: float, max_retries: int, timeout_s: float | None,
              connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """The checks that need no Ray session: settings, and that an explicit address answers as Ray.

    Run before any expensive preparation so that a bad ``workers`` section fails in seconds.
    """
    _check_settings(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, timeout_s=timeout_s)
    if address is not None:
        _probe(address, connect_timeout_s)


def _check_settings(*, num_cpus: float, num_gpus: float, max_retries: int, timeout_s: float | None) -> None:
    if not num_cpus > 0:
        raise BackendSetupError(f"workers.num_cpus_per_candidate must be > 0, got {num_cpus!r}")
    if not num_gpus >= 0:
        raise BackendSetupError(f"workers.num_gpus_per_candidate must be >= 0, got {num_gpus!r}")
    if num_gpus > 1 and num_gpus != int(num_gpus):
        raise BackendSetupError(
            f"workers.num_gpus_per_candidate={num_gpus!r}: more than one GPU must be a whole number (fix: e.g. 1, 2 or 0.5)"
        )
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise BackendSetupError(f"workers.max_retries must be an integer >= 0, got {max_retries!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise BackendSetupError(f"workers.timeout_s must be > 0 or unset, got {timeout_s!r}")


def _worker_log_level() -> int:
    """Workers log at the driver's level when the driver configured logging, else at INFO."""
    root = logging.getLogger()
    return root.getEffectiveLevel() if root.handlers else logging.INFO


def _connect(address: str | None, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> bool:
    """Start or join Ray; return True when this call did so (and close() should undo it).

    ``ray.init`` replaces the process's SIGTERM handler with one that exits at once; the caller's
    handler (the CLI's: "interrupted, resume with --resume", lock released) is put back afterwards.
    """
    if address is not None:
        _probe(address, connect_timeout_s)
    if ray.is_initialized():
        logger.info("using the Ray session this process is already connected to")
        return False
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if address is None:
            num_cpus = os.cpu_count() or 1
            logger.info("starting a local Ray instance with %d CPUs", num_cpus)
            # address="local": a new instance even when a `ray start` cluster runs on this machine (a bare
            # ray.init() would join that one, and refuse num_cpus)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                     logging_level=logging.WARNING)
            route_worker_output()
            return True
        try:
            context = _init_within(connect_timeout_s, address)
        except ConnectionError as exc:
            raise BackendSetupError(
                f"workers.address={address!r}: cannot join a Ray cluster: {exc} "
                "(fix: start one with `ray start --head`, or unset workers.address to run a local Ray)"
            ) from exc
    finally:
        if main_thread and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    route_worker_output()
    logger.info("joined the Ray cluster at %s", address)
    warn_if_dashboard_exposed(address, getattr(context, "dashboard_url", None))
    return True


_WORKER_OUTPUT_HANDLER = "rosearch_worker_output"


def route_worker_output() -> None:
    """Workers' printed lines become log records (:func:`rosearch.runtime.logs.log_worker_lines`) instead of Ray's
    console output, which prefixes them with ANSI-coloured ``(pid=...)``, folds repeats into "[repeated
    Nx across cluster]" and adds a notice about its de-duplication: the records keep the worker's pid and
    level, go to the run's log file, and reach the console only at WARNING and above (all with --verbose).
    Uses Ray's driver-side dispatcher of worker output; where a Ray version lacks it, Ray prints as it does."""
    try:  # lazy: a private module of Ray, read only once Ray runs
        from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # a Ray version without it: its own printing stays
        logger.debug("Ray has no worker output dispatcher here; workers' lines print as Ray prints them")
        return
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler(_WORKER_OUTPUT_HANDLER)
    dispatcher.add_handler(_WORKER_OUTPUT_HANDLER, _forward_worker_output)


def _forward_worker_output(data: dict[str, Any]) -> None:
    from ray.experimental.tqdm_ray import RAY_TQDM_MAGIC  # lazy: Ray's own tqdm protocol, once Ray runs

    pid = data.get("pid")
    ip = data.get("ip")
    where = "" if ip is None or ip == data.get("localhost") else f" on {ip}"
    lines = [line for line in data.get("lines", []) if RAY_TQDM_MAGIC not in line]
    if pid == "autoscaler":  # as Ray prints them: only its events, not its periodic status tables
        from ray._private.worker import filter_autoscaler_events  # lazy: Ray's private helper, once Ray runs

        try:
            events = list(filter_autoscaler_events(lines))
        except Exception:  # it asks the cluster which autoscaler runs; without an answer keep v1's event lines
            events = [line.split(":event_summary:")[-1] for line in lines if ":event_summary:" in line]
        for line in events:
            logging.getLogger(WORKER_LOGGER).info("[ray autoscaler%s] %s", where, line)
        return
    if pid == "raylet":  # the node's own reports (a task killed for memory, a dead worker): always shown
        for line in lines:
            logging.getLogger(WORKER_LOGGER).warning("[ray raylet%s] %s", where, line)
        return
    log_worker_lines(pid, lines, where)


DASHBOARD_PORT = 8265


def warn_if_dashboard_exposed(address: str, dashboard_url: str | None) -> bool:
    """Warn (and return True) when the cluster's dashboard answers on a network address, not only on
    localhost: its Jobs API runs any command it is sent, without authentication (CVE-2023-48022,
    "ShadowRay"). Ray's own guidance: bind it to 127.0.0.1 and reach it through an SSH tunnel."""
    port = DASHBOARD_PORT
    if dashboard_url:
        try:
            port = urlsplit("//" + dashboard_url.split("://")[-1]).port or DASHBOARD_PORT
        except ValueError:
            pass
    host = urlsplit("//" + address.removeprefix("ray://")).hostname if address != "auto" else None
    if not host:
        host = ray.util.get_node_ip_address()
    if host in ("localhost", "::1") or host.startswith("127."):
        return False
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError:
        return False
    logger.warning(
        "the Ray dashboard of this cluster answers on %s:%d, open to the network: its Jobs API runs any command "
        "anyone who reaches it sends, without authentication (CVE-2023-48022, \"ShadowRay\") (fix: start the head "
        "with `ray start --head --dashboard-host=127.0.0.1` and open it through an SSH tunnel: "
        "`ssh -L %d:localhost:%d HEAD` then http://localhost:%d)", host, port, port, port, port)
    return True


def _init_within(connect_timeout_s: float, address: str) -> Any:
    """``ray.init(address)`` (its context returned), given up after ``connect_timeout_s``: Ray itself
    retries a GCS that does not answer for minutes. It runs in a daemon thread, so the driver stays responsive to Ctrl-C and
    SIGTERM while it waits; one that is given up on is left behind for the exiting process to drop."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["context"] = ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome["error"] = exc

    quiet = _NotMainThreadFilter()
    ray_logger = logging.getLogger("ray._private.worker")
    ray_logger.addFilter(quiet)
    thread = threading.Thread(target=target, name="rosearch-ray-init", daemon=True)
    try:
        thread.start()
        thread.join(connect_timeout_s)
    finally:
        ray_logger.removeFilter(quiet)
    if thread.is_alive():
        raise BackendSetupError(
            f"workers.address={address!r}: no Ray session after workers.connect_timeout_s={connect_timeout_s:g} s "
            "(the address answers, but Ray's GCS did not let this driver join) (fix: check that the head node runs "
            "`ray start --head` with the same Ray version, or raise workers.connect_timeout_s)"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("context")


class _NotMainThreadFilter(logging.Filter):
    """Drops Ray's "SIGTERM handler is not set" warning: rosearch runs ray.init off the main thread on
    purpose, and keeps its own SIGTERM handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


def _probe(address: str, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Fail fast on an explicit ``host:port`` that is not a Ray cluster (Ray itself waits minutes).

    Two steps, each bounded: a TCP connection (within :data:`PROBE_TIMEOUT_S`, or
    ``connect_timeout_s`` when that is shorter), then the gRPC handshake Ray's GCS and Ray Client
    answer (HTTP/2's preface, answered by a SETTINGS frame within ``connect_timeout_s``). A web
    server, SSH or a database on that port fails the second step in milliseconds.
    """
    if address == "auto":
        return  # Ray resolves it from the local node's files and fails at once when there is none
    rest = address.removeprefix("ray://")
    try:
        parts = urlsplit("//" + rest)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise BackendSetupError(f"workers.address={address!r} is not 'auto' or host:port ({exc})") from exc
    if not host or port is None:
        raise BackendSetupError(
            f"workers.address={address!r} is not 'auto' or host:port "
            "(fix: e.g. workers.address=10.0.0.5:6379, or unset it to run a local Ray)"
        )
    try:
        sock = socket.create_connection((host, port), timeout=min(PROBE_TIMEOUT_S, connect_timeout_s))
    except OSError as exc:
        raise BackendSetupError(
            f"workers.address={address!r}: no Ray cluster reachable at {host}:{port} ({exc}) "
            "(fix: check the head node's address and port, or unset workers.address to run a local Ray)"
        ) from exc
    not_ray = f"workers.address={address!r}: {host}:{port} accepts connections but is not a Ray cluster"
    fix = ("(fix: use the head node's GCS address, port 6379 by default, as printed by `ray start --head`; "
           "or unset workers.address to run a local Ray)")
    with sock:
        try:
            sock.settimeout(connect_timeout_s)
            sock.sendall(_H2_PREFACE)
            header = _receive(sock, 9)
        except socket.timeout:
            raise BackendSetupError(f"{not_ray}: nothing answered Ray's handshake within "
                                    f"workers.connect_timeout_s={connect_timeout_s:g} s {fix}") from None
        except OSError as exc:
            raise BackendSetupError(f"{not_ray} ({exc}) {fix}") from exc
    if len(header) < 9 or header[3] != _H2_SETTINGS_TYPE:
        said = f"it answered {header.decode('ascii', 'replace')!r}" if header else "it closed the connection"
        raise BackendSetupError(f"{not_ray}: {said} to Ray's handshake {fix}")


def _receive(sock: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only when the peer closes the connection first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _check_resources(*, num_cpus: float, num_gpus: float, strict: bool) -> None:
    """A candidate that fits on no node would wait forever: refuse (local Ray) or warn (cluster,
    whose autoscaler may still add such a node)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for field, key, need in (("num_cpus_per_candidate", "CPU", num_cpus), ("num_gpus_per_candidate", "GPU", num_gpus)):
        have = max((r.get(key, 0.0) for r in nodes), default=0.0)
        if need > have:
            message = (
                f"workers.{field}={need:g} but the largest Ray node has {have:g} {key}(s) "
                f"(fix: lower workers.{field} or add a node with enough {key}s)"
            )
            if strict:
                raise BackendSetupError(message)
            logger.warning("%s; tasks will wait until such a node joins", message)


def _slots(resources: dict[str, float], num_cpus: float, num_gpus: float) -> int:
    """Candidates of ``num_cpus`` / ``num_gpus`` each that fit at once on a node with ``resources``."""
    fit = math.floor(resources.get("CPU", 0.0) / num_cpus + 1e-9)
    if num_gpus > 0:
        fit = min(fit, math.floor(resources.get("GPU", 0.0) / num_gpus + 1e-9))
    return max(0, fit)


def _ray_error_text(exc: BaseException) -> str:
    """``ExcType: first lines of Ray's message`` without terminal colour codes."""
    lines = _ANSI.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: " + "\n".join(lines[:8])
