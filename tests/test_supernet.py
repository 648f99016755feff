"""The weight-sharing supernet: sub-networks equal stand-alone students, sampling covers the space,
training resumes exactly after an interruption (and after kill -9), and the fidelity runs a search."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rosearch.data.batching import EncodedSplit
from rosearch.config import DistillConfig, SearchSpaceConfig, SupernetConfig, config_from_dict
from rosearch.search_space.genome import CellSpec, Genome
from rosearch.search_space.labels import op_labels
from rosearch.search_space.sampling import sample_genome
from rosearch.supernet.network import Supernet, SupernetCoverageError, SupernetShape, covered_labels
from rosearch.supernet.train import CHECKPOINT_FILE, seeded_sampler, train_supernet

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
ALL_FAMILIES = ("attn", "conv", "sepconv", "dilconv", "glu", "ffn", "identity", "maxpool", "avgpool")
SPACE = SearchSpaceConfig(hidden_sizes=(8, 16), embedding_sizes=(4, 8), num_layers=(1, 2), nodes_per_cell=5,
                          max_edges=7, op_families=ALL_FAMILIES, attention_heads=(2, 4), kernel_sizes=(3, 5),
                          ffn_ratios=(1, 2), activations=("gelu", "tanh"))
VOCAB = 40


def tiny_shape(**overrides) -> SupernetShape:
    return SupernetShape.of_space(SPACE, vocab_size=VOCAB, max_position_embeddings=24, type_vocab_size=2,
                                  num_labels=2, pad_token_id=0, **overrides)


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real token ids with ragged padding, so masking matters."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (4, 11), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate((11, 7, 3, 9)):
        ids[row, length:] = 0
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("share_positions", [True, False])
def test_a_sub_network_computes_what_the_stand_alone_student_with_the_copied_weights_computes(share_positions):
    torch.manual_seed(0)
    net = Supernet(tiny_shape(share_positions=share_positions)).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a wrong slice cannot hide behind ones and zeros
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids, mask = padded_batch()
    rng = random.Random(1)
    for _ in range(25):
        genome = sample_genome(rng, SPACE)
        student = net.extract(genome)
        assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in net.parameters())
        with torch.no_grad():
            inherited = net(genome, ids, mask).logits
            alone = student(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(inherited, alone, atol=1e-6), genome.to_json()
        # and the copy is a copy: training the student leaves the supernet alone
        before = net.classifier.weight.clone()
        student.classifier.weight.data.add_(1.0)
        assert torch.equal(net.classifier.weight, before)


def test_slices_take_each_attention_block_and_glu_half():
    """H < max: q, k and v (and GLU's value and gate) each keep their own leading rows."""
    net = Supernet(tiny_shape())
    cell = CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "attn_h2", "output"])
    params = net.sub_parameters(Genome(8, 4, (cell,)))
    qkv = params["student.layers.0.ops.0.qkv.weight"]
    full = net.layers[0].ops["attn_h2"].qkv.weight
    assert qkv.shape == (24, 8)
    for block in range(3):
        assert torch.equal(qkv[8 * block: 8 * block + 8], full[16 * block: 16 * block + 8, :8])
    glu = Genome(8, 4, (CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "glu_k3", "output"]),))
    conv = net.sub_parameters(glu)["student.layers.0.ops.0.conv.weight"]
    full = net.layers[0].ops["glu_k3"].conv.weight
    assert torch.equal(conv[:8], full[:8, :8]) and torch.equal(conv[8:], full[16:24, :8])


