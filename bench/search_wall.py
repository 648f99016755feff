"""Search wall time and peak memory: one smoke search on local Ray, split by stage.

The search is ``configs/sst2_offline.yaml`` shrunk to a smoke run: population 8, 3 generations,
2,000 distillation examples, ``distill.max_steps`` 125 (two epochs of them), robustness on
(deepwordbug against the teacher on 50 dev examples for the proxy set, the full attack on the
best new candidate of each generation and on the final best), local Ray with one CPU per
candidate. The fine-tuned teacher is reused from the cache; everything derived from it (tokenised
data, teacher outputs, the teacher's attack and proxy set, NLTK data) is computed in a fresh
cache directory, so the run measures a first search with an existing teacher (``--warm`` reuses
the normal cache instead).

Where the time goes:

* preparation runs in the driver before any candidate: ``SearchInputs.timings`` (teacher, data,
  teacher outputs, robustness) plus the untimed rest (teacher load, embedding PCA, run files);
  it ends at the driver's ``search: objectives`` log record;
* every worker task runs :func:`timed_candidate_task`, which runs
  :func:`rosearch.search.run_candidate_task` itself and records the seconds of its latency and
  proxy steps and the task's start and end time and process, so the busy time of every worker is known;
* over the evolution phase E (wall after preparation) the worker slots offer c * E seconds,
  c = CPUs / ``workers.num_cpus_per_candidate``. They split exactly into busy time (tasks),
  c * N where N is the wall time during which no task ran at all (Ray start, worker processes
  starting and loading the shared inputs, task dispatch, the driver's selection, SQLite writes
  and checkpoints: the Ray + bookkeeping overhead), and the rest, when some but not all slots
  worked (a generation's last candidate running alone, the one-candidate full attacks).
  Divided by c, each part is its share of the wall time, and preparation + the parts = total.

Peak memory is the largest sum, over the driver and all its descendants (Ray's GCS, raylet and
worker processes), of RSS and of PSS (RSS with shared pages divided among their users, which
does not count the shared object store once per worker), sampled every ``--interval`` seconds.
Run from the repository root::

    .venv/bin/python bench/search_wall.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import psutil
import torch

from common import BenchError, MachineInfo, console, describe_machine, print_machine, print_table, write_figures
from rosearch.config import Config, ConfigError, load_config
from rosearch.prepare.inputs import TEACHER_INFO, teacher_output_dir
from rosearch.records.store import CandidateRecord, ResultStore
from rosearch.runtime.settings import apply_run_settings
from rosearch import search as rosearch_search
from rosearch.files.rundir import RESULTS_FILE
from rosearch.search import SearchSummary, run_search
from rosearch.prepare.search_inputs import SearchInputs
from rosearch.workers import CandidateTask, TaskResult

logger = logging.getLogger("bench.search_wall")

DEFAULT_CONFIG = Path("configs/sst2_offline.yaml")
SMOKE_OVERRIDES: tuple[str, ...] = (
    "evolution.population_size=8",
    "evolution.generations=3",
    "data.train_limit=2000",
    "distill.max_steps=125",  # two epochs of the 2,000 examples at batch 32
    "attack.enabled=true",
    "attack.recipe=deepwordbug",
    "attack.num_examples=50",
    "attack.top_k=1",
    "workers.backend=ray",
    "workers.num_cpus_per_candidate=1",
    "run.device=cpu",
)
PREPARATION_DONE = "search: objectives"  # rosearch.search logs this right after prepare_inputs
_MIB = 1 << 20


@dataclass(frozen=True)
class Settings:
    config_path: Path
    overrides: tuple[str, ...]
    warm: bool
    keep: bool
    interval: float
    json_path: Path | None


# --------------------------------------------------------------------------------------------
# Worker side: the search's own task function, with timers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _timed(name: str, seconds: dict[str, float]) -> Iterator[None]:
    """Inside the block, every call of ``rosearch.search.<name>`` adds its wall time to ``seconds[name]``."""
    original = getattr(rosearch_search, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        mark = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - mark

    setattr(rosearch_search, name, timed)
    try:
        yield
    finally:
        setattr(rosearch_search, name, original)


def timed_candidate_task(task: CandidateTask, shared: tuple[SearchInputs, Config]) -> TaskResult:
    """:func:`rosearch.search.run_candidate_task` itself, plus ``bench_*`` timing metrics.

    Train tasks add ``bench_start``/``bench_end`` (unix time), ``bench_pid``,
    ``bench_latency_seconds`` and ``bench_proxy_seconds`` (the calls of ``measure_latency`` and
    ``proxy_metrics`` it makes, timed in this worker process); attack tasks, whose metrics are
    merged into the candidate's, add the start, end and process under ``bench_attack_*``.
    """
    start = time.time()
    seconds: dict[str, float] = {}
    with _timed("measure_latency", seconds), _timed("proxy_metrics", seconds):
        result = rosearch_search.run_candidate_task(task, shared)
    if task.kind == "attack":
        return TaskResult(dict(result.metrics) | {"bench_attack_start": start, "bench_attack_end": time.time(),
                                                  "bench_attack_pid": os.getpid()}, artifacts=result.artifacts)
    return TaskResult(dict(result.metrics) | {
        "bench_start": start, "bench_end": time.time(), "bench_pid": os.getpid(),
        "bench_latency_seconds": seconds.get("measure_latency", 0.0),
        "bench_proxy_seconds": seconds.get("proxy_metrics", 0.0),
    }, artifacts=result.artifacts)


# --------------------------------------------------------------------------------------------
# Driver side: memory, CPU and log timeline
# --------------------------------------------------------------------------------------------


def _pss_bytes(proc: psutil.Process) -> int | None:
    """PSS from /proc/<pid>/smaps_rollup (cheap, Linux >= 4.14); None where unavailable."""
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class TreeMonitor:
    """Samples the driver's process tree (Ray's processes included) in a daemon thread: peak
    summed RSS and PSS, the most processes, CPU seconds per process, and the load average."""

    interval_s: float
    peak_rss: int = 0
    peak_pss: int = 0
    pss_available: bool = True
    max_processes: int = 0
    cpu_seconds: dict[int, float] = field(default_factory=dict)  # pid -> user + system, last seen
    loads: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _sample(self) -> None:
        root = psutil.Process()
        procs = [root]
        try:
            procs += root.children(recursive=True)
        except psutil.Error:
            pass
        rss = pss = 0
        for proc in procs:
            try:
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                self.cpu_seconds[proc.pid] = times.user + times.system
            except psutil.Error:
                continue
            value = _pss_bytes(proc)
            if value is not None:
                pss += value
            elif proc is root:  # no smaps_rollup on this system (a child that just exited is only skipped)
                self.pss_available = False
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.max_processes = max(self.max_processes, len(procs))
        self.loads.append(os.getloadavg()[0])

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "TreeMonitor":
        self._sample()
        self._thread = threading.Thread(target=self._run, name="tree-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def machine_busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (/proc/stat, all CPUs)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Timeline(logging.Handler):
    """Keeps (unix time, logger, message) of every log record, to find stage boundaries."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[tuple[float, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.name, record.getMessage()))

    def first(self, logger_name: str, prefix: str) -> float | None:
        return next((t for t, name, msg in self.records if name == logger_name and msg.startswith(prefix)), None)


