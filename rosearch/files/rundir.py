"""The run directory: its layout (every file a search writes there) and one driver per run.

Layout of ``<run.output_dir>/<run.name>/``, defined here once for the search that writes it and
for the commands that read it (stats, report, export, snapshot, the benchmarks):

* :data:`RESULTS_FILE` the SQLite store: every candidate, generation, checkpoint and the config;
* :data:`CONFIG_FILE` the run's config as JSON, for people (the store holds the one it checks);
* :data:`RUN_INFO_FILE` the teacher's reference numbers, for reports and model cards;
* :data:`SUMMARY_FILE` what the user saw at the end (counts, wall time, top candidates);
* :data:`BEST_GENOME_FILE` the top candidate's genome, for ``rosearch distill --genome``;
* :data:`CANDIDATES_DIR` ``/<genome hash>/``: each finished candidate's weights;
* :data:`REPORT_FILE` where ``rosearch report`` writes by default;
* ``defense.json.gz`` (``rosearch.defense.DEFENSE_FILE``, also beside exported students): every
  input defense a candidate may carry;
* :data:`LOCK_FILE` the driver's lock, below.

One driver per run directory: an exclusive lock held for a whole search.

Two drivers on one run (a scheduler restart plus a terminal ``--resume``) would retrain the
same candidates and interleave writes to one store. The lock is an OS advisory lock
(``fcntl.flock``) on ``<run_dir>/.lock``: the kernel drops it when the holder exits in any
way, ``kill -9`` included, so a lock can never outlive its process on the same host. The
file also records who holds it (pid, host, start time, command) so that a refused second
driver names the holder, and a lock file left by a dead process is reported as stale before
it is taken over. Read-only commands (stats, report, export, snapshot) take no lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from rosearch.errors import UserError

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.sqlite"
CONFIG_FILE = "config.json"
RUN_INFO_FILE = "run_info.json"
SUMMARY_FILE = "summary.json"
BEST_GENOME_FILE = "best_genome.json"
CANDIDATES_DIR = "candidates"
REPORT_FILE = "report.html"
LOCK_FILE = ".lock"
RUN_LOG_FILE = "rosearch.log"  # everything a search logged, workers' lines and library hints included


STUDENTS_DIR = "students"  # where `rosearch distill` writes the students of the same run.name
# what a run directory may hold before its store exists (a failed preparation leaves its log: why it failed)
_RUN_ENTRIES_WITHOUT_STORE = (LOCK_FILE, STUDENTS_DIR, RUN_LOG_FILE)


class RunLockedError(UserError):
    """Another live driver holds the run directory's lock."""


class RunPathError(UserError):
    """The run directory cannot be created or written (read-only filesystem, permissions, a file in the way)."""


def contained_run_dir(output_dir: str | Path, name: str) -> Path:
    """``output_dir/name``, refusing any name whose resolved path leaves ``output_dir``.

    :func:`rosearch.config.check_path_name` already refuses ``..`` and separators at load
    time; this second check also catches a symlink named like the run pointing elsewhere.
    """
    root = Path(output_dir).expanduser().resolve()
    run_dir = (root / name).resolve()
    if run_dir.parent != root:
        raise RunPathError(
            f"run directory {root / name} resolves to {run_dir}, outside run.output_dir={str(output_dir)!r} "
            "(fix: choose a plain run.name, and no symlink out of output_dir)"
        )
    return run_dir


def check_run_dir(run_dir: Path) -> None:
    """Refuse a run directory a search must not write into, before any preparation.

    A search starts in a missing or empty directory, or continues a run (one with its
    ``results.sqlite``). A directory that holds other files (an exported model, a project folder)
    is not a run: its ``config.json`` and the like would be overwritten. A zero-byte
    ``results.sqlite`` is a run whose results are gone (truncated, or copied while empty): starting
    a new store there would retrain into the old ``candidates/`` as if nothing had been lost.
    """
    if not run_dir.is_dir():
        return  # missing (created later), or a file: ensure_writable_dir says it cannot be used
    store = run_dir / RESULTS_FILE
    if store.is_file():
        if store.stat().st_size == 0:
            raise RunPathError(
                f"{store} is empty (0 bytes): this run's results are gone, so it cannot be resumed or extended "
                f"(fix: restore {RESULTS_FILE} from a backup or a `rosearch snapshot`; or move {run_dir} away, or "
                "choose another run.name, to start afresh)"
            )
        return
    foreign = sorted(entry for entry in run_dir.iterdir()
                     if entry.name not in _RUN_ENTRIES_WITHOUT_STORE and not entry.name.startswith(".write-test-"))
    if foreign:
        names = ", ".join(repr(e.name + ("/" if e.is_dir() else "")) for e in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise RunPathError(
            f"run directory {run_dir} is not empty and is not a rosearch run (it has no {RESULTS_FILE}): it holds "
            f"{names}{more}, which a search would overwrite (fix: choose another run.name or run.output_dir, "
            "or move those files away)"
        )


def ensure_writable_dir(path: Path, what: str,
                        fix: str = "choose a run.output_dir on a writable filesystem, or fix its permissions") -> None:
    """Create ``path`` and prove it is writable, before minutes of preparation are spent."""
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunPathError(
            f"{what} {path} is not writable ({exc.strerror or exc}) "
            f"(fix: {fix})"
        ) from exc


def _holder(text: str) -> dict:
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    if not info:
        return "an unknown process"
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {info.get('pid')} on host {info.get('host')} (since {when}: {info.get('command', '?')})"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(run_dir):`` — the calling process is the run's only driver until the block ends."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise :class:`RunLockedError` naming the holder (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.path.parent} is in use by {_describe(info)}; a second driver would retrain "
                "and overwrite its candidates (fix: wait for it to finish or stop it; analysis commands such as "
                "`rosearch stats` need no lock)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        previous = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if previous:  # the kernel released it, so its holder is gone (or on another host: NFS)
            here = previous.get("host") == socket.gethostname()
            state = "dead" if here and not _alive(previous.get("pid")) else "gone"
            logger.warning("run directory %s: taking over a stale lock of %s (%s)",
                           self.path.parent, _describe(previous), state)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                             "command": " ".join(sys.argv[:3])[:200]})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Clear the holder record and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty file: the next driver reports no stale holder
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
