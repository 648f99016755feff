"""What a search run keeps (one SQLite file per run, the kept weights of its candidates) and how its records rank.

The search writes here; the analysis (:mod:`rosearch.results`) and the application (export) read."""

from rosearch.records.store import (
    CandidateRecord,
    ConfigMismatchError,
    ResultStore,
    ResultStoreError,
    RunExistsError,
    SchemaVersionError,
)

__all__ = [
    "CandidateRecord",
    "ConfigMismatchError",
    "ResultStore",
    "ResultStoreError",
    "RunExistsError",
    "SchemaVersionError",
]
