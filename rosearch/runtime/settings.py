"""Process-level settings a command applies once at start: logging, threads, device, seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from rosearch.config import RunConfig
from rosearch.runtime.logs import setup_logging


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
