"""Durable results of a search run (one SQLite file per run) and their analysis."""

from rosearch.results.store import (
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