# --------------------------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    kind: str  # "train" | "attack"
    start: float
    end: float
    pid: int


def union_seconds(intervals: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``intervals`` clipped to [lo, hi]."""
    total, cursor = 0.0, lo
    for start, end in sorted(intervals):
        start, end = max(start, cursor), min(end, hi)
        if end > start:
            total += end - start
            cursor = end
    return total


@dataclass(frozen=True)
class Accounting:
    """Wall time split into preparation and the evolution phase's slot time (see the module doc)."""

    wall: float
    preparation: float
    preparation_parts: dict[str, float]  # SearchInputs.timings + "other"
    slots: int
    busy_parts: dict[str, float]  # summed over workers
    idle_no_task: float  # N: wall seconds with no task running
    idle_no_task_parts: dict[str, float]  # N before the first task, between tasks, after the last one
    idle_partial: float  # slot-seconds with some, not all, slots busy

    @property
    def evolution(self) -> float:
        return self.wall - self.preparation

    @property
    def busy(self) -> float:
        return sum(self.busy_parts.values())

    @property
    def overhead_share(self) -> float:
        return self.idle_no_task / self.wall


def account(records: Sequence[CandidateRecord], summary: SearchSummary, *, start: float, end: float,
            preparation_end: float, slots: int) -> tuple[Accounting, list[Task]]:
    """Split the run as :class:`Accounting` says, from the stored candidates' ``bench_*`` metrics."""
    tasks: list[Task] = []
    busy = {"KD training (train_seconds)": 0.0, "dev evaluation (eval_seconds)": 0.0, "latency measurement": 0.0,
            "proxy accuracy": 0.0, "full attacks (attack_seconds)": 0.0,
            "other worker work (student build, weights to bytes, attack-task model load)": 0.0,
            "failed candidates": 0.0}
    for r in records:
        m = r.metrics
        if r.status != "ok" or "bench_start" not in m:
            busy["failed candidates"] += r.seconds
            continue
        tasks.append(Task("train", m["bench_start"], m["bench_end"], int(m["bench_pid"])))
        parts = (m["train_seconds"], m["eval_seconds"], m["bench_latency_seconds"], m["bench_proxy_seconds"])
        for key, value in zip(list(busy)[:4], parts):
            busy[key] += value
        busy["other worker work (student build, weights to bytes, attack-task model load)"] += \
            (m["bench_end"] - m["bench_start"]) - sum(parts)
        if "bench_attack_start" in m:
            tasks.append(Task("attack", m["bench_attack_start"], m["bench_attack_end"], int(m["bench_attack_pid"])))
            busy["full attacks (attack_seconds)"] += m["attack_seconds"]
            busy["other worker work (student build, weights to bytes, attack-task model load)"] += \
                (m["bench_attack_end"] - m["bench_attack_start"]) - m["attack_seconds"]
    evolution = end - preparation_end
    covered = union_seconds([(t.start, t.end) for t in tasks], preparation_end, end)
    idle_no_task = evolution - covered
    first = min((t.start for t in tasks), default=end)
    last = max((t.end for t in tasks), default=end)
    before, after = max(0.0, first - preparation_end), max(0.0, end - last)
    no_task_parts = {
        "before the first task (Ray start, worker processes start and load the shared inputs)": before,
        "between tasks (dispatch, selection, SQLite writes, checkpoints, worker imports)":
            max(0.0, idle_no_task - before - after),
        "after the last task (summary, Ray shutdown)": after,
    }
    task_seconds = sum(min(t.end, end) - max(t.start, preparation_end) for t in tasks)
    failed = busy["failed candidates"]
    idle_partial = max(0.0, slots * evolution - task_seconds - failed - slots * idle_no_task)
    prep = dict(summary.timings)
    prep["other (teacher load, embedding PCA, run files)"] = max(0.0, (preparation_end - start) - sum(prep.values()))
    return Accounting(wall=end - start, preparation=preparation_end - start, preparation_parts=prep, slots=slots,
                      busy_parts=busy, idle_no_task=idle_no_task, idle_no_task_parts=no_task_parts,
                      idle_partial=idle_partial), tasks


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="bench/search_wall.py",
        description="Wall time, stage split and peak memory of a smoke search on local Ray.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="base config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value after the smoke settings, e.g. --set distill.max_steps=250")
    parser.add_argument("--warm", action="store_true",
                        help="use the config's cache dir (cached teacher outputs and proxy set are reused)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (printed at the end)")
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling period, s (default: %(default)s)")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write all figures to this file")
    args = parser.parse_args(argv)
    if not args.interval > 0:
        raise BenchError(f"--interval must be > 0 seconds, got {args.interval}")
    return Settings(config_path=args.config, overrides=tuple(args.overrides), warm=args.warm, keep=args.keep,
                    interval=args.interval, json_path=args.json_path)


