"""Exponential-moving-average (EMA) teachers: a frozen copy of a network that trails it.

Student-teacher methods (BYOL; MoCo's key encoder and DINO's teacher are the same idea)
compare the student with a teacher whose weights are an EMA of the student's. The helpers make
the frozen copy, compute the momentum for a step and move the copy towards the student;
:class:`EMATeacher` puts them together into the component a method adds, with the
once-per-optimiser-step bookkeeping of a Lightning run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from typing import Any

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


def momentum_schedule(
    step: int, total_steps: int, tau_base: float, tau_final: float = 1.0
) -> float:
    """BYOL's cosine momentum
    ``tau = tau_final - (tau_final - tau_base) * (cos(pi * step / total_steps) + 1) / 2``.

    ``tau`` rises from ``tau_base`` at step 0 to ``tau_final`` (1.0 in BYOL) at
    ``total_steps``, so the teacher moves fast early on and freezes at the end of training.
    Steps past ``total_steps`` stay at ``tau_final``.

    Args:
        step: index of the optimiser step that was just taken (0 for the first).
        total_steps: optimiser steps of the whole run.
        tau_base: momentum at step 0, in [0, 1].
        tau_final: momentum at ``total_steps``, in [0, 1].
    """
    for name, value in (("tau_base", tau_base), ("tau_final", tau_final)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} is a momentum in [0, 1], got {value}.")
    if total_steps < 1 or step < 0:
        raise ValueError(
            f"the momentum schedule needs step >= 0 and total_steps >= 1, got step={step} "
            f"and total_steps={total_steps}."
        )
    # lightly's schedule runs over max_steps - 1 intervals; total_steps + 1 gives the formula.
    return cosine_schedule(min(step, total_steps), total_steps + 1, tau_base, tau_final)


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


class EMATeacher(nn.Module):
    """Frozen EMA copies of one or more student modules, moved towards them once per
    optimiser step with a cosine momentum schedule.

    Each student in ``students`` gets a copy registered under the same name (``teacher.backbone``,
    ``teacher.projector``), so the copies are part of the method's ``state_dict`` and of every
    checkpoint, move with it between devices, and are equal on every process (each process
    applies the same update to the same, synchronised student weights). Their parameters never
    require gradients, so the optimiser never sees them; a method runs them under
    ``torch.no_grad()``. The students themselves are only referenced, never registered here.

    The momentum of optimiser step ``s`` of ``T`` is :func:`momentum_schedule`: from
    ``base_momentum`` at the first step to ``final_momentum`` at the last. A method only
    registers the teacher; :class:`~sslkit.methods.SSLMethod` finds every ``EMATeacher`` among
    its modules, reads the run's length in ``on_train_start`` and moves each teacher inside
    ``optimizer_step``, right after the optimiser's update. So the teacher moves once per
    optimiser step (not per micro-batch under gradient accumulation), before anything that
    runs at the end of the batch (a step checkpoint included) sees the weights, and a resumed
    run continues the schedule from the trainer's step::

        self.teacher = EMATeacher({"backbone": self.backbone}, base_momentum=0.996)

        def training_step(self, batch, batch_idx):
            with torch.no_grad():
                targets = self.teacher.backbone(images)

    Outside Lightning, call :meth:`update` after each optimiser step.

    Args:
        students: the modules to follow, by the name their copy takes.
        base_momentum: momentum at the first optimiser step, in [0, 1].
        final_momentum: momentum at the last optimiser step, in [0, 1] (1 freezes the teacher
            at the end of training, as in BYOL).
    """

    def __init__(
        self,
        students: Mapping[str, nn.Module],
        *,
        base_momentum: float,
        final_momentum: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (("base_momentum", base_momentum), ("final_momentum", final_momentum)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"the teacher's {name} is a momentum in [0, 1], got {value}.")
        if not students:
            raise ValueError("an EMATeacher needs at least one student module to follow.")
        self.base_momentum = base_momentum
        self.final_momentum = final_momentum
        #: Momentum of the last update (``base_momentum`` before the first).
        self.momentum = base_momentum
        self._total_steps: int | None = None
        # A plain dict: the students belong to the method, not to the teacher's state.
        self._students: dict[str, nn.Module] = dict(students)
        for name, student in students.items():
            if not isinstance(student, nn.Module):
                raise TypeError(f"the student {name!r} must be an nn.Module, got {type(student)}")
            if not name.isidentifier() or hasattr(self, name):
                raise ValueError(
                    f"{name!r} cannot name a teacher module: use an identifier that is not an "
                    "attribute of EMATeacher (e.g. 'backbone', 'projector', 'head')."
                )
            self.add_module(name, make_teacher(student))

    def __getitem__(self, name: str) -> nn.Module:
        """The teacher copy of the student called ``name``."""
        return self._modules[name]

    def pairs(self) -> Iterator[tuple[str, nn.Module, nn.Module]]:
        """``(name, student, teacher)`` for every followed module."""
        for name, student in self._students.items():
            yield name, student, self._modules[name]

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum of optimiser step ``step`` (0-based) of a run of ``total_steps``."""
        return momentum_schedule(step, total_steps, self.base_momentum, self.final_momentum)

    @torch.no_grad()
    def update(self, step: int, total_steps: int) -> float:
        """Move every teacher copy towards its student with the momentum of optimiser step
        ``step``; returns that momentum (also kept in :attr:`momentum`)."""
        tau = self.momentum_at(step, total_steps)
        for _, student, teacher in self.pairs():
            ema_update(student, teacher, tau)
        self.momentum = tau
        return tau

    # ------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer: Any) -> None:
        """Read the run's length (its optimiser steps), which the momentum schedule spans.
        ``SSLMethod.on_train_start`` calls it for every teacher of the method."""
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "the EMA teacher's momentum schedule needs a run of known length: set "
                "trainer.max_epochs or trainer.max_steps."
            )
        self._total_steps = int(total)

    def after_optimizer_step(self, trainer: Any) -> float:
        """Move the teacher with the momentum of the optimiser step just taken; returns it.

        Call it right after ``optimizer.step()`` inside ``LightningModule.optimizer_step``
        (``SSLMethod`` does), where ``trainer.global_step`` is still the 0-based index of that
        step: Lightning counts the step once the hook has returned."""
        if self._total_steps is None:
            raise RuntimeError(
                "EMATeacher.after_optimizer_step was called before on_train_start: call "
                "teacher.on_train_start(trainer) first (SSLMethod.on_train_start does)."
            )
        return self.update(trainer.global_step, self._total_steps)

    def extra_repr(self) -> str:
        return f"base_momentum={self.base_momentum}, final_momentum={self.final_momentum}"
