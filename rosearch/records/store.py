"""The durable record of one search run: a single SQLite file (``<run_dir>/results.sqlite``).

Why SQLite: a search runs for hours and its driver may be killed at any moment, so every
finished candidate is committed (``synchronous=FULL``) before the next one is scheduled, and
``--resume`` finds exactly what was finished. One file holds the run config, the candidates, the
per-generation populations and the strategy's checkpoint, so a run is copied or archived as one
file. Why a rollback journal (``journal_mode=DELETE``) and not WAL: a WAL commit lands in the
``-wal`` file and reaches ``results.sqlite`` only at a later checkpoint, so a ``kill -9`` between
the two leaves a candidate that the live run shows but a copy of ``results.sqlite`` alone lacks.
With a rollback journal every commit is written into ``results.sqlite`` itself before it returns
(the ``-journal`` file exists only while a write is in flight, milliseconds); the price, readers
briefly waiting for a commit, is nothing for a file written a few times a minute. A file found
in WAL mode is switched on its next write and still read read-only (a copy of a live run is best
taken with :func:`snapshot`, SQLite's backup API). Writes come from one process (the
driver, which holds the run lock of :mod:`rosearch.files.rundir`); analysis tools open the same file
with ``read_only=True`` while the run is going, and also read a copy on a read-only filesystem.

Everything is stored as JSON, never pickle. JSON has no spelling for NaN or ±inf (Python's
``NaN``/``Infinity`` tokens are non-standard and SQLite's JSON functions reject them), so a
non-finite float inside metrics, objectives, stats, config or checkpoint state is written as
the tagged object ``{"$float": "nan" | "inf" | "-inf"}`` and turned back into the float on
read: values round-trip exactly. The plain REAL columns (``fitness`` and the promoted metric
columns) follow SQLite, which keeps ±inf but stores NaN as NULL; ``fitness`` NaN therefore
reads back as ``None`` (unknown), while the JSON ``metrics``/``objectives`` stay exact.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rosearch.errors import UserError

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

# The layout of the file and of the config stored in it. A file of another version is refused
# (:class:`SchemaVersionError` says which rosearch wrote it); a run is re-run, not converted.
# Version 2 stores each distill method's knobs in its own section and the config's fingerprint
# as the hash of its plain dict.
SCHEMA_VERSION = 2
STATUSES = ("ok", "failed")
# Metrics copied into their own columns so SQL queries and indexes need no JSON parsing.
PROMOTED_METRICS = {"dev_accuracy": "REAL", "params": "INTEGER", "flops": "INTEGER", "robust_accuracy": "REAL"}
_FLOAT_TAG = "$float"
_ABSENT = "<absent>"

_PROMOTED_COLUMNS = ", ".join(f"{name} {sql_type}" for name, sql_type in PROMOTED_METRICS.items())
# JSON columns: parents/population (list of hashes), metrics/stats/state (object), objectives (list or NULL).
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE candidates ("
    " genome_hash TEXT PRIMARY KEY, genome_json TEXT NOT NULL, generation INTEGER NOT NULL,"
    " parents TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), metrics TEXT NOT NULL,"
    " fitness REAL, objectives TEXT, error TEXT, attempts INTEGER NOT NULL, seconds REAL NOT NULL,"
    f" worker TEXT NOT NULL, finished_at REAL NOT NULL, {_PROMOTED_COLUMNS})",
    "CREATE INDEX candidates_generation ON candidates (generation)",
    "CREATE INDEX candidates_fitness ON candidates (fitness)",
    "CREATE TABLE generations ("
    " generation INTEGER PRIMARY KEY, population TEXT NOT NULL, stats TEXT NOT NULL, created_at REAL NOT NULL)",
    "CREATE TABLE checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, saved_at REAL NOT NULL)",
)


class ResultStoreError(UserError, ValueError):
    """The results file cannot be used as asked (wrong file, closed, read-only, bad record)."""


class SchemaVersionError(ResultStoreError):
    """The file was written with another schema version (or is not a rosearch results file)."""


class DamagedStoreError(ResultStoreError):
    """The results file is corrupt (torn copy, disk fault, edited by hand)."""


class RunExistsError(ResultStoreError):
    """A fresh run was started in a run directory that already holds results."""


class ConfigMismatchError(ResultStoreError):
    """A resumed run's config differs from the config the run was started with."""

    def __init__(self, message: str, differences: list[tuple[str, Any, Any]]) -> None:
        super().__init__(message)
        self.differences = differences  # [(dotted.path, old, new)]


