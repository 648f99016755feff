"""One progress bar per long phase (teacher fine-tuning, teacher outputs, the search), on a terminal only.

Redirected output (a log file, a scheduler's capture) gets no bar and no ANSI code: the phases'
log lines say the same there. ``NO_COLOR`` is honoured by rich's console. Bars are transient: they
vanish when their phase ends, and log records print above them (rosearch's console handler
writes through the same rich console, see :func:`rosearch.runtime.logs.setup_logging`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def terminal_progress(**kwargs) -> Progress:
    """A rich Progress on rosearch's console, disabled unless that is a terminal."""
    console = get_console()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal, **kwargs)


@contextmanager
def phase_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A bar for one phase; yields ``advance(n)``."""
    bars = terminal_progress()
    task = bars.add_task(description, total=total)
    with bars:
        yield lambda n=1: bars.advance(task, n)
