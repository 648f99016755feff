"""Logging of a command-line run (:func:`setup_logging`, standard library + rich only) and the library
messages that read like failures on a normal run but are not, routed to DEBUG.

Each entry names the logger, the exact start of the message and why it is harmless here; only
those records are re-labelled DEBUG (so ``--verbose`` / ``run.log_level: DEBUG`` shows them, and
every other warning or error of the same library still shows at its own level):

- Ray's "Token authentication is enabled for this Ray cluster": local Ray's default since
  Ray 2.5x, said at every ``ray.init``; nothing for the user to do.
- TextAttack's "Unknown if model ... compatible with goal function": TextAttack only knows its
  own model zoo; rosearch's wrappers are classifiers its goal functions fit by construction.
- TextAttack's "Updating TextAttack package dependencies" / "Downloading NLTK required
  packages" on its first import: offline nothing is downloaded (see nltk below).
- torch's ONNX exporter's "torchvision is not installed. Skipping torchvision::nms" (four
  lines per export): torchvision's detection ops are not used by any text classifier.
- transformers' "Some weights of ... were not initialized ... You should probably TRAIN this
  model": said when rosearch puts a new classification head on a backbone, exactly in order to
  train it (``rosearch`` logs that itself, in its own words).

Re-labelled records still reach the run's log file (``<run>/rosearch.log``, :func:`attach_run_log`),
and so do the workers' lines (:func:`log_worker_lines`): the console keeps the lines about this run.

``nltk.download`` prints straight to stderr (no logger). TextAttack calls it on its first import
(post-install) and in ``WordSwapWordNet()`` (PWWS); offline, each prints "Error loading ...:
refusing to connect" although rosearch provisions the NLTK data it needs itself and names any
missing resource in its own error. :func:`route_nltk_downloads` sends that output to the
``nltk.downloader`` logger at DEBUG instead; the calls and their return values are unchanged.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_LEVEL_ENV = "ROSEARCH_LOG_LEVEL"  # overrides every command's log level (DEBUG: `--verbose`)

_FILTER_NAME = "rosearch.runtime.logs"


@dataclass(frozen=True)
class KnownMessage:
    """A library message that is noise in a normal rosearch run."""

    logger: str
    starts_with: str


KNOWN_MESSAGES: tuple[KnownMessage, ...] = (
    KnownMessage("ray._private.authentication.authentication_token_setup",
                 "Token authentication is enabled for this Ray cluster"),
    KnownMessage("textattack.shared.utils.install", "Unknown if model"),  # TextAttack has one logger
    KnownMessage("textattack.shared.utils.install", "Goal function "),  # "... compatible with model ..." (HF models)
    KnownMessage("torch.onnx._internal.exporter._registration", "torchvision is not installed"),
    KnownMessage("textattack.shared.utils.install", "Updating TextAttack package dependencies"),
    KnownMessage("textattack.shared.utils.install", "Downloading NLTK required packages"),
    KnownMessage("transformers.modeling_utils", "Some weights of"),
)

RUN_LOG_HANDLER = "rosearch.run_log"  # the file handler of a search's log (<run>/rosearch.log)
WORKER_LOGGER = "rosearch.worker"  # lines a worker process printed, forwarded by the driver
_CONSOLE_FILTER = "rosearch.console"
_WORKER_LINE = re.compile(r"^(?:\d\d:\d\d:\d\d )?([DIWEC]) (\S+?)(?: \[attack worker \d+\])?: (.*)$")
_LEVELS = {"D": logging.DEBUG, "I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "C": logging.CRITICAL}


class _ToDebug(logging.Filter):
    """Re-labels the records of one logger that start with ``prefix`` as DEBUG; they pass only
    when the root logger (rosearch's level) shows DEBUG."""

    def __init__(self, prefix: str) -> None:
        super().__init__(_FILTER_NAME)
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not str(record.msg).startswith(self.prefix):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        to_run_log(record)  # kept in the run's log file, off the console (a library's own handler included)
        return False


def _run_log_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if h.get_name() == RUN_LOG_HANDLER]



def to_run_log(record: logging.LogRecord) -> None:
    """Write ``record`` to the run's log file only (when a search has one open)."""
    for handler in _run_log_handlers():
        handler.handle(record)