@dataclass(frozen=True)
class CandidateRecord:
    """One finished (or finally failed) candidate, as the store keeps it."""

    genome_hash: str
    genome_json: str
    generation: int  # generation in which it was first proposed
    parents: tuple[str, ...]  # parent hashes (empty for random initial individuals)
    status: str  # "ok" | "failed"
    metrics: dict[str, Any]
    fitness: float | None  # scalar fitness (weighted mode) or None
    objectives: tuple[float, ...] | None  # values used by selection (weighted: (fitness,); nsga2: several)
    error: str | None
    attempts: int
    seconds: float
    worker: str
    finished_at: float  # unix time

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ResultStoreError(
                f"candidate {self.genome_hash!r} has status {self.status!r}; use one of {', '.join(STATUSES)}"
            )
        if not isinstance(self.metrics, Mapping):
            raise ResultStoreError(
                f"candidate {self.genome_hash!r} has metrics of type {type(self.metrics).__name__}; "
                "pass a dict of metric name -> number"
            )


# --------------------------------------------------------------------------------------------
# JSON with non-finite floats
# --------------------------------------------------------------------------------------------


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON data; non-finite floats tagged, numpy scalars unwrapped."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return {_FLOAT_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ResultStoreError(f"{where} has key {key!r} of type {type(key).__name__}; use string keys")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        return _plain(item(), where)
    raise ResultStoreError(
        f"{where} = {value!r} of type {type(value).__name__} cannot be stored as JSON; "
        "convert it to a number, string, list or dict first"
    )


def _dumps(value: Any, where: str) -> str:
    return json.dumps(_plain(value, where), sort_keys=True, allow_nan=False)


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _FLOAT_TAG in obj and obj[_FLOAT_TAG] in ("nan", "inf", "-inf"):
        return float(obj[_FLOAT_TAG])
    return obj


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text, object_hook=_untag)


def _promoted(metrics: Mapping[str, Any], name: str) -> float | int | None:
    """A promoted column's value: the metric when it is a real number, else NULL."""
    value = metrics.get(name)
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (int, float)):
        value = item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if PROMOTED_METRICS[name] == "INTEGER" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _config_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted paths where two plain config trees differ: [(path, old value, new value)]."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else key
            diffs.extend(_config_diff(old.get(key, _ABSENT), new.get(key, _ABSENT), path))
        return diffs
    return [] if old == new else [(prefix or "<config>", old, new)]


def _package_version() -> str:
    try:
        return metadata.version("rosearch")
    except metadata.PackageNotFoundError:  # running from a source checkout
        return "unknown"


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------

_CANDIDATE_FIELDS = (
    "genome_hash", "genome_json", "generation", "parents", "status", "metrics", "fitness", "objectives",
    "error", "attempts", "seconds", "worker", "finished_at",
)


