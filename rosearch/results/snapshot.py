"""``rosearch snapshot RUN OUT``: a consistent one-file copy of a run's results, live or not."""

from __future__ import annotations

import argparse
import logging

from rosearch.runtime.logs import setup_logging
from rosearch.results.stats import results_path
from rosearch.records.store import snapshot

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    """Copy the results with SQLite's backup API (safe while a search writes to them)."""

    setup_logging("INFO")
    path = snapshot(results_path(args.run_dir), args.out)
    logger.info("snapshot of %s written to %s (analyse it with `rosearch stats %s`)", args.run_dir, path, path)
    return 0