def bench_config(settings: Settings, workdir: Path) -> Config:
    """The smoke search's config: run files in ``workdir``, a fresh cache there unless ``--warm``."""
    base = load_config(settings.config_path, SMOKE_OVERRIDES + settings.overrides)
    teacher_dir = teacher_output_dir(base)
    if not base.teacher.finetuned and not (teacher_dir / TEACHER_INFO).is_file():
        raise BenchError(
            f"no fine-tuned teacher at {teacher_dir} (fix: build it once with "
            f"`rosearch teacher --config {settings.config_path}`, about 5 minutes on 2 CPUs)"
        )
    layout = [f"run.output_dir={workdir}", "run.name=bench-search-wall"]
    if not settings.warm:
        layout += [f"run.cache_dir={workdir / 'cache'}", f"teacher.output_dir={teacher_dir}"]
    return load_config(settings.config_path, SMOKE_OVERRIDES + tuple(layout) + settings.overrides)


@dataclass(frozen=True)
class BenchResult:
    machine: MachineInfo
    command: str
    setup: dict[str, Any]
    accounting: Accounting
    summary: dict[str, Any]
    memory: dict[str, Any]
    cpu: dict[str, float]
    tasks: tuple[Task, ...]

    def to_dict(self) -> dict[str, Any]:
        acc = self.accounting
        return {
            "machine": dataclasses.asdict(self.machine), "command": self.command, "setup": self.setup,
            "wall_seconds": acc.wall, "preparation_seconds": acc.preparation, "preparation": acc.preparation_parts,
            "evolution_seconds": acc.evolution, "slots": acc.slots, "busy_seconds": acc.busy_parts,
            "idle_no_task_seconds": acc.idle_no_task, "idle_no_task_parts": acc.idle_no_task_parts,
            "idle_partial_slot_seconds": acc.idle_partial,
            "overhead_share": acc.overhead_share, "summary": self.summary, "memory": self.memory, "cpu": self.cpu,
            "tasks": [dataclasses.asdict(t) for t in self.tasks],
        }


