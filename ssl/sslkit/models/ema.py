"""Exponential-moving-average (EMA) teachers: a frozen copy of a network that trails it.

Student-teacher methods (BYOL) regress the student onto a teacher whose weights are an EMA of
the student's. The three pieces here are independent of Lightning so any method can use them:
make the frozen copy, compute the momentum for a step, and move the copy towards the student.
"""

from __future__ import annotations

import copy

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` whose parameters never require gradients.

    The copy starts equal to the student (BYOL's initialisation) and, having no trainable
    parameters, is left out of the optimiser and gets no optimiser state.
    """
    teacher = copy.deepcopy(student)
    deactivate_requires_grad(teacher)
    return teacher


def momentum_schedule(step: int, total_steps: int, tau_base: float) -> float:
    """BYOL's cosine momentum ``tau = 1 - (1 - tau_base) * (cos(pi * step / total_steps) + 1) / 2``.

    ``tau`` rises from ``tau_base`` at step 0 to 1.0 at ``total_steps``, so the teacher moves
    fast early on and freezes at the end of training. Steps past ``total_steps`` stay at 1.0.

    Args:
        step: index of the optimiser step that was just taken (0 for the first).
        total_steps: optimiser steps of the whole run.
        tau_base: momentum at step 0, in [0, 1].
    """
    if not 0.0 <= tau_base <= 1.0:
        raise ValueError(f"tau_base is a momentum in [0, 1], got {tau_base}.")
    if total_steps < 1 or step < 0:
        raise ValueError(
            f"the momentum schedule needs step >= 0 and total_steps >= 1, got step={step} "
            f"and total_steps={total_steps}."
        )
    # lightly's schedule runs over max_steps - 1 intervals; total_steps + 1 gives the formula.
    return cosine_schedule(min(step, total_steps), total_steps + 1, tau_base, 1.0)


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, tau: float) -> None:
    """Move every teacher parameter to ``tau * teacher + (1 - tau) * student``, in place.

    Buffers (BatchNorm running statistics) are not averaged: the teacher keeps the statistics
    of its own forward passes, which are the ones its weights see at evaluation.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"the EMA momentum tau must lie in [0, 1], got {tau}.")
    student_shapes = [p.shape for p in student.parameters()]
    teacher_shapes = [p.shape for p in teacher.parameters()]
    if student_shapes != teacher_shapes:
        raise ValueError(
            "ema_update needs a teacher with the same parameters as the student (a copy made "
            f"by make_teacher); got {len(teacher_shapes)} teacher and {len(student_shapes)} "
            "student parameters, or differing shapes."
        )
    update_momentum(student, teacher, tau)