def test_gradients_reach_only_the_sampled_path():
    net = Supernet(tiny_shape()).train()
    cell = CellSpec([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], ["input", "conv_k3_gelu", "ffn_r2_tanh", "output"])
    ids, mask = padded_batch()
    net(Genome(8, 4, (cell,)), ids, mask).logits.sum().backward()
    touched = {name for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "layers.0.ops.conv_k3_gelu.conv.weight" in touched and "layers.0.ops.ffn_r2_tanh.fc.weight" in touched
    assert not any(name.startswith("layers.1.") for name in touched)  # a one-layer path leaves layer 2 alone
    assert not any("attn" in name or "glu" in name for name in touched)
    grad = net.layers[0].ops["conv_k3_gelu"].conv.weight.grad
    assert grad[:8, :8].abs().sum() > 0 and grad[8:].abs().sum() == 0 and grad[:, 8:].abs().sum() == 0


def test_a_genome_outside_the_space_is_refused_with_the_reason():
    net = Supernet(tiny_shape())
    cell = CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv_k7_gelu", "output"])
    with pytest.raises(SupernetCoverageError, match="hidden_size 32 > 16.*conv_k7_gelu"):
        net.extract(Genome(32, 4, (cell,)))


def test_sampling_reaches_every_op_label_and_width():
    sampler = seeded_sampler(lambda rng: sample_genome(rng, SPACE), seed=0)
    genomes = [sampler(step) for step in range(1, 401)]
    assert covered_labels(genomes) == set(op_labels(SPACE.op_families, SPACE.attention_heads, SPACE.kernel_sizes,
                                                    SPACE.ffn_ratios, SPACE.activations))
    assert {g.hidden_size for g in genomes} == set(SPACE.hidden_sizes)
    assert {g.embedding_size for g in genomes} == set(SPACE.embedding_sizes)
    assert {g.num_layers for g in genomes} == set(SPACE.num_layers)
    # every label at every layer and every node position of the pruned cells
    seen = {(layer, pos, op) for g in genomes for layer, cell in enumerate(g.cells) for pos, op in enumerate(cell.ops[1:-1])}
    for layer in range(max(SPACE.num_layers)):
        for label in covered_labels(genomes):
            assert (layer, 0, label) in seen
    assert sampler(7) == sampler(7)  # a step's architecture is reproducible alone (what resuming relies on)


def random_split(n: int = 48, seed: int = 0) -> tuple[EncodedSplit, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, size=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    split = EncodedSplit(input_ids=rng.integers(1, VOCAB, size=int(offsets[-1])).astype(np.int32), offsets=offsets,
                         labels=rng.integers(0, 2, size=n).astype(np.int64), token_type_ids=None, pad_token_id=0,
                         num_labels=2, fingerprint=f"random-{seed}")
    return split, rng.normal(size=(n, 2)).astype(np.float32)


def train_tiny(checkpoint_dir: Path | None, *, stop_after: int | None = None, steps: int = 12) -> tuple[Supernet, int]:
    """A tiny training; the supernet and the step it resumed from (0: a fresh start)."""
    torch.manual_seed(0)
    net = Supernet(tiny_shape())
    split, logits = random_split()
    cfg = SupernetConfig(max_steps=steps, batch_size=8, learning_rate=1e-2, checkpoint_every=4)
    sampler = seeded_sampler(lambda rng: sample_genome(rng, SPACE), seed=5)
    result = train_supernet(net, split, logits, sampler, cfg, DistillConfig(dropout=0.1), seed=5, device="cpu",
                            checkpoint_dir=checkpoint_dir, stop_after=stop_after)
    return net, result.resumed_from


def test_an_interrupted_training_resumes_to_the_uninterrupted_weights(tmp_path):
    whole, _ = train_tiny(None)
    first, _ = train_tiny(tmp_path, stop_after=6)  # stopped mid-way (a checkpoint at 4 and one where it stopped)
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), whole.state_dict().values()))
    resumed, resumed_from = train_tiny(tmp_path)  # as a new process: a fresh supernet, then the checkpoint
    assert resumed_from == 6
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_supernet import train_tiny
from pathlib import Path
net, _ = train_tiny(Path({folder!r}), steps={steps})
torch.save(net.state_dict(), Path({folder!r}) / "final.pt")
"""


def test_a_training_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path):
    steps = 100_000  # never reached: the process is killed after its first checkpoint
    folder = tmp_path / "killed"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = KILL_SCRIPT.format(tests=str(REPO / "tests"), folder=str(folder), steps=steps)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 180
        while not (folder / CHECKPOINT_FILE).is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, "the training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (folder / "final.pt").exists()
    killed_at = torch.load(folder / CHECKPOINT_FILE, weights_only=False)["step"]
    assert killed_at > 0 and killed_at % 4 == 0  # a whole checkpoint, never a half-written one
    resumed, resumed_from = train_tiny(folder, steps=steps, stop_after=killed_at + 4)
    whole, _ = train_tiny(None, steps=steps, stop_after=killed_at + 4)
    assert resumed_from == killed_at
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def supernet_search_dict(tmp_path: Path, sst2_dir: Path, teacher_dir: Path, **sections) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from test_search import tiny_search_dict

    data = tiny_search_dict(tmp_path, sst2_dir, teacher_dir, supernet={
        "fidelity": "supernet", "max_steps": 30, "batch_size": 16, "checkpoint_every": 10}, **sections)
    return data


def test_a_search_runs_unchanged_on_the_supernet_fidelity_and_reuses_the_cached_supernet(tmp_path, tiny_sst2_dir,
                                                                                          tiny_teacher_dir, caplog):
    from rosearch.records.store import ResultStore
    from rosearch.search import run_search

    config = config_from_dict(supernet_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    summary = run_search(config)
    assert summary.evaluated == 8 and summary.failed == 0
    with ResultStore(config.run.run_dir / "results.sqlite") as store:
        records = store.candidates()
    for r in records:
        assert r.metrics["fidelity"] == "supernet" and r.metrics["supernet_steps"] == 30
        assert 0.0 <= r.metrics["val_accuracy"] <= 1.0 and "train_seconds" not in r.metrics
    entries = list((tmp_path / "cache" / "supernet").iterdir())
    assert len(entries) == 1 and not (entries[0] / CHECKPOINT_FILE).exists()  # finished: only weights + meta
    assert json.loads((entries[0] / "meta.json").read_text())["steps"] == 30
    # a second run with other evolution settings reuses the trained supernet
    again = config_from_dict(supernet_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                  run={"name": "tiny2"}, evolution={"strategy": "random"}))
    with caplog.at_level("INFO", logger="rosearch.supernet.fidelity"):
        run_search(again)
    assert "cache hit" in caplog.text


def test_exporting_a_supernet_runs_best_distils_it_stand_alone_and_says_why_its_accuracy_differs(
        tmp_path, tiny_sst2_dir, tiny_teacher_dir, caplog):
    from rosearch.commands.export import export_students
    from rosearch.search import run_search

    config = config_from_dict(supernet_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir))
    run_search(config)
    with caplog.at_level("INFO", logger="rosearch.commands.export"):
        folder = export_students(config.run.run_dir, tmp_path / "exported", top=1)[0]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["export"]["weights"] == "redistilled"
    assert "inherited from its supernet" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING" and r.name == "rosearch.commands.export"]


def test_ray_workers_evaluate_sub_networks_without_the_drivers_files(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    """The weights reach the workers through the object store: with the driver's cache folder gone,
    Ray workers still evaluate, and they measure what the driver measures in-process."""
    pytest.importorskip("ray")
    import shutil

    from rosearch.prepare.inputs import prepare_inputs
    from rosearch.search import candidate_seed, run_candidate_task
    from rosearch.supernet.fidelity import architecture_sampler, prepare_supernets
    from rosearch.workers import CandidateTask, make_backend

    config = config_from_dict(supernet_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                   workers={"backend": "ray", "num_cpus_per_candidate": 1}))
    inputs = prepare_supernets(config, prepare_inputs(config, torch.device("cpu")), torch.device("cpu"))
    shutil.rmtree(config.run.cache_dir)  # nothing of the driver's left to read
    sample = architecture_sampler(config.search_space, inputs)
    genomes = [sample(random.Random(i)) for i in range(3)]
    tasks = [CandidateTask(genome_hash=g.hash(), genome_json=g.to_json(), seed=candidate_seed(0, g.hash()), generation=0)
             for g in genomes]
    backend = make_backend(config.workers, run_candidate_task, (inputs, config))
    try:
        outcomes = {o.genome_hash: o for o in backend.run(tasks)}
    finally:
        backend.close()
    local = replace(config, workers=replace(config.workers, backend="inprocess"))
    for task in tasks:
        outcome = outcomes[task.genome_hash]
        assert outcome.ok, outcome.error
        assert outcome.worker.split(":")[1] != str(os.getpid())  # a Ray worker process
        here = run_candidate_task(task, (inputs, local)).metrics
        assert outcome.metrics["val_accuracy"] == here["val_accuracy"]
        assert outcome.metrics["dev_accuracy"] == here["dev_accuracy"]
    assert not Path(config.run.cache_dir).exists()


def test_the_supernet_section_decides_results_only_on_the_supernet_fidelity():
    base = config_from_dict({})
    unused = config_from_dict({"supernet": {"max_steps": 7}})
    assert unused.results_fingerprint() == base.results_fingerprint()  # standalone: its settings decide nothing
    on = config_from_dict({"supernet": {"fidelity": "supernet"}})
    assert on.results_fingerprint() != base.results_fingerprint()
    assert config_from_dict({"supernet": {"fidelity": "supernet", "max_steps": 7}}).results_fingerprint() != \
        on.results_fingerprint()


def test_a_bad_supernet_setting_names_the_field():
    from rosearch.config import ConfigError

    with pytest.raises(ConfigError, match="supernet.warmup_ratio"):
        config_from_dict({"supernet": {"warmup_ratio": 1.5}})
    with pytest.raises(ConfigError, match="supernet.attack_examples"):
        config_from_dict({"supernet": {"attack_examples": 0}})
    with pytest.raises(ConfigError, match="supernet"):
        config_from_dict({"supernet": {"fidelity": "oneshot"}})
