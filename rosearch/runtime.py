"""Process-level settings a command applies once at start: logging, threads, device, seeds."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from rosearch.config import RunConfig
from rosearch.quiet import LOG_LEVEL_ENV, quiet_known_messages



def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger for a command-line run (libraries never call this).

    On a terminal, records go through rich's console so that they print above live progress
    bars; redirected to a file, they are plain timestamped lines.
    """
    from rich.console import Console
    from rich.logging import RichHandler
    from rich import get_console

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
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
    # not transformers.modeling_utils: a level set on it makes from_pretrained run its tensor-parallel
    # plan check, which lists every weight of a BERT as "not sharded" on each load
    for noisy in ("urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))
    quiet_known_messages()


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when available; an explicit CUDA device that is missing is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device={spec!r} but no CUDA device is available (fix: set run.device=auto or cpu)")
    return device


def seed_everything(seed: int) -> None:
    """Seed the libraries that keep global generators (for code outside our control)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def apply_run_settings(run: RunConfig) -> torch.device:
    """Apply logging, thread count and seeds for ``run``; return the device to use."""
    setup_logging(run.log_level)
    if run.num_threads is not None:
        torch.set_num_threads(run.num_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seed_everything(run.seed)
    return resolve_device(run.device)
