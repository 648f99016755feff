"""Backends: outcome semantics in-process and on one module-scoped local Ray session.

The task functions are built by factories (closures), so cloudpickle ships them to Ray
workers by value: the test module itself is not importable there.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import ray

from rosearch.config import WorkersConfig
from rosearch.workers import (
    BackendSetupError,
    CandidateOutcome,
    CandidateTask,
    TaskResult,
    InProcessBackend,
    RayBackend,
    make_backend,
)
from rosearch.workers.ray_backend import _check_resources

HOST = socket.gethostname()


def tasks(n: int) -> list[CandidateTask]:
    return [CandidateTask(genome_hash=f"h{i}", genome_json="{}", seed=i, generation=0) for i in range(n)]


def square_fn():
    def fn(task, shared):
        return {"value": task.seed**2, "scaled": np.float64(task.seed) * 0.5}

    return fn


def failing_fn(bad_seed: int = 1):
    def fn(task, shared):
        if task.seed == bad_seed:
            raise ValueError(f"bad seed {task.seed}")
        return {"value": task.seed}

    return fn


def shared_array_fn():
    def fn(task, shared):
        array = shared["array"]
        return {"writeable": bool(array.flags.writeable), "sum": int(array.sum()), "n": int(array.size)}

    return fn


def crash_once_fn():
    """Kills its worker process on a task's first attempt; a marker file tells a retry apart."""

    def fn(task, shared):
        marker = Path(shared) / f"{task.genome_hash}.attempted"
        if not marker.exists():
            marker.touch()
            os._exit(1)
        return {"value": 1}

    return fn


def sleepy_fn(slow_seed: int = 0, seconds: float = 120.0):
    def fn(task, shared):
        if task.seed == slow_seed:
            time.sleep(seconds)
        return {"value": task.seed}

    return fn


def by_hash(outcomes: list[CandidateOutcome]) -> dict[str, CandidateOutcome]:
    assert len({o.genome_hash for o in outcomes}) == len(outcomes)
    return {o.genome_hash: o for o in outcomes}


# --------------------------------------------------------------------------------------------
# In-process
# --------------------------------------------------------------------------------------------


def test_inprocess_ok_outcomes_carry_metrics():
    with InProcessBackend(square_fn(), shared=None) as backend:
        outcomes = list(backend.run(tasks(3)))
    assert [o.genome_hash for o in outcomes] == ["h0", "h1", "h2"]
    assert [o.metrics for o in outcomes] == [{"value": 0, "scaled": 0.0}, {"value": 1, "scaled": 0.5}, {"value": 4, "scaled": 1.0}]
    assert all(type(o.metrics["scaled"]) is float for o in outcomes)  # numpy scalar unwrapped
    for o in outcomes:
        assert (o.status, o.error, o.attempts) == ("ok", None, 1)
        assert o.seconds >= 0
        assert o.worker.startswith(f"{HOST}:{os.getpid()}:")


def test_inprocess_exception_is_a_failed_outcome_and_others_complete():
    backend = InProcessBackend(failing_fn(bad_seed=1), shared=None)
    outcomes = by_hash(list(backend.run(tasks(3))))
    failed = outcomes["h1"]
    assert (failed.status, failed.metrics, failed.attempts) == ("failed", {}, 1)
    assert failed.error.startswith("ValueError: bad seed 1")
    assert "Traceback" in failed.error and "raise ValueError" in failed.error
    assert outcomes["h0"].ok and outcomes["h2"].metrics == {"value": 2}


def test_inprocess_non_json_metrics_fail_with_the_key_named():
    backend = InProcessBackend(lambda task, shared: {"model": object()}, shared=None)
    (outcome,) = backend.run(tasks(1))
    assert outcome.status == "failed"
    assert outcome.error.startswith("TypeError: metric 'model'")
    (outcome,) = InProcessBackend(lambda task, shared: [1.0], shared=None).run(tasks(1))
    assert outcome.error.startswith("TypeError: the task function must return a dict")


