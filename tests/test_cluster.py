"""Searches on a real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head
and worker nodes, each its own raylet with its own worker processes.

* candidates spread over the nodes, and the store names the node that ran each one;
* a node removed mid-search costs only the attempts it was running: they are retried on the
  other nodes and the search records every candidate once;
* workers read no driver-side path: they run in another working directory under an audit hook
  that records every file the candidate opens below the driver's run, cache, data and teacher
  directories (there must be none);
* fractional GPUs: logical GPUs on CPU nodes check Ray's packing and the device each worker is
  given (``CUDA_VISIBLE_DEVICES``), without a real GPU.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from rosearch.config import config_from_dict  # noqa: E402
from rosearch.records.store import ResultStore  # noqa: E402
from rosearch.search import run_candidate_task, run_search  # noqa: E402
from rosearch.workers import CandidateTask, RayBackend  # noqa: E402
from test_search import _finished, tiny_search_dict  # noqa: E402  (tests/ is on sys.path)


def start_cluster(nodes: int, num_cpus: int = 1, num_gpus: int = 0) -> Cluster:
    if ray.is_initialized():  # another module's local session
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": num_cpus, "num_gpus": num_gpus})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=num_cpus, num_gpus=num_gpus)
    cluster.wait_for_nodes()
    return cluster


@pytest.fixture
def cluster():
    cluster = start_cluster(3)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def node_of(worker: str) -> str:
    return worker.split(":", 1)[0].split("/node-")[1]


def cluster_config(tmp_path, sst2_dir, teacher_dir, cluster: Cluster, **sections):
    data = tiny_search_dict(tmp_path, sst2_dir, teacher_dir, **sections)
    data["workers"] = {"backend": "ray", "address": cluster.address, "num_cpus_per_candidate": 1, "max_retries": 2,
                       **sections.get("workers", {})}
    return config_from_dict(data)


def test_candidates_spread_over_three_nodes(tmp_path, tiny_sst2_dir, tiny_teacher_dir, cluster):
    config = cluster_config(tmp_path, tiny_sst2_dir, tiny_teacher_dir, cluster,
                            evolution={"strategy": "aging", "population_size": 6, "generations": 2})
    summary = run_search(config)
    assert summary.evaluated == 12 and summary.failed == 0
    with ResultStore(config.run.run_dir / "results.sqlite", read_only=True) as store:
        records = store.candidates()
    nodes = {node_of(r.worker) for r in records}
    alive = {node.node_id[:8] for node in cluster.list_all_nodes()}
    assert len(nodes) == 3 and nodes <= alive


def slow_candidate():
    """The real candidate task, made long enough that a node can be removed while it runs (a closure:
    Ray ships it by value, this test module is not importable in workers)."""

    def task_fn(task: CandidateTask, shared):
        time.sleep(3.0)
        return run_candidate_task(task, shared)

    return task_fn


def test_a_node_removed_mid_search_costs_only_its_attempts(tmp_path, tiny_sst2_dir, tiny_teacher_dir, cluster):
    config = cluster_config(tmp_path, tiny_sst2_dir, tiny_teacher_dir, cluster,
                            evolution={"strategy": "aging", "population_size": 4, "generations": 3})
    db = config.run.run_dir / "results.sqlite"
    removed: list[str] = []

    def remove_a_busy_worker_node() -> None:
        deadline = time.time() + 240
        while _finished(db) < 2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # every node is three seconds into a candidate now (all slots stay busy)
        victim = cluster.list_all_nodes()[-1]
        removed.append(victim.node_id[:8])
        cluster.remove_node(victim)

    killer = threading.Thread(target=remove_a_busy_worker_node, daemon=True)
    killer.start()
    summary = run_search(config, task_fn=slow_candidate())
    killer.join(timeout=5)
    assert removed, "the node was not removed during the search"
    with ResultStore(db, read_only=True) as store:
        records = store.candidates()
    assert summary.failed == 0 and summary.evaluated == 12
    assert len(records) == len({r.genome_hash for r in records}) == 12  # every candidate once
    retried = [r for r in records if r.attempts > 1]
    assert retried, "no attempt was lost with the node"
    assert all(node_of(r.worker) != removed[0] for r in retried)  # retried on another node
    assert all(r.status == "ok" for r in records)


def isolated_candidate(forbidden: tuple[str, ...], elsewhere: str):
    """The real candidate task, run from ``elsewhere`` and recording every driver-side path it opens."""

    def task_fn(task: CandidateTask, shared):
        os.chdir(elsewhere)
        opened: list[str] = []

        def audit(event: str, args: tuple) -> None:
            if event in ("open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove", "shutil.copyfile"):
                first = args[0] if args else None
                if isinstance(first, (str, bytes, os.PathLike)):
                    path = os.path.abspath(os.fsdecode(first))
                    if any(path == root or path.startswith(root + os.sep) for root in forbidden):
                        opened.append(f"{event} {path}")

        sys.addaudithook(audit)  # hooks cannot be removed; `opened` is this task's own list
        result = run_candidate_task(task, shared)
        return type(result)({**result.metrics, "driver_paths_opened": sorted(set(opened))}, result.artifacts)

    return task_fn


WORKER_SIDE = {  # what a worker needs beyond the shared arrays: NLTK data for attacks, the live teacher, the generator
    "attacks+adv_train": {
        "distill": {"methods": ["adv_train"], "max_steps": 8, "adv_train": {"rounds": 1, "every": 4, "examples": 4}},
        "attack": {"enabled": True, "recipes": ["deepwordbug"], "num_examples": 4, "full_attack": "all"},
    },
    "mate_kd": {
        "distill": {"methods": ["mate_kd"], "max_steps": 4,
                    "mate_kd": {"pretrain_steps": 2, "generator_layers": 1, "generator_every": 2}},
    },
}


@pytest.mark.parametrize("case", sorted(WORKER_SIDE))
def test_workers_read_no_driver_side_path(tmp_path, tiny_sst2_dir, tiny_teacher_dir, cluster, case):
    """Attacks (NLTK data), the live teacher of adversarial training and MATE-KD, the MATE-KD generator:
    workers provision or unpack all of it on their side, from shipped bytes."""
    config = cluster_config(tmp_path, tiny_sst2_dir, tiny_teacher_dir, cluster,
                            evolution={"population_size": 3, "generations": 1}, **WORKER_SIDE[case])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    forbidden = tuple(str(Path(p).resolve()) for p in (config.run.output_dir, config.run.cache_dir,
                                                         tiny_sst2_dir, tiny_teacher_dir))
    summary = run_search(config, task_fn=isolated_candidate(forbidden, str(elsewhere)))
    assert summary.evaluated == 3 and summary.failed == 0, summary.failure_reasons
    with ResultStore(config.run.run_dir / "results.sqlite", read_only=True) as store:
        records = store.candidates()
    if case == "attacks+adv_train":
        assert all("robust_accuracy" in r.metrics for r in records)
    assert [r.metrics["driver_paths_opened"] for r in records] == [[], [], []]


def gpu_probe():
    def task_fn(task: CandidateTask, shared):
        start = time.time()
        time.sleep(4.0)  # long enough for the packed candidates to overlap
        return {"gpu_ids": [str(i) for i in ray.get_gpu_ids()], "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "start": start, "end": time.time()}

    return task_fn


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_fractional_gpus_pack_candidates_and_map_devices(tmp_path):
    """Two logical GPUs and four CPUs per node, half a GPU per candidate: four at a time per node,
    each seeing exactly one GPU (its cuda:0), two per GPU."""
    cluster = start_cluster(2, num_cpus=4, num_gpus=2)
    try:
        backend = RayBackend(gpu_probe(), None, address=cluster.address, num_cpus=1, num_gpus=0.5, max_retries=0,
                             timeout_s=None)
        try:
            assert backend.capacity() == 8  # min(4 CPUs / 1, 2 GPUs / 0.5) per node, two nodes
            tasks = [CandidateTask(genome_hash=f"g{i}", genome_json="{}", seed=i, generation=0) for i in range(8)]
            outcomes = list(backend.run(tasks))
        finally:
            backend.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    for o in outcomes:
        (gpu,) = o.metrics["gpu_ids"]
        assert o.metrics["visible"] == gpu  # the process sees only its GPU: torch's cuda:0 is that one
        assert o.worker.endswith(f":cuda:{gpu}")
    per_gpu: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for o in outcomes:
        per_gpu.setdefault((node_of(o.worker), o.metrics["gpu_ids"][0]), []).append((o.metrics["start"], o.metrics["end"]))
    assert len(per_gpu) == 4  # both GPUs of both nodes were used
    assert all(max_overlap(spans) <= 2 for spans in per_gpu.values())  # never more than 2 x 0.5 GPU on one GPU
    assert max(max_overlap(spans) for spans in per_gpu.values()) == 2  # and packed: two shared a GPU


def test_the_shipped_ray_cluster_config_passes_rays_own_schema():
    """configs/cluster/ray-gpu-cluster.yaml is what `ray up` reads: checked with the autoscaler's validator."""
    import yaml

    util = pytest.importorskip("ray.autoscaler._private.util")  # private API: skip if a Ray release moves it
    path = Path(__file__).resolve().parents[1] / "configs" / "cluster" / "ray-gpu-cluster.yaml"
    config = util.prepare_config(yaml.safe_load(path.read_text()))
    util.validate_config(config)
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0, "GPU": 0}  # candidates only on workers


def test_without_an_address_a_search_starts_its_own_ray_even_beside_a_running_cluster(cluster):
    """workers.address unset means a local Ray of this machine's CPUs; a cluster already running here (whose
    address file a bare ray.init() would pick up, and then refuse num_cpus) is left alone."""
    ray.shutdown()  # the fixture's driver connection; the cluster's processes keep running
    backend = RayBackend(gpu_probe(), None, address=None, num_cpus=1, num_gpus=0, max_retries=0, timeout_s=None)
    try:
        assert backend.owns_ray
        own = {n["NodeID"] for n in ray.nodes()}
        assert own.isdisjoint(node.node_id for node in cluster.list_all_nodes())
    finally:
        backend.close()
