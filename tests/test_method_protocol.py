"""The trainer drives every method through the one protocol (rosearch.distill.protocol): a method
registered there gets its batch share, its hooks in order, and its after-training step."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
import torch
from test_methods import CFG, make_student, rich_outputs, teacher_model, toy  # noqa: F401  (fixtures)

from rosearch.distill import trainer
from rosearch.distill.methods import NEEDS_METHOD_INPUTS, REGISTRY, methods_in_order
from rosearch.distill.protocol import DistillMethod, MethodRun, StudentContext

pytestmark = pytest.mark.usefixtures("single_thread")


class _Probe(MethodRun):
    """Records what the trainer calls; adds a constant term so its loss is visible."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.weight = torch.nn.Parameter(torch.tensor(0.5))
        self.modules = (torch.nn.ParameterList([self.weight]),)

    def before_step(self, student, completed_steps):
        self.log.append(f"before {completed_steps}")

    @contextlib.contextmanager
    def recording(self):
        self.log.append("record")
        yield

    def mix(self, student, loss, count):
        self.log.append(f"mix {count}")
        return loss, count

    def loss(self, student, batch, out, indices, step):
        return self.weight * 0 + 1.0

    def stats(self):
        return {"probe_steps": float(sum(entry.startswith("before") for entry in self.log))}

    def close(self):
        self.log.append("close")


class _ProbeMethod(DistillMethod):
    name = "probe"

    def __init__(self) -> None:
        self.log: list[str] = []
        self.contexts: list[StudentContext] = []

    def batch_share(self, cfg):
        return 4

    def start(self, ctx):
        self.contexts.append(ctx)
        return _Probe(self.log)

    def after_training(self, ctx):
        self.log.append("after")
        return {"probe_after": 1.0}


def test_a_new_method_needs_only_the_protocol(tiny_tokenizer, toy, rich_outputs, monkeypatch):  # noqa: F811
    probe = _ProbeMethod()
    monkeypatch.setattr(trainer, "methods_in_order", lambda names: (probe,) if "probe" in names else ())
    cfg = replace(CFG, methods=("probe",), max_steps=3)
    plain = trainer.distill(make_student(tiny_tokenizer.vocab_size), toy, rich_outputs, replace(cfg, methods=()),
                            seed=0, device="cpu", log_every=1)
    result = trainer.distill(make_student(tiny_tokenizer.vocab_size), toy, rich_outputs, cfg, seed=0, device="cpu",
                             log_every=1)
    assert probe.log == ["before 0", "record", "mix 12", "before 1", "record", "mix 12", "before 2", "record",
                         "mix 12", "close", "after"]  # 12 clean examples: the share takes 4 of 16
    assert len(probe.contexts) == 1 and probe.contexts[0].cfg is cfg
    assert result.method_stats == {"probe_steps": 3.0, "kd_seconds": pytest.approx(result.method_stats["kd_seconds"]),
                                   "probe_after": 1.0}
    assert result.loss_history[0][1] > plain.loss_history[0][1]  # its term is in the loss


def test_the_registry_order_and_the_methods_with_inputs():
    assert [m.name for m in REGISTRY] == ["augment", "adv_train", "layer_kd", "rift", "mate_kd", "ascc", "adv_finetune"]
    assert NEEDS_METHOD_INPUTS == {"augment", "mate_kd", "adv_finetune", "adv_train", "ascc"}
    assert [m.name for m in methods_in_order(("mate_kd", "rift", "layer_kd"))] == ["layer_kd", "rift", "mate_kd"]
    with pytest.raises(ValueError, match="mixup"):
        methods_in_order(("mixup",))


def test_the_methods_that_load_the_teacher_in_a_worker_say_so():
    """Their teacher (and generator) files are shipped to Ray workers (tests/test_cluster.py checks no driver path is read)."""
    from rosearch.distill.methods import REGISTRY

    assert sorted(m.name for m in REGISTRY if m.runs_teacher) == ["adv_finetune", "adv_train", "mate_kd"]