def with_files(task, shared):
    """A task function that returns files (like a trained student's weights) with its metrics."""
    return TaskResult({"value": task.seed}, artifacts={"model.bin": bytes([task.seed]) * 3})


def test_artifacts_travel_with_ok_outcomes_and_bad_names_fail():
    (outcome,) = InProcessBackend(with_files, shared=None).run(tasks(1))
    assert outcome.ok and outcome.metrics == {"value": 0} and outcome.artifacts == {"model.bin": b"\0\0\0"}
    for name, content, message in (("../x", b"1", "plain file name"), ("w.bin", "text", "must be bytes")):
        bad = InProcessBackend(lambda task, shared: TaskResult({}, {name: content}), shared=None)
        (outcome,) = bad.run(tasks(1))
        assert outcome.status == "failed" and message in outcome.error and outcome.artifacts == {}


def test_inprocess_passes_shared_by_reference_and_refuses_after_close():
    shared = {"array": np.arange(10)}
    backend = make_backend(WorkersConfig(backend="inprocess"), lambda task, shared_: {"same": shared_ is shared}, shared)
    assert isinstance(backend, InProcessBackend)
    assert next(backend.run(tasks(1))).metrics == {"same": True}
    backend.close()
    with pytest.raises(RuntimeError, match="after close"):
        next(backend.run(tasks(1)))


def test_unreachable_address_fails_fast_naming_the_field():
    start = time.monotonic()
    with pytest.raises(BackendSetupError, match=r"workers\.address='127\.0\.0\.1:1'"):
        RayBackend(square_fn(), None, address="127.0.0.1:1", num_cpus=1, num_gpus=0, max_retries=0, timeout_s=None)
    assert time.monotonic() - start < 30
    with pytest.raises(BackendSetupError, match="not 'auto' or host:port"):
        RayBackend(square_fn(), None, address="no-port-here", num_cpus=1, num_gpus=0, max_retries=0, timeout_s=None)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_cpus": 0}, "workers.num_cpus_per_candidate"),
        ({"num_gpus": -1}, "workers.num_gpus_per_candidate"),
        ({"num_gpus": 1.5}, "workers.num_gpus_per_candidate"),
        ({"max_retries": -1}, "workers.max_retries"),
        ({"timeout_s": 0}, "workers.timeout_s"),
    ],
)
def test_ray_backend_rejects_bad_settings_before_starting_ray(kwargs, field):
    settings = {"address": None, "num_cpus": 1, "num_gpus": 0, "max_retries": 0, "timeout_s": None, **kwargs}
    with pytest.raises(BackendSetupError, match=field.replace(".", r"\.")):
        RayBackend(square_fn(), None, **settings)


# --------------------------------------------------------------------------------------------
# Ray (one local session for the whole module)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    """The first backend starts local Ray itself; the others reuse it; closing it shuts Ray down."""
    owner = RayBackend(square_fn(), None, address=None, num_cpus=1, num_gpus=0, max_retries=0, timeout_s=None)
    assert ray.is_initialized()
    yield owner
    owner.close()
    if owner.owns_ray:
        assert not ray.is_initialized()


def ray_backend(fn, shared=None, **kwargs) -> RayBackend:
    settings = {"address": None, "num_cpus": 1, "num_gpus": 0, "max_retries": 0, "timeout_s": None, **kwargs}
    return RayBackend(fn, shared, **settings)


def test_ray_ok_and_failed_outcomes(ray_session):
    outcomes = by_hash(list(ray_session.run(tasks(2))))
    assert {h: o.metrics for h, o in outcomes.items()} == {"h0": {"value": 0, "scaled": 0.0}, "h1": {"value": 1, "scaled": 0.5}}
    for o in outcomes.values():
        assert (o.status, o.attempts) == ("ok", 1)
        host, pid, device = o.worker.split(":", 2)
        assert host.split("/node-")[0] == HOST and "/node-" in host and int(pid) != os.getpid() and device == "cpu"

    backend = ray_backend(failing_fn(bad_seed=1))
    outcomes = by_hash(list(backend.run(tasks(3))))
    backend.close()
    assert ray.is_initialized()  # a backend that reused the session leaves it running
    failed = outcomes["h1"]
    assert (failed.status, failed.metrics, failed.attempts) == ("failed", {}, 1)  # exceptions are not retried
    assert failed.error.startswith("ValueError: bad seed 1") and "Traceback" in failed.error
    assert outcomes["h0"].metrics == {"value": 0} and outcomes["h2"].metrics == {"value": 2}


