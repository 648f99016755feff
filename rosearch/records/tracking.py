"""Experiment tracking (``run.report_to``): a search's config, its candidates and its best-so-far curve
in the tools ML teams already watch — MLflow, TensorBoard, Weights & Biases — with HF Trainer's spelling.

The trackers only watch: ``results.sqlite`` stays the record and decides everything. Each one is
offline by default (MLflow's file store under ``<run>/mlruns``, TensorBoard event files under
``<run>/tensorboard``, wandb in offline mode under the run unless ``WANDB_MODE`` says otherwise),
and one that fails is logged as a warning and dropped for the rest of the run, never a lost run.
The libraries are imported only when a tracker starts, so ``rosearch --help`` stays light.

What each gets: the run's config as parameters (``section.key``); per finished candidate one
record — MLflow a nested run named by its genome hash (params: genome summary, budget, worker,
status; metrics: every numeric metric), TensorBoard scalars ``candidate/<metric>`` and a text
``candidate/genome`` at the candidate's index, wandb one logged row — and the curve
``search/best_so_far`` (the first objective, best so far) at the same index; exported students as
artifacts (MLflow, wandb).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Protocol

from rosearch.choices import REPORT_TO_NAMES
from rosearch.errors import UserError

logger = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"  # the run ids of the trackers (resume and export log to the same run)
MLFLOW_DIR = "mlruns"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
EXPERIMENT = "rosearch"

_PACKAGES = {"mlflow": ("mlflow", "mlflow-skinny"), "tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


class TrackingError(UserError, ValueError):
    """A tracker named in ``run.report_to`` cannot be used (its package is not installed)."""


def check_trackers(names: tuple[str, ...] | list[str]) -> None:
    """Every tracker of ``run.report_to`` is installed: said before any work, not after an hour of search."""
    for name in names:
        if name not in _PACKAGES:
            raise TrackingError(f"run.report_to: unknown tracker {name!r} (known: {', '.join(REPORT_TO_NAMES)})")
        module, package = _PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise TrackingError(f"run.report_to lists {name}, but the {package!r} package is not installed "
                                f"(fix: pip install {package}, or drop {name} from run.report_to)")


def flat_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``section.key -> text`` (lists as JSON), what trackers take as parameters."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flat_params(value, f"{name}.")
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def numeric_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a candidate's metrics, nested ones (successive halving's rungs) as ``a.b``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= numeric_metrics(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def genome_summary(genome_json: str) -> dict[str, str]:
    """What a person reads of a genome: sizes, layers, the operations of each cell, defenses, training."""
    data = json.loads(genome_json)
    cells = data.get("cells", [])
    ops = [" ".join(cell.get("ops", [])[1:-1]) for cell in cells]
    return {"hidden_size": str(data.get("hidden_size")), "embedding_size": str(data.get("embedding_size")),
            "layers": str(len(cells)), "ops": " | ".join(ops), "defenses": ",".join(data.get("defenses", [])) or "none",
            "training": ",".join(data.get("training", [])) or "none"}


class Tracker(Protocol):
    """One tracking backend. Trackers are called by :class:`Trackers`, which turns their failures into warnings."""

    name: str

    def start(self, run_dir: Path, run_name: str, params: dict[str, str], state: dict[str, Any]) -> None: ...

    def candidate(self, step: int, record: Mapping[str, Any], best: float | None) -> None: ...

    def artifacts(self, path: Path, name: str) -> None: ...

    def close(self, status: str | None) -> None: ...


class MlflowTracker:
    """MLflow through its client (no global active run): a parent run for the search, a nested run per candidate."""

    name = "mlflow"

    def start(self, run_dir: Path, run_name: str, params: dict[str, str], state: dict[str, Any]) -> None:
        # lazy: MLflow only when run.report_to lists it (rosearch --help imports none of the trackers)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # MLflow 3 keeps its file store (offline, one folder per run: what a search wants) behind this opt-in;
        # its database store needs the full mlflow package
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=(run_dir / MLFLOW_DIR).resolve().as_uri())
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment is not None else self.client.create_experiment(EXPERIMENT)
        self.experiment_id = experiment_id
        run_id = state.get("mlflow_run_id")
        if run_id is not None:  # resume: the same run goes on
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        run = self.client.create_run(experiment_id, run_name=run_name, tags={"rosearch.run_dir": str(run_dir)})
        self.run_id = state["mlflow_run_id"] = run.info.run_id
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def candidate(self, step: int, record: Mapping[str, Any], best: float | None) -> None:
        from mlflow.entities import Metric, Param  # lazy: MLflow only when run.report_to lists it

        now = int(time.time() * 1000)
        child = self.client.create_run(
            self.experiment_id, run_name=record["genome_hash"][:12],
            tags={"mlflow.parentRunId": self.run_id, "rosearch.genome_hash": record["genome_hash"]},
        )
        params = record["summary"] | {"genome_hash": record["genome_hash"], "generation": str(record["generation"]),
                                      "status": record["status"], "worker": record["worker"],
                                      "budget": str(record["budget"]), "attempts": str(record["attempts"])}
        if record.get("error"):
            params["error"] = record["error"][:500]
        metrics = [Metric(k, v, now, 0) for k, v in record["metrics"].items()]
        metrics.append(Metric("seconds", float(record["seconds"]), now, 0))
        for start in range(0, max(len(metrics), 1), 1000):
            self.client.log_batch(child.info.run_id, metrics=metrics[start:start + 1000],
                                  params=[Param(k, v) for k, v in params.items()] if start == 0 else [])
        self.client.set_terminated(child.info.run_id, status="FINISHED" if record["status"] == "ok" else "FAILED")
        curve = [Metric(f"candidate/{k}", v, now, step) for k, v in record["metrics"].items()]
        if best is not None:
            curve.append(Metric("search/best_so_far", best, now, step))
        for start in range(0, len(curve), 1000):
            self.client.log_batch(self.run_id, metrics=curve[start:start + 1000])

    def artifacts(self, path: Path, name: str) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=name)

    def close(self, status: str | None) -> None:
        if status is not None:
            self.client.set_terminated(self.run_id, status=status)


class TensorBoardTracker:
    """TensorBoard event files: scalars per candidate and the best-so-far curve, the config and genomes as text."""

    name = "tensorboard"

    def start(self, run_dir: Path, run_name: str, params: dict[str, str], state: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # lazy: needs the tensorboard package, when listed

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        if not state.get("tensorboard_started"):
            table = "| field | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in params.items())
            self.writer.add_text("config", table, 0)
            state["tensorboard_started"] = True

    def candidate(self, step: int, record: Mapping[str, Any], best: float | None) -> None:
        for key, value in record["metrics"].items():
            self.writer.add_scalar(f"candidate/{key}", value, step)
        if best is not None:
            self.writer.add_scalar("search/best_so_far", best, step)
        summary = ", ".join(f"{k} {v}" for k, v in record["summary"].items())
        self.writer.add_text("candidate/genome", f"{record['genome_hash'][:12]} ({record['status']}, budget "
                             f"{record['budget']}, worker {record['worker']}): {summary}", step)
        self.writer.flush()

    def artifacts(self, path: Path, name: str) -> None:
        self.writer.add_text("artifacts", f"{name}: {path}", 0)

    def close(self, status: str | None) -> None:
        self.writer.close()


class WandbTracker:
    """Weights & Biases, offline unless ``WANDB_MODE`` says otherwise (``wandb sync`` uploads later)."""

    name = "wandb"

    def start(self, run_dir: Path, run_name: str, params: dict[str, str], state: dict[str, Any]) -> None:
        import wandb  # lazy: only where installed and listed in run.report_to

        (run_dir / WANDB_DIR).mkdir(exist_ok=True)
        self.run = wandb.init(project=EXPERIMENT, name=run_name, dir=str(run_dir / WANDB_DIR), config=params,
                              mode=os.environ.get("WANDB_MODE", "offline"), id=state.get("wandb_run_id"), resume="allow")
        state["wandb_run_id"] = self.run.id

    def candidate(self, step: int, record: Mapping[str, Any], best: float | None) -> None:
        row = {f"candidate/{k}": v for k, v in record["metrics"].items()} | {"candidate/genome": record["summary"]["ops"]}
        if best is not None:
            row["search/best_so_far"] = best
        self.run.log(row, step=step)

    def artifacts(self, path: Path, name: str) -> None:
        import wandb  # lazy: only where installed and listed in run.report_to

        artifact = wandb.Artifact(name.replace("/", "-"), type="model")
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self, status: str | None) -> None:
        self.run.finish(exit_code=0 if status in ("FINISHED", None) else 1)


TRACKERS: dict[str, type] = {"mlflow": MlflowTracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker}


class Trackers:
    """The run's trackers behind one object: the search calls it where a candidate's record is written.

    Every call is guarded: a tracker that raises is reported once as a warning (what failed, that
    the run goes on, that results.sqlite has everything) and not called again.
    """

    def __init__(self, names: tuple[str, ...] | list[str], run_dir: Path, *, maximise: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.maximise = maximise
        self.active: list[Any] = [TRACKERS[name]() for name in names]
        self.best: float | None = None
        self.step = 0
        self.state: dict[str, Any] = {}
        path = self.run_dir / TRACKING_FILE
        if path.is_file():
            try:
                self.state = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                logger.warning("tracking: %s is unreadable (%s); the trackers start new runs", path, err)

    def __bool__(self) -> bool:
        return bool(self.active)

    def _guard(self, what: str, call: Any) -> None:
        for tracker in list(self.active):
            try:
                call(tracker)
            except Exception as err:  # a tracker is never worth a run: any failure only turns it off
                self.active.remove(tracker)
                logger.warning("tracking: %s failed to %s (%s: %s); it is off for the rest of the run, which goes on "
                               "(results.sqlite holds every result)", tracker.name, what, type(err).__name__,
                               str(err).splitlines()[0] if str(err) else "")
                logger.debug("tracking: %s failure", tracker.name, exc_info=True)

    def _save_state(self) -> None:
        try:
            (self.run_dir / TRACKING_FILE).write_text(json.dumps(self.state, indent=2))
        except OSError as err:
            logger.warning("tracking: cannot write %s (%s)", self.run_dir / TRACKING_FILE, err)

    def start(self, run_name: str, config: Mapping[str, Any], previous: list[Any] = ()) -> None:
        """Open (or, on resume, reopen) each tracker's run; a resumed run's stored candidates set the step
        and the best so far, so the curve goes on where it stopped."""
        if not self.active:
            return
        params = flat_params(config)
        self._guard("start", lambda t: t.start(self.run_dir, run_name, params, self.state))
        self._save_state()
        for record in previous:
            self._advance(record)

    def _advance(self, record: Any) -> float | None:
        self.step += 1
        if record.status == "ok" and record.objectives:
            value = float(record.objectives[0])
            if self.best is None or (value > self.best if self.maximise else value < self.best):
                self.best = value
        return self.best

    def candidate(self, record: Any, budget: int | None) -> None:
        """One finished (or failed) candidate: its record and the best-so-far point at the next index."""
        if not self.active:
            return
        best = self._advance(record)
        data = {"genome_hash": record.genome_hash, "generation": record.generation, "status": record.status,
                "worker": record.worker, "budget": budget, "attempts": record.attempts, "seconds": record.seconds,
                "error": record.error, "metrics": numeric_metrics(record.metrics) | {
                    f"objective_{i}": float(v) for i, v in enumerate(record.objectives or ()) if math.isfinite(v)},
                "summary": genome_summary(record.genome_json)}
        step = self.step
        self._guard("record a candidate", lambda t: t.candidate(step, data, best))

    def artifacts(self, path: Path, name: str) -> None:
        """A file or folder (an exported student, the summary) kept with the tracker's run."""
        self._guard(f"keep {name}", lambda t: t.artifacts(Path(path), name))

    def close(self, status: str | None = "FINISHED") -> None:
        """End each tracker's run with ``status`` (MLflow's FINISHED, FAILED, KILLED; None leaves it as it is)."""
        self._guard("close", lambda t: t.close(status))
        self.active = []


def log_exported(run_dir: Path, names: tuple[str, ...] | list[str], run_name: str, config: Mapping[str, Any],
                 folders: list[Path]) -> None:
    """Keep exported students with the search's tracker run (reopened from its ``tracking.json``)."""
    if not names:
        return
    trackers = Trackers(names, run_dir)
    trackers.start(run_name, config)
    for folder in folders:
        trackers.artifacts(folder, f"students/{folder.name}")
    trackers.close(None)
