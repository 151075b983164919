"""EMA teachers: the update equals lightly's, the cosine momentum schedule is BYOL's, and the
``EMATeacher`` component is frozen, saved with its owner and moved once per optimiser step."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from lightly.models.utils import update_momentum
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sslkit.models import EMATeacher, ema_update, make_teacher, momentum_schedule


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5)
    )


def test_make_teacher_is_an_independent_frozen_copy():
    student = _net(0)
    teacher = make_teacher(student)
    for s, t in zip(student.parameters(), teacher.parameters(), strict=True):
        assert torch.equal(s, t) and s.data_ptr() != t.data_ptr()
        assert s.requires_grad and not t.requires_grad


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.99, 1.0])
def test_one_update_matches_lightly_and_the_formula_for_every_parameter(tau):
    student, teacher = _net(0), make_teacher(_net(1))
    before = [t.detach().clone() for t in teacher.parameters()]
    reference = make_teacher(_net(1))
    update_momentum(student, reference, tau)
    buffers = [b.clone() for b in teacher.buffers()]

    ema_update(student, teacher, tau)

    params = list(
        zip(student.parameters(), teacher.parameters(), reference.parameters(), before, strict=True)
    )
    assert len(params) == 6
    for s, t, r, old in params:
        torch.testing.assert_close(t, r, rtol=0, atol=0)
        torch.testing.assert_close(t, tau * old + (1 - tau) * s.detach())
    for old, new in zip(buffers, teacher.buffers(), strict=True):
        assert torch.equal(old, new)


def test_update_refuses_mismatched_modules_and_bad_momentum():
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(_net(0), nn.Linear(3, 4), 0.9)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ema_update(_net(0), _net(1), 1.5)


@pytest.mark.parametrize(("tau_base", "total"), [(0.996, 1000), (0.99, 7), (0.5, 1)])
def test_schedule_runs_from_tau_base_to_one_and_never_decreases(tau_base, total):
    taus = [momentum_schedule(step, total, tau_base) for step in range(total + 1)]
    assert taus[0] == pytest.approx(tau_base)
    assert taus[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(taus, taus[1:], strict=False))
    assert momentum_schedule(total + 5, total, tau_base) == pytest.approx(1.0)


def test_schedule_matches_byols_formula():
    for step, total in [(1, 10), (5, 10), (333, 1000)]:
        expected = 1 - (1 - 0.996) * (math.cos(math.pi * step / total) + 1) / 2
        assert momentum_schedule(step, total, 0.996) == pytest.approx(expected, rel=1e-12)
    assert momentum_schedule(5, 10, 0.99) == pytest.approx(0.995)
    # Towards another final momentum: halfway is the mean of the two ends.
    assert momentum_schedule(5, 10, 0.9, 0.98) == pytest.approx(0.94, rel=1e-12)
    assert momentum_schedule(10, 10, 0.9, 0.98) == pytest.approx(0.98)


@pytest.mark.parametrize(
    ("step", "total", "tau_base", "message"),
    [(0, 10, 1.2, "tau_base"), (-1, 10, 0.9, "step >= 0"), (0, 0, 0.9, "total_steps >= 1")],
)
def test_schedule_rejects_bad_arguments(step, total, tau_base, message):
    with pytest.raises(ValueError, match=message):
        momentum_schedule(step, total, tau_base)
    with pytest.raises(ValueError, match="tau_final"):
        momentum_schedule(0, 10, 0.9, 1.5)


# ---------------------------------------------------------------- the EMATeacher component
class _Owner(nn.Module):
    """A method-like module: a student backbone + head and their EMA teacher."""

    def __init__(self, base_momentum: float = 0.9, final_momentum: float = 1.0) -> None:
        super().__init__()
        self.backbone = _net(0)
        self.head = nn.Linear(5, 3)
        self.teacher = EMATeacher(
            {"backbone": self.backbone, "head": self.head},
            base_momentum=base_momentum,
            final_momentum=final_momentum,
        )


def test_teacher_copies_start_equal_frozen_and_live_in_the_owners_state_dict():
    owner = _Owner()
    state = owner.state_dict()
    student_keys = {k for k in state if not k.startswith("teacher.")}
    teacher_keys = {k for k in state if k.startswith("teacher.")}
    # Exactly one copy of each student tensor (parameters and BatchNorm buffers), nothing else.
    assert teacher_keys == {f"teacher.{k}" for k in student_keys}
    for key in student_keys:
        assert torch.equal(state[key], state[f"teacher.{key}"])
    assert owner.teacher["backbone"] is owner.teacher.backbone
    assert all(not p.requires_grad for p in owner.teacher.parameters())
    assert [name for name, _, _ in owner.teacher.pairs()] == ["backbone", "head"]
    # The students are referenced, not registered twice.
    assert {name for name, _ in owner.named_children()} == {"backbone", "head", "teacher"}

    restored = _Owner()
    for p in restored.teacher.parameters():
        p.data.add_(1.0)
    restored.load_state_dict(state)
    for a, b in zip(owner.teacher.parameters(), restored.teacher.parameters(), strict=True):
        assert torch.equal(a, b)


def test_no_gradient_reaches_the_teacher():
    owner = _Owner()
    images = torch.randn(4, 3, 4, 4)
    student_out = owner.head(owner.backbone(images))
    with torch.no_grad():
        teacher_out = owner.teacher.head(owner.teacher.backbone(images))
    assert not teacher_out.requires_grad
    (student_out - teacher_out).pow(2).sum().backward()
    assert all(p.grad is not None for p in owner.backbone.parameters())
    assert all(p.grad is None for p in owner.teacher.parameters())
    # Even outside no_grad the frozen copies build no graph to send gradients into.
    assert not owner.teacher.head(owner.teacher.backbone(images)).requires_grad


def test_update_moves_every_copy_with_the_scheduled_momentum():
    owner = _Owner(base_momentum=0.8, final_momentum=0.96)
    with torch.no_grad():
        for p in [*owner.backbone.parameters(), *owner.head.parameters()]:
            p.add_(torch.randn_like(p))
    before = [p.detach().clone() for p in owner.teacher.parameters()]
    students = [*owner.backbone.parameters(), *owner.head.parameters()]

    tau = owner.teacher.update(step=2, total_steps=4)

    assert tau == pytest.approx(0.88) and owner.teacher.momentum == tau
    assert owner.teacher.momentum_at(0, 4) == pytest.approx(0.8)
    assert owner.teacher.momentum_at(4, 4) == pytest.approx(0.96)
    for old, s, t in zip(before, students, owner.teacher.parameters(), strict=True):
        torch.testing.assert_close(t, tau * old + (1 - tau) * s.detach())


@pytest.mark.parametrize(
    ("students", "kwargs", "error", "message"),
    [
        ({}, {"base_momentum": 0.9}, ValueError, "at least one student"),
        ({"update": nn.Linear(2, 2)}, {"base_momentum": 0.9}, ValueError, "cannot name"),
        ({"a.b": nn.Linear(2, 2)}, {"base_momentum": 0.9}, ValueError, "cannot name"),
        ({"net": "linear"}, {"base_momentum": 0.9}, TypeError, "nn.Module"),
        ({"net": nn.Linear(2, 2)}, {"base_momentum": 1.1}, ValueError, "base_momentum"),
        (
            {"net": nn.Linear(2, 2)},
            {"base_momentum": 0.9, "final_momentum": -0.1},
            ValueError,
            "final_momentum",
        ),
    ],
)
def test_teacher_rejects_bad_arguments(students, kwargs, error, message):
    with pytest.raises(error, match=message):
        EMATeacher(students, **kwargs)


class _TinyStudentTeacher(pl.LightningModule):
    """Regresses a linear student onto its EMA teacher; records every teacher update."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.Linear(4, 4)
        self.teacher = EMATeacher({"student": self.student}, base_momentum=0.9)
        self.updates: list[tuple[int, float]] = []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        with torch.no_grad():
            target = self.teacher.student(x + 1)
        return (self.student(x) - target).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=0.1)

    def on_train_start(self) -> None:
        self.teacher.on_train_start(self.trainer)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        step = self.trainer.global_step  # the index of the step just taken
        self.updates.append((step + 1, self.teacher.after_optimizer_step(self.trainer)))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_teacher_moves_once_per_optimiser_step_in_a_lightning_run(tmp_path, accumulate):
    # 5 batches per epoch, 2 epochs: 10 optimiser steps, or 6 with accumulation over 2
    # (Lightning also steps on an epoch's last, incomplete group).
    module = _TinyStudentTeacher()
    data = DataLoader(TensorDataset(torch.randn(10, 4)), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=2,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    total = 10 if accumulate == 1 else 6
    assert trainer.global_step == total
    assert [step for step, _ in module.updates] == list(range(1, total + 1))
    for step, tau in module.updates:
        assert tau == pytest.approx(momentum_schedule(step - 1, total, 0.9))
    taus = [tau for _, tau in module.updates]
    assert taus == sorted(taus) and taus[0] == pytest.approx(0.9)
    assert not torch.equal(module.teacher.student.weight, module.student.weight)
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert torch.equal(state["teacher.student.weight"], module.teacher.student.weight)


def test_lightning_hooks_need_a_run_of_known_length_and_a_start():
    teacher = EMATeacher({"net": nn.Linear(2, 2)}, base_momentum=0.9)
    with pytest.raises(RuntimeError, match="on_train_start"):
        teacher.after_optimizer_step(object())

    class Endless:
        estimated_stepping_batches = float("inf")
        global_step = 0

    with pytest.raises(ValueError, match="known length"):
        teacher.on_train_start(Endless())