def attach_run_log(path: Path) -> logging.Handler:
    """Send every record of this process (library hints and workers' lines too) to ``path`` as well;
    the console keeps its own level and filters. Returns the handler, for :func:`detach_run_log`."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.set_name(RUN_LOG_HANDLER)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name in ("", *_OWN_HANDLER_LIBRARIES):
        logging.getLogger(name).addHandler(handler)
    return handler


# libraries whose root logger prints through its own handler and does not propagate to the root logger
_OWN_HANDLER_LIBRARIES = ("transformers",)


def detach_run_log(handler: logging.Handler) -> None:
    for name in ("", *_OWN_HANDLER_LIBRARIES):
        logging.getLogger(name).removeHandler(handler)
    handler.close()


class _ConsoleFilter(logging.Filter):
    """What the console leaves to the run's log file: workers' lines below WARNING (their per-example
    progress, their own candidate lines: the driver says one line per finished candidate), unless
    ``--verbose``."""

    def __init__(self) -> None:
        super().__init__(_CONSOLE_FILTER)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == WORKER_LOGGER and record.levelno < logging.WARNING:
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def log_worker_lines(pid: Any, lines: list[str], where: str = "") -> None:
    """Lines a worker printed, as records of :data:`WORKER_LOGGER` at the level its log line carries
    (its own format: ``HH:MM:SS L logger: message``); other output (a traceback, a library's print) is INFO."""
    log = logging.getLogger(WORKER_LOGGER)
    for line in lines:
        match = _WORKER_LINE.match(line)
        level = _LEVELS[match.group(1)] if match else logging.INFO
        text = f"{match.group(2)}: {match.group(3)}" if match else line
        log.log(level, "[worker %s%s] %s", pid, where, text)


def quiet_known_messages() -> None:
    """Attach the DEBUG routing of :data:`KNOWN_MESSAGES` to their loggers (idempotent)."""
    for known in KNOWN_MESSAGES:
        target = logging.getLogger(known.logger)
        if not any(getattr(f, "name", None) == _FILTER_NAME and getattr(f, "prefix", None) == known.starts_with
                   for f in target.filters):
            target.addFilter(_ToDebug(known.starts_with))


class _DebugWriter:
    """A file-like ``print`` target that logs each line at DEBUG."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.logger.debug("%s", line)
        return len(text)

    def flush(self) -> None:
        pass


def route_nltk_downloads() -> None:
    """Make ``nltk.download`` report to the ``nltk.downloader`` logger at DEBUG instead of stderr
    (idempotent; see the module docstring for why)."""
    # lazy: nltk only before TextAttack or WordNet is used; the CLI parser imports this module
    import nltk

    if getattr(nltk.download, "_rosearch_quiet", False):
        return
    original = nltk.download

    @functools.wraps(original)
    def download(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("print_error_to", _DebugWriter(logging.getLogger("nltk.downloader")))
        return original(*args, **kwargs)

    download._rosearch_quiet = True  # type: ignore[attr-defined]
    nltk.download = download


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger for a command-line run (libraries never call this).

    On a terminal, records go through rich's console so that they print above live progress
    bars; redirected to a file, they are plain timestamped lines.
    """
    from rich import get_console  # lazy: the CLI parser imports this module for LOG_LEVEL_ENV alone
    from rich.console import Console
    from rich.logging import RichHandler

    if Console(stderr=True).is_terminal:
        handler: logging.Handler = RichHandler(console=get_console(), show_path=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
    override = os.environ.get(LOG_LEVEL_ENV)  # `--verbose` sets it (and child processes inherit it)
    if override:
        if override.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"${LOG_LEVEL_ENV}={override!r} is not a log level (fix: DEBUG, INFO, WARNING or ERROR, or unset it)")
        level = override.upper()
    handler.setLevel(getattr(logging, level))  # the run's log file may take more (records re-labelled DEBUG)
    handler.addFilter(_ConsoleFilter())
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
    # not transformers.modeling_utils: a level set on it makes from_pretrained run its tensor-parallel
    # plan check, which lists every weight of a BERT as "not sharded" on each load
    for noisy in ("urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))
    quiet_known_messages()
