"""Helpers shared by the benchmark scripts: what ran them, timers, peak memory, result tables.

A benchmark figure means little without the machine, library versions and thread count that
produced it, so every script prints :func:`describe_machine` next to its numbers. Timers and
memory probes here are device-aware: on CUDA, segment times come from CUDA events (no sync per
segment, which would itself slow the loop being measured) and peak memory from the allocator.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Sequence

import torch
from rich.console import Console
from rich.table import Table

logger = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MIB = 1 << 20


class BenchError(ValueError):
    """A benchmark cannot run as asked (missing teacher, impossible settings); the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------


def cpu_model_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else what ``platform`` knows.

    Virtual machines often report a bare "AMD EPYC", so the CPU family and model numbers
    (which tell the generation apart) are appended when present.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        name = fields.get("model name")
        if name:
            ids = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model")) if fields.get(key)]
            return f"{name} ({', '.join(ids)})" if ids else name
    return platform.processor() or platform.machine() or "unknown"


def total_memory_gib() -> float | None:
    """Physical memory in GiB from /proc/meminfo, or None where that file does not exist."""
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text(encoding="utf-8").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1 << 20)  # kB -> GiB
    return None


@dataclass(frozen=True)
class MachineInfo:
    """What a benchmark ran on; printed with every result so figures can be compared."""

    cpu_model: str
    logical_cpus: int
    usable_cpus: int  # CPUs this process may run on (affinity / container limits)
    memory_gib: float | None
    device: str  # "cpu", or the CUDA device's name
    torch_threads: int
    python: str
    torch: str
    transformers: str
    platform: str

    def rows(self) -> list[tuple[str, str]]:
        memory = "unknown" if self.memory_gib is None else f"{self.memory_gib:.1f} GiB"
        return [
            ("CPU", f"{self.cpu_model}; {self.usable_cpus} usable of {self.logical_cpus} logical CPUs"),
            ("memory", memory),
            ("device", self.device),
            ("torch threads", str(self.torch_threads)),
            ("python / torch / transformers", f"{self.python} / {self.torch} / {self.transformers}"),
            ("platform", self.platform),
        ]


def describe_machine(device: torch.device) -> MachineInfo:
    """Describe this process's machine, its compute device and torch's current thread count."""
    import transformers

    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return MachineInfo(
        cpu_model=cpu_model_name(),
        logical_cpus=logical,
        usable_cpus=usable,
        memory_gib=total_memory_gib(),
        device=name,
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        platform=f"{platform.system()} {platform.release()} ({sys.platform})",
    )


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a wall-clock reading covers it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SegmentTimer:
    """Wall time per named segment of a loop body, summed over iterations.

    Call :meth:`start` at the top of an iteration and :meth:`mark` at the end of each segment
    (``mark("teacher_forward")`` closes the segment that began at the previous start/mark).
    On CPU, segments are ``time.perf_counter`` differences. On CUDA they are CUDA-event
    differences on the current stream, read back once in :meth:`totals`, so timing adds no host
    sync to the loop (CPU-only segments such as data loading then count the GPU time that
    elapsed while they ran, which is what the GPU spent on them).
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._device = device
        self._totals: dict[str, float] = {}
        self._pending: list[tuple[str, object, object]] = []  # CUDA: (name, start event, end event)
        self._last: object | None = None

    def _now(self) -> object:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        self._last = self._now()

    def mark(self, name: str) -> None:
        if self._last is None:
            raise RuntimeError("SegmentTimer.mark() called before start()")
        now = self._now()
        if self._cuda:
            self._pending.append((name, self._last, now))
        else:
            self._totals[name] = self._totals.get(name, 0.0) + (now - self._last)  # type: ignore[operator]
        self._last = now

    def totals(self) -> dict[str, float]:
        """Seconds per segment name, in first-seen order."""
        if self._pending:
            synchronize(self._device)
            for name, begin, end in self._pending:
                self._totals[name] = self._totals.get(name, 0.0) + begin.elapsed_time(end) / 1000.0  # type: ignore[attr-defined]
            self._pending.clear()
        return dict(self._totals)


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc), or its peak so far elsewhere."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        return int(statm.read_text().split()[1]) * _PAGE_SIZE
    import resource  # POSIX fallback: ru_maxrss is the peak, in kB on Linux and bytes on macOS

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class PeakMemory:
    """Peak process RSS (and peak CUDA allocation) while a ``with`` block runs.

    A daemon thread samples RSS every ``interval_s``; torch releases the GIL inside its
    kernels, so sampling continues while a model runs. Short-lived peaks between two samples
    can be missed; with the default 10 ms interval that only matters for sub-10 ms spikes.
    """

    device: torch.device
    interval_s: float = 0.01
    start_mib: float = 0.0
    peak_mib: float = 0.0
    peak_cuda_mib: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def growth_mib(self) -> float:
        """How far RSS rose above its level when the block started."""
        return max(0.0, self.peak_mib - self.start_mib)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mib = max(self.peak_mib, rss_bytes() / _MIB)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start_mib = self.peak_mib = rss_bytes() / _MIB
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mib = max(self.peak_mib, rss_bytes() / _MIB)
        if self.device.type == "cuda":
            self.peak_cuda_mib = torch.cuda.max_memory_allocated(self.device) / _MIB


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def console() -> Console:
    """Stdout console; wide when redirected to a file so that tables are not truncated."""
    out = Console()
    return out if out.is_terminal else Console(width=200)


def print_table(
    out: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    caption: str | None = None,
    align: Literal["left", "right"] = "right",
) -> None:
    """One result table on stdout: the first column left-aligned, the others by ``align``
    (right for numbers, left for key/value descriptions)."""
    table = Table(
        title=title, caption=caption, title_justify="left", caption_justify="left", show_header=any(columns)
    )
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else align, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    out.print(table)


def print_machine(out: Console, machine: MachineInfo) -> None:
    print_table(out, "machine", ("", ""), machine.rows(), align="left")


def write_figures(path: Path | None, figures: dict) -> None:
    """Save a benchmark's figures as JSON when ``--json PATH`` was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    logging.getLogger(__name__).info("figures written to %s", path)