def run_benchmark(settings: Settings, command: str, workdir: Path) -> BenchResult:
    config = bench_config(settings, workdir)
    apply_run_settings(config.run)
    timeline = Timeline()
    logging.getLogger().addHandler(timeline)
    slots = max(1, int((os.cpu_count() or 1) // config.workers.num_cpus_per_candidate))
    load_before = os.getloadavg()
    machine_cpu_before = machine_busy_cpu_seconds()
    try:
        with TreeMonitor(settings.interval) as monitor:
            start = time.time()
            summary = run_search(config, task_fn=timed_candidate_task)
            end = time.time()
    finally:
        logging.getLogger().removeHandler(timeline)
    machine_cpu = machine_busy_cpu_seconds() - machine_cpu_before
    preparation_end = timeline.first("rosearch.search", PREPARATION_DONE)
    if preparation_end is None:
        raise BenchError(f"no {PREPARATION_DONE!r} log record from rosearch.search: cannot tell where preparation ended")
    with ResultStore(Path(summary.run_dir) / RESULTS_FILE, read_only=True) as store:
        records = store.candidates()
    accounting, tasks = account(records, summary, start=start, end=end, preparation_end=preparation_end, slots=slots)
    ours_cpu = sum(monitor.cpu_seconds.values())
    setup = {
        "config": str(settings.config_path), "overrides": list(SMOKE_OVERRIDES + settings.overrides),
        "cache": "warm (config's cache dir)" if settings.warm else "cold (fresh cache dir; fine-tuned teacher reused)",
        "population": config.evolution.population_size, "generations": config.evolution.generations,
        "train_examples": config.data.train_limit, "distill_steps": config.distill.max_steps,
        "attack": f"{config.attack.recipe} on {config.attack.num_examples} examples, full attack top_k="
                  f"{config.attack.top_k}", "slots": slots, "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
    }
    memory = {"peak_rss_mib": monitor.peak_rss / _MIB, "peak_pss_mib": monitor.peak_pss / _MIB if monitor.pss_available
              else None, "max_processes": monitor.max_processes}
    cpu = {"machine_busy_cpu_seconds": machine_cpu, "search_cpu_seconds": ours_cpu,
           "other_jobs_cpu_seconds": max(0.0, machine_cpu - ours_cpu),
           "mean_load_1min": sum(monitor.loads) / len(monitor.loads) if monitor.loads else float("nan")}
    summary_dict = {"evaluated": summary.evaluated, "failed": summary.failed, "reused": summary.reused,
                    "attacked": summary.attacked, "run_dir": summary.run_dir,
                    "best_dev_accuracy": summary.top[0].get("dev_accuracy") if summary.top else None,
                    "teacher_dev_accuracy": summary.teacher_dev_accuracy,
                    "worker_processes": len({t.pid for t in tasks})}
    return BenchResult(machine=describe_machine(torch.device("cpu")), command=command, setup=setup,
                       accounting=accounting, summary=summary_dict, memory=memory, cpu=cpu, tasks=tuple(tasks))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(result: BenchResult) -> None:
    out = console()
    print_machine(out, result.machine)
    s, acc, cpu, summ = result.setup, result.accounting, result.cpu, result.summary
    print_table(out, "setup", ("", ""), [
        ("command", result.command),
        ("search", f"population {s['population']}, {s['generations']} generations, {s['train_examples']} training "
                   f"examples, {s['distill_steps']} KD steps, {s['attack']}; local Ray, {s['slots']} candidate slots"),
        ("cache", s["cache"]),
        ("candidates", f"{summ['evaluated']} trained, {summ['reused']} reused, {summ['failed']} failed, "
                       f"{summ['attacked']} full attacks, on {summ['worker_processes']} worker processes"),
        ("best dev accuracy", f"{summ['best_dev_accuracy']:.4f} (teacher {summ['teacher_dev_accuracy']:.4f})"
         if summ["best_dev_accuracy"] is not None else "none"),
        ("load average (1 min)", f"{s['load_before'][0]:.2f} before, {cpu['mean_load_1min']:.2f} mean during, "
                                 f"{s['load_after'][0]:.2f} after"),
        ("CPU seconds", f"machine {cpu['machine_busy_cpu_seconds']:.0f}, this search {cpu['search_cpu_seconds']:.0f}, "
                        f"other jobs {cpu['other_jobs_cpu_seconds']:.0f}"),
    ], align="left")

    wall = acc.wall
    rows: list[tuple[str, str, str, str]] = []
    for name, sec in acc.preparation_parts.items():
        rows.append((f"preparation: {name}", f"{sec:.1f}", f"{sec:.1f}", f"{100 * sec / wall:.1f}%"))
    for name, sec in acc.busy_parts.items():
        if sec > 0 or name != "failed candidates":
            rows.append((f"workers: {name}", f"{sec:.1f}", f"{sec / acc.slots:.1f}", f"{100 * sec / acc.slots / wall:.1f}%"))
    rows.append(("slots idle while others worked (generation tails, one-candidate attacks)", f"{acc.idle_partial:.1f}",
                 f"{acc.idle_partial / acc.slots:.1f}", f"{100 * acc.idle_partial / acc.slots / wall:.1f}%"))
    rows.append(("Ray + bookkeeping overhead (no task running)", f"{acc.idle_no_task * acc.slots:.1f}",
                 f"{acc.idle_no_task:.1f}", f"{100 * acc.overhead_share:.1f}%"))
    for name, sec in acc.idle_no_task_parts.items():
        rows.append((f"  of which {name}", f"{sec * acc.slots:.1f}", f"{sec:.1f}", f"{100 * sec / wall:.1f}%"))
    rows.append(("total", "", f"{wall:.1f}", "100.0%"))
    print_table(out, "where the wall time goes", ("stage", "seconds (summed over slots)", "wall-equivalent s", "share"),
                rows, caption=f"evolution phase E = {acc.evolution:.1f} s after {acc.preparation:.1f} s of preparation; "
                              f"{acc.slots} slots x E = busy {acc.busy:.1f} + partial idle {acc.idle_partial:.1f} + "
                              f"{acc.slots} x no-task {acc.idle_no_task:.1f} slot-seconds")
    m = result.memory
    pss = "unavailable" if m["peak_pss_mib"] is None else f"{m['peak_pss_mib']:.0f} MiB"
    print_table(out, "peak memory of the driver + Ray processes (summed over the process tree)", ("", ""), [
        ("peak RSS sum", f"{m['peak_rss_mib']:.0f} MiB"), ("peak PSS sum", pss),
        ("most processes at once", str(m["max_processes"])),
    ], align="left")
    print_table(out, "targets", ("target", "measured", "met"), [
        ("total under 10 minutes", f"{wall / 60:.1f} min", "yes" if wall < 600 else "no"),
        ("Ray + bookkeeping overhead under 5% of the total", f"{100 * acc.overhead_share:.1f}%",
         "yes" if acc.overhead_share < 0.05 else "no"),
    ])


def main(argv: Sequence[str] | None = None) -> int:
    command = " ".join([".venv/bin/python", "bench/search_wall.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = parse_args(argv)
    except BenchError as err:
        logging.basicConfig(level=logging.INFO)
        logger.error("%s", err)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="rosearch-bench-search-"))
    try:
        result = run_benchmark(settings, command, workdir)
    except (BenchError, ConfigError) as err:
        logging.basicConfig(level=logging.INFO)  # no-op once apply_run_settings configured logging
        logger.error("%s", err)
        return 2
    finally:
        if not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(result)
    if settings.keep:
        logger.info("run directory kept: %s", workdir)
    write_figures(settings.json_path, result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