class ResultStore:
    """One run's results file. Every write method commits before it returns.

    ``read_only=True`` opens an existing file for analysis (also while a run writes to it);
    write methods then raise :class:`ResultStoreError`.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.is_file():
            raise FileNotFoundError(f"no results file at {self.path}; check the run directory")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None
        self._wal = False  # set by _configure_writer: True only if the file could not leave WAL mode
        try:
            self._conn = self._open(immutable=False)
            try:
                empty = self._check_schema()  # before any PRAGMA that would modify a foreign file
            except sqlite3.OperationalError:
                if not (read_only and _unwritable(self.path)):
                    raise
                # a WAL file on a read-only filesystem: SQLite cannot create the -shm index, but
                # nobody can be writing there either, so reading it as immutable is safe
                self.close()
                self._conn = self._open(immutable=True)
                logger.info("results: %s is on a read-only filesystem; reading it as immutable", self.path)
                empty = self._check_schema()
            if not empty:
                self._check_integrity()
            if not read_only:
                self._configure_writer()
                if empty:
                    self._create_schema()
        except sqlite3.DatabaseError as exc:
            self.close()
            name = getattr(exc, "sqlite_errorname", "")
            if name == "SQLITE_NOTADB":
                raise SchemaVersionError(
                    f"{self.path} is not a SQLite results file ({exc}); choose another run.name"
                ) from exc
            if name == "SQLITE_CORRUPT" or "malformed" in str(exc):
                raise _damaged(self.path, str(exc)) from exc
            if name in ("SQLITE_READONLY", "SQLITE_CANTOPEN") or isinstance(exc, sqlite3.OperationalError):
                raise ResultStoreError(
                    f"cannot open {self.path} ({exc}); check that the file and its directory exist and are "
                    "readable (and writable for a search), or copy the run to a writable place"
                ) from exc
            raise
        except BaseException:
            self.close()
            raise

    def _open(self, *, immutable: bool) -> sqlite3.Connection:
        if self.read_only:
            flags = "mode=ro&immutable=1" if immutable else "mode=ro"
            target, uri = f"{self.path.resolve().as_uri()}?{flags}", True
        else:
            target, uri = str(self.path), False
        # isolation_level=None: no implicit transactions; each write opens and commits its own.
        return sqlite3.connect(target, uri=uri, isolation_level=None, timeout=30.0)

    def _check_integrity(self) -> None:
        """Raise :class:`DamagedStoreError` unless SQLite's quick check passes (ms for a run's file)."""
        rows = [row[0] for row in self._connection().execute("PRAGMA quick_check")]
        if rows != ["ok"]:
            raise _damaged(self.path, "; ".join(str(r) for r in rows[:3]))

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        """Copy a WAL, if the file is still in WAL mode (a reader held it when it was opened), into the main file.

        With the rollback journal this store normally uses, every commit is already in the main file and
        this does nothing. PASSIVE never waits for readers; TRUNCATE also empties the ``-wal`` file.
        """
        if self.read_only or self._conn is None or not self._wal:
            return
        busy, _, _ = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        if busy:
            logger.debug("results: WAL checkpoint of %s was partial (a reader holds an old snapshot)", self.path)

    # ---------------------------------------------------------------- connection & schema

    def _configure_writer(self) -> None:
        conn = self._connection()
        # every commit lands in results.sqlite itself, so the file alone is the run even right after kill -9
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0].lower()
        self._wal = mode == "wal"
        if mode != "delete":
            logger.warning(
                "results file %s stays in journal mode %s (another process has it open); each commit is "
                "checkpointed into the file, but close the other reader to get the one-file guarantee back",
                self.path, mode,
            )
        conn.execute("PRAGMA synchronous=FULL")  # a committed candidate survives a crash, not just a kill

    def _check_schema(self) -> bool:
        """Raise unless the file is empty or a results file of this schema version; True when empty."""
        conn = self._connection()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            if self.read_only:
                raise SchemaVersionError(f"{self.path} is empty, not a rosearch results file")
            return True
        if "meta" not in tables:
            raise SchemaVersionError(
                f"{self.path} is a SQLite file but not a rosearch results file (no meta table); choose another run.name"
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = row[0] if row else None
        if found != str(SCHEMA_VERSION):
            writer = conn.execute("SELECT value FROM meta WHERE key = 'rosearch_version'").fetchone()
            raise SchemaVersionError(
                f"{self.path} has results schema version {found}, this rosearch reads version {SCHEMA_VERSION}; "
                f"it was written by rosearch {writer[0] if writer else '(unknown version)'} "
                "(fix: run the search again with this rosearch under a new run.name, or read the run with the "
                "rosearch version that wrote it)"
            )
        return False

    def _create_schema(self) -> None:
        with self._transaction() as tx:
            for statement in _SCHEMA:
                tx.execute(statement)
            tx.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("created_at", repr(time.time())),
                 ("rosearch_version", _package_version())],
            )
        logger.info("results: created %s (schema version %d)", self.path, SCHEMA_VERSION)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ResultStoreError(f"results store {self.path} is closed; open a new ResultStore")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise ResultStoreError(
                f"results store {self.path} was opened read_only; open it without read_only to write"
            )
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.checkpoint()  # only in the rare WAL fallback; the rollback journal already wrote the file

    def close(self) -> None:
        """Close the file (idempotent). Everything was already committed by the write methods."""
        if self._conn is not None:
            if not self.read_only:
                try:
                    self.checkpoint("TRUNCATE")
                except sqlite3.DatabaseError as exc:  # closing must not fail; the data is committed
                    logger.warning("results: final WAL checkpoint of %s failed: %s", self.path, exc)
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- run config & meta

    def metadata(self) -> dict[str, str]:
        """The meta table without the config JSON: schema_version, created_at, rosearch_version, fingerprint."""
        rows = self._connection().execute("SELECT key, value FROM meta WHERE key != 'config'")
        return dict(rows.fetchall())

    def run_config(self) -> dict | None:
        """The config the run was started with, or None before :meth:`write_run_config`."""
        row = self._connection().execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        return None if row is None else _loads(row[0])

    def write_run_config(self, config: dict, fingerprint: str, *, resume: bool) -> None:
        """Store the run's config once; on resume, refuse any config that differs from it.

        A run's results only mean something under one config, so a second start without
        ``resume`` is refused (it would mix two searches in one file), and a resume must
        bring the same config (same fingerprint) back.
        """
        config_json = _dumps(config, "config")
        stored = self.run_config()
        if stored is None:
            with self._transaction() as tx:
                tx.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("config", config_json), ("config_fingerprint", fingerprint)],
                )
            if resume:
                logger.info("results: --resume on a run with no results yet; starting it fresh")
            return
        if not resume:
            raise RunExistsError(
                f"run directory already has results ({self.path}); "
                "pass --resume to continue it or choose another run.name"
            )
        old_fingerprint = self.metadata().get("config_fingerprint")
        if old_fingerprint == fingerprint:
            logger.info("results: resuming %s (config fingerprint %s)", self.path, fingerprint)
            return
        diffs = _config_diff(stored, _loads(config_json))
        listed = "; ".join(f"{path}: {old!r} → {new!r}" for path, old, new in diffs)
        listed = listed or "no field differs (only the fingerprint)"
        raise ConfigMismatchError(
            f"cannot resume {self.path}: the config differs from the one the run started with "
            f"(fingerprint {old_fingerprint} → {fingerprint}): {listed}. "
            "Resume with the original config, or start a new run.name",
            diffs,
        )

    # ---------------------------------------------------------------- candidates

    def record_candidate(self, record: CandidateRecord) -> None:
        """Insert or replace the candidate (a retried failure may later succeed); durable on return."""
        where = f"candidate {record.genome_hash}"
        row = {
            "genome_hash": record.genome_hash,
            "genome_json": record.genome_json,
            "generation": int(record.generation),
            "parents": _dumps(list(record.parents), f"{where} parents"),
            "status": record.status,
            "metrics": _dumps(record.metrics, f"{where} metrics"),
            "fitness": None if record.fitness is None else float(record.fitness),
            "objectives": None if record.objectives is None else _dumps(list(record.objectives), f"{where} objectives"),
            "error": record.error,
            "attempts": int(record.attempts),
            "seconds": float(record.seconds),
            "worker": record.worker,
            "finished_at": float(record.finished_at),
        } | {name: _promoted(record.metrics, name) for name in PROMOTED_METRICS}
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self._transaction() as tx:
            tx.execute(f"INSERT OR REPLACE INTO candidates ({columns}) VALUES ({marks})", row)

    def candidate(self, genome_hash: str) -> CandidateRecord | None:
        """The stored candidate with this hash, or None."""
        row = self._connection().execute(
            f"SELECT {', '.join(_CANDIDATE_FIELDS)} FROM candidates WHERE genome_hash = ?", (genome_hash,)
        ).fetchone()
        return None if row is None else _record_from_row(row)

    def candidates(self) -> list[CandidateRecord]:
        """All stored candidates, in the order they finished."""
        rows = self._connection().execute(
            f"SELECT {', '.join(_CANDIDATE_FIELDS)} FROM candidates ORDER BY finished_at, genome_hash"
        )
        return [_record_from_row(row) for row in rows]

    def candidates_frame(self) -> pandas.DataFrame:
        """One row per candidate (by finish time): record fields, then one column per metric.

        Nested metric dicts are flattened to dotted names; a metric whose name collides with a
        record field (e.g. ``seconds``) becomes ``metric_<name>``. Missing metrics are NaN.
        """
        import pandas as pd  # lazy: analysis-only dependency; the driver never needs it

        records = self.candidates()
        rows = []
        metric_columns: dict[str, None] = {}  # ordered set
        for record in records:
            row: dict[str, Any] = {name: getattr(record, name) for name in _CANDIDATE_FIELDS if name != "metrics"}
            row["parents"] = list(record.parents)
            row["objectives"] = None if record.objectives is None else list(record.objectives)
            for name, value in _flatten(record.metrics):
                column = f"metric_{name}" if name in _CANDIDATE_FIELDS else name
                metric_columns.setdefault(column)
                row[column] = value
            rows.append(row)
        fields = [name for name in _CANDIDATE_FIELDS if name != "metrics"]
        return pd.DataFrame.from_records(rows, columns=fields + list(metric_columns))

    # ---------------------------------------------------------------- generations & checkpoint

    def record_generation(self, generation: int, population: Sequence[str], stats: dict[str, float]) -> None:
        """Store (or, after a resume, replace) one generation's population and summary stats."""
        with self._transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO generations (generation, population, stats, created_at) VALUES (?, ?, ?, ?)",
                (int(generation), _dumps(list(population), f"generation {generation} population"),
                 _dumps(stats, f"generation {generation} stats"), time.time()),
            )

    def generations(self) -> list[dict]:
        """``[{generation, population: [hashes], stats: {...}, created_at}]`` by generation."""
        rows = self._connection().execute(
            "SELECT generation, population, stats, created_at FROM generations ORDER BY generation"
        )
        return [
            {"generation": g, "population": _loads(pop), "stats": _loads(stats), "created_at": created}
            for g, pop, stats, created in rows
        ]

    def save_checkpoint(self, state: dict) -> None:
        """Replace the strategy's checkpoint in one transaction: a crash leaves the old or the new one."""
        state_json = _dumps(state, "checkpoint state")
        with self._transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO checkpoint (id, state, saved_at) VALUES (1, ?, ?)", (state_json, time.time())
            )

    def load_checkpoint(self) -> dict | None:
        """The last saved checkpoint state, or None."""
        row = self._connection().execute("SELECT state FROM checkpoint WHERE id = 1").fetchone()
        return None if row is None else _loads(row[0])