def test_ray_outcomes_carry_artifacts_and_tasks_carry_payloads(ray_session):
    def echo_payload(task, shared):
        return TaskResult({"kind": task.kind}, artifacts={f"copy-{name}": data for name, data in task.payload.items()})

    backend = ray_backend(echo_payload)
    task = CandidateTask(genome_hash="h0", genome_json="{}", seed=0, generation=0, kind="attack", payload={"w": b"abc"})
    (outcome,) = backend.run([task])
    backend.close()
    assert outcome.ok and outcome.metrics == {"kind": "attack"} and outcome.artifacts == {"copy-w": b"abc"}


def test_ray_shared_input_is_put_once_and_read_zero_copy(ray_session):
    array = np.arange(1_000_000, dtype=np.int64)
    with mock.patch.object(ray, "put", wraps=ray.put) as put:
        backend = make_backend(WorkersConfig(backend="ray", max_retries=0), shared_array_fn(), {"array": array})
        outcomes = list(backend.run(tasks(4)))
    backend.close()
    assert isinstance(backend, RayBackend)
    assert put.call_count == 2  # the function and the shared inputs, once each; nothing per task
    for o in outcomes:
        # read-only: the worker sees the object store's buffer, not a private copy
        assert o.metrics == {"writeable": False, "sum": int(array.sum()), "n": array.size}


def test_ray_worker_crash_is_retried_and_counted(ray_session, tmp_path):
    retried = ray_backend(crash_once_fn(), str(tmp_path / "retry"), max_retries=1)
    (tmp_path / "retry").mkdir()
    (outcome,) = retried.run(tasks(1))
    assert (outcome.status, outcome.attempts, outcome.metrics) == ("ok", 2, {"value": 1})

    no_retry = ray_backend(crash_once_fn(), str(tmp_path / "once"), max_retries=0)
    (tmp_path / "once").mkdir()
    (outcome,) = no_retry.run(tasks(1))
    assert (outcome.status, outcome.attempts, outcome.metrics) == ("failed", 1, {})
    assert outcome.error.startswith("WorkerCrashedError:") and "workers.max_retries=0" in outcome.error


def test_ray_timeout_cancels_the_slow_candidate(ray_session):
    backend = ray_backend(sleepy_fn(slow_seed=0), timeout_s=2.0)
    start = time.monotonic()
    outcomes = list(backend.run(tasks(2)))
    assert time.monotonic() - start < 60
    assert [o.genome_hash for o in outcomes] == ["h1", "h0"]  # completion order
    slow = outcomes[1]
    assert slow.status == "failed" and slow.attempts == 1
    assert "timeout after 2s" in slow.error
    assert 2.0 <= slow.seconds < 60 and slow.worker.startswith(f"{HOST}/node-")


def test_ray_abandoned_evaluation_cancels_running_tasks(ray_session):
    total = ray.cluster_resources()["CPU"]
    backend = ray_backend(sleepy_fn(slow_seed=0), num_cpus=total / 2)
    iterator = backend.run(tasks(2))
    first = next(iterator)
    assert first.genome_hash == "h1"
    iterator.close()  # the caller stops listening: the sleeping candidate must not keep its CPUs
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0.0) == total


def test_ray_refuses_candidates_that_fit_on_no_local_node(ray_session):
    with pytest.raises(BackendSetupError, match=r"workers\.num_gpus_per_candidate=1000"):
        _check_resources(num_cpus=1, num_gpus=1000, strict=True)
    _check_resources(num_cpus=1, num_gpus=1000, strict=False)  # a cluster may still grow: only a warning
