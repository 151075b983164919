"""Learning-rate schedules and parameter grouping shared by every method.

Optimisers themselves come from config as ``_partial_`` callables (``torch.optim.SGD``,
``lightly.utils.lars.LARS``, ``torch.optim.AdamW``); schedules are partials of the functions
below, completed with the run's step counts once Lightning knows them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from lightly.utils.scheduler import cosine_warmup_schedule
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from sslkit.configurable import configurable


def _check_steps(total_steps: int, steps_per_epoch: int) -> None:
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"a schedule needs at least one step (total_steps={total_steps}, "
            f"steps_per_epoch={steps_per_epoch}); is the training split smaller than a batch?"
        )


#: What the method passes a schedule factory once Lightning knows the step counts.
SCHEDULE_RUNTIME_ARGS = ("optimizer", "total_steps", "steps_per_epoch")

#: Parameter-group key: a group with ``FIXED_LR: True`` keeps its base learning rate while the
#: schedule moves every other group (SimSiam's predictor). The schedules below honour it.
FIXED_LR = "fixed_lr"


def scheduled_lambda(optimizer: Optimizer, factor: Callable[[int], float]) -> LambdaLR:
    """``LambdaLR`` with ``factor`` for every parameter group but those marked ``FIXED_LR``,
    whose factor stays 1."""
    lambdas = [_one if group.get(FIXED_LR) else factor for group in optimizer.param_groups]
    return LambdaLR(optimizer, lambdas)


def _one(step: int) -> float:
    return 1.0


@configurable(runtime=SCHEDULE_RUNTIME_ARGS)
def warmup_cosine(
    optimizer: Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: int | float = 10,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup from 0 for ``warmup_epochs``, then cosine decay to ``min_lr_ratio * lr``.

    Stepped per optimiser step, so short runs and large batches get a smooth schedule. The
    warmup is capped at the run length, so a 2-epoch smoke run with a 10-epoch warmup still runs.
    """
    _check_steps(total_steps, steps_per_epoch)
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), total_steps)

    def factor(step: int) -> float:
        return cosine_warmup_schedule(
            min(step, total_steps),
            max_steps=total_steps,
            start_value=1.0,
            end_value=min_lr_ratio,
            warmup_steps=warmup_steps,
            warmup_start_value=0.0 if warmup_steps else 1.0,
        )

    return scheduled_lambda(optimizer, factor)


@configurable(runtime=SCHEDULE_RUNTIME_ARGS)
def constant(optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int) -> LambdaLR:
    """The configured learning rate for every step (a baseline for schedule ablations)."""
    _check_steps(total_steps, steps_per_epoch)
    return scheduled_lambda(optimizer, _one)


def parameter_groups(
    modules: Iterable[nn.Module],
    weight_decay: float,
    *,
    skip: Iterable[nn.Parameter] = (),
    no_decay_lr: float | None = None,
    **settings: Any,
) -> list[dict]:
    """Split parameters into a decayed group and one without decay for biases and norm layers.

    Decaying BatchNorm scales and biases hurts SSL training, and LARS skips its trust-ratio
    scaling for groups whose weight decay is zero, which is what those parameters need. A
    module may name more parameters to exempt with a ``no_weight_decay()`` method returning
    their names relative to it (timm's convention: a ViT's position embeddings and class token).

    Args:
        modules: the modules whose trainable parameters are grouped (each parameter once).
        weight_decay: the decay of the decayed group.
        skip: parameters left out (those another call groups, e.g. with ``fixed_lr=True``).
        no_decay_lr: the learning rate of the group without decay; None: the optimiser's.
        **settings: extra keys of every group, e.g. ``fixed_lr=True`` (:data:`FIXED_LR`).
    """
    skipped = {id(param) for param in skip}
    decay, no_decay = [], []
    for module in modules:
        exempt = _exempt_from_decay(module)
        for param in module.parameters():
            if not param.requires_grad or id(param) in skipped:
                continue
            skipped.add(id(param))
            (no_decay if param.ndim <= 1 or id(param) in exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, **settings}]
    if no_decay:
        rate = {} if no_decay_lr is None else {"lr": no_decay_lr}
        groups.append({"params": no_decay, "weight_decay": 0.0, **rate, **settings})
    return groups


def _exempt_from_decay(module: nn.Module) -> set[int]:
    """Ids of the parameters that ``module`` or any submodule names in ``no_weight_decay()``."""
    exempt = set()
    for submodule in module.modules():
        names = getattr(submodule, "no_weight_decay", None)
        if callable(names):
            parameters = dict(submodule.named_parameters())
            exempt.update(id(parameters[n]) for n in names() if n in parameters)
    return exempt
