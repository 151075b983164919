"""EMA teacher helpers: the update equals lightly's, the cosine momentum schedule is BYOL's."""

from __future__ import annotations

import math

import pytest
import torch
from lightly.models.utils import update_momentum
from torch import nn

from sslkit.models import ema_update, make_teacher, momentum_schedule


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


@pytest.mark.parametrize(
    ("step", "total", "tau_base", "message"),
    [(0, 10, 1.2, "tau_base"), (-1, 10, 0.9, "step >= 0"), (0, 0, 0.9, "total_steps >= 1")],
)
def test_schedule_rejects_bad_arguments(step, total, tau_base, message):
    with pytest.raises(ValueError, match=message):
        momentum_schedule(step, total, tau_base)