def _unwritable(path: Path) -> bool:
    """True when SQLite cannot create the ``-shm``/``-wal`` files next to ``path``."""
    return not os.access(path.parent, os.W_OK) or not os.access(path, os.W_OK)


def _damaged(path: Path, detail: str) -> DamagedStoreError:
    return DamagedStoreError(
        f"results file {path} is damaged ({detail}). Nothing was started. Fix: restore it from a copy made "
        f"with `rosearch snapshot`, or salvage it with `sqlite3 {path} .recover | sqlite3 recovered.sqlite`, "
        "or start a new run.name"
    )


def snapshot(source: str | Path, destination: str | Path) -> Path:
    """Copy a results file, live or not, into one self-contained file with SQLite's backup API.

    A plain ``cp`` of a running search can tear a page in half or miss the ``-wal`` file; the
    backup API copies a consistent state page by page while the writer goes on.
    """
    destination = Path(destination)
    if destination.exists():
        raise ResultStoreError(f"{destination} already exists; choose a new file name for the snapshot")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with ResultStore(source, read_only=True) as store:
        target = sqlite3.connect(str(destination), isolation_level=None)
        try:
            store._connection().backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one file: no -wal beside the copy
        except BaseException:
            target.close()
            destination.unlink(missing_ok=True)  # no half-written snapshot left to be mistaken for a good one
            raise
        target.close()
    with ResultStore(destination, read_only=True):
        pass  # the copy opens and passes the integrity check
    return destination


def _record_from_row(row: Sequence[Any]) -> CandidateRecord:
    values = dict(zip(_CANDIDATE_FIELDS, row))
    objectives = _loads(values["objectives"])
    return CandidateRecord(
        genome_hash=values["genome_hash"],
        genome_json=values["genome_json"],
        generation=values["generation"],
        parents=tuple(_loads(values["parents"])),
        status=values["status"],
        metrics=_loads(values["metrics"]),
        fitness=values["fitness"],
        objectives=None if objectives is None else tuple(objectives),
        error=values["error"],
        attempts=values["attempts"],
        seconds=values["seconds"],
        worker=values["worker"],
        finished_at=values["finished_at"],
    )


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value
