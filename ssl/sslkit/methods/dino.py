"""DINO (Caron et al. 2021): a student matches the centred, sharpened output of its EMA teacher
across multi-crop views, with no labels and no negatives."""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from sslkit.methods.base import SSLMethod
from sslkit.models.backbones import Backbone
from sslkit.models.ema import EMATeacher


def crops_by_size(views: list[Tensor] | tuple[Tensor, ...], global_crops: int, method: str):
    """The global crops (the first ``global_crops`` views) and the local ones (the rest), as
    multi-crop views give them, checked: at least the global crops, all of one size."""
    views = list(views)
    if len(views) < global_crops:
        raise ValueError(
            f"{method} needs at least {global_crops} view(s) per image (method.global_crops) but "
            f"the batch has {len(views)}; use augment=multicrop (or augment=simclr for two "
            "global crops and no local ones)."
        )
    global_views, local_views = views[:global_crops], views[global_crops:]
    if any(v.shape != global_views[0].shape for v in global_views):
        raise ValueError(
            f"{method}'s {global_crops} global crops must share one size, got "
            f"{[tuple(v.shape[-2:]) for v in global_views]}: set method.global_crops to the "
            "augmentation's global_crops."
        )
    if any(v.shape != local_views[0].shape for v in local_views):
        raise ValueError(
            f"{method}'s local crops must share one size, got "
            f"{[tuple(v.shape[-2:]) for v in local_views]}."
        )
    return global_views, local_views


def dino_head(
    input_dim: int,
    hidden_dim: int,
    bottleneck_dim: int,
    output_dim: int,
    *,
    batch_norm: bool,
    freeze_last_layer: int,
    norm_last_layer: bool,
) -> DINOProjectionHead:
    """lightly's ``DINOProjectionHead`` (MLP, L2 normalisation, weight-normalised last layer)
    with its last layer rebuilt on ``torch.nn.utils.parametrizations.weight_norm``: lightly's
    uses the older ``torch.nn.utils.weight_norm``, whose module cannot be deep-copied, and the
    EMA teacher is a deep copy. The same layer: direction ``v`` from the linear layer's
    initialisation, norm ``g`` set to 1 and, with ``norm_last_layer``, kept there."""
    head = DINOProjectionHead(
        input_dim,
        hidden_dim,
        bottleneck_dim,
        output_dim,
        batch_norm=batch_norm,
        freeze_last_layer=freeze_last_layer,
        norm_last_layer=norm_last_layer,
    )
    last = parametrizations.weight_norm(nn.Linear(bottleneck_dim, output_dim, bias=False))
    norm = last.parametrizations.weight.original0
    with torch.no_grad():
        norm.fill_(1.0)
    norm.requires_grad_(not norm_last_layer)
    head.last_layer = last
    return head


def teacher_temperature(
    epoch: int, warmup_epochs: int, warmup_temperature: float, temperature: float
) -> float:
    """DINO's teacher temperature in ``epoch``: linear from ``warmup_temperature`` at epoch 0 to
    ``temperature`` at epoch ``warmup_epochs - 1`` (the original's ``np.linspace`` per epoch),
    then ``temperature``."""
    if epoch >= warmup_epochs:
        return temperature
    if warmup_epochs == 1:
        return warmup_temperature
    return warmup_temperature + (temperature - warmup_temperature) * epoch / (warmup_epochs - 1)


class DINO(SSLMethod):
    """Student (backbone + DINO head) trained to match an EMA teacher's (backbone + head)
    softmax output over ``output_dim`` prototypes, across multi-crop views.

    The views come grouped by size (the method contract for multi-crop): the first
    ``global_crops`` are the global crops, which go through both networks; the rest are local
    crops, which only the student sees. Crops of one size pass through the backbone together.
    The loss (lightly's ``DINOLoss``) is the cross-entropy between the teacher's centred,
    sharpened distribution of each global crop (temperature ``teacher_temp``, warmed up
    linearly from ``warmup_teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs; logged as
    ``train/teacher_temp``) and the student's distribution of every other crop (temperature
    ``student_temp``), averaged over the pairs. The centre is a buffer of the loss (so in every
    checkpoint), moved after each step towards the mean teacher output of the global batch
    (all-reduced over processes) with momentum ``center_momentum``.

    As in the original recipe: the teacher follows the student with a momentum rising on a
    cosine from ``momentum`` to 1; the head's last (weight-normalised) layer gets no update
    during the first ``freeze_last_layer_epochs`` epochs; each parameter's gradient is clipped
    to norm ``clip_grad`` (0: off) before the optimiser step. The original also raises the
    weight decay over training (0.04 to 0.4); here it stays the optimiser's.
    ``eval.encoder=teacher`` evaluates the teacher, the encoder DINO reports.

    Args:
        backbone: the student's encoder (its EMA copy is the teacher's).
        output_dim: number of prototypes, the width of the softmax (65536 in DINO).
        hidden_dim: hidden width of the head's MLP (2048 in DINO).
        bottleneck_dim: width before the last layer (256 in DINO).
        batch_norm: BatchNorm in the head's MLP (off in DINO; on for ResNets in some recipes).
        norm_last_layer: keep the last layer's weight norm fixed at 1 (DINO's default).
        global_crops: how many of the views are global crops (2 in DINO).
        teacher_temp: the teacher's temperature after the warmup (0.04 to 0.07 in DINO).
        warmup_teacher_temp: the teacher's temperature at the first epoch (0.04 in DINO).
        warmup_teacher_temp_epochs: epochs of the linear warmup (30 in DINO).
        student_temp: the student's temperature (0.1 in DINO).
        center_momentum: momentum of the centre's moving average (0.9 in DINO).
        momentum: the teacher's momentum at the first step (0.996 in DINO), rising to 1.
        freeze_last_layer_epochs: epochs at the start without an update of the last layer.
        clip_grad: per-parameter gradient norm limit (3.0 in DINO); 0 turns it off.
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        output_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
        global_crops: int = 2,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        freeze_last_layer_epochs: int = 1,
        clip_grad: float = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        for name, value in (
            ("output_dim", output_dim),
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
            ("global_crops", global_crops),
        ):
            if value < 1:
                raise ValueError(f"method.{name} must be >= 1, got {value}.")
        for name, value in (
            ("teacher_temp", teacher_temp),
            ("warmup_teacher_temp", warmup_teacher_temp),
            ("student_temp", student_temp),
        ):
            if not value > 0:
                raise ValueError(f"method.{name} is a temperature and must be > 0, got {value}.")
        for name, value in (("center_momentum", center_momentum), ("momentum", momentum)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"method.{name} is a momentum in [0, 1], got {value}.")
        if warmup_teacher_temp_epochs < 0 or freeze_last_layer_epochs < 0 or clip_grad < 0:
            raise ValueError(
                "method.warmup_teacher_temp_epochs, method.freeze_last_layer_epochs and "
                f"method.clip_grad must be >= 0, got {warmup_teacher_temp_epochs}, "
                f"{freeze_last_layer_epochs} and {clip_grad}."
            )
        self.global_crops = global_crops
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.clip_grad = clip_grad
        self.head = dino_head(
            backbone.feature_dim,
            hidden_dim,
            bottleneck_dim,
            output_dim,
            batch_norm=batch_norm,
            freeze_last_layer=freeze_last_layer_epochs,
            norm_last_layer=norm_last_layer,
        )
        self.teacher_ema = EMATeacher(
            {"backbone": self.backbone, "head": self.head}, base_momentum=momentum
        )
        # The centre is the loss's buffer ``center``: in the state dict and every checkpoint.
        self.criterion = DINOLoss(
            output_dim=output_dim,
            teacher_temp=teacher_temp,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )

    def evaluation_encoders(self) -> dict[str, nn.Module]:
        """The student's backbone and the teacher's (``eval.encoder=teacher``)."""
        return {"student": self.backbone, "teacher": self.teacher_ema.backbone}

    def current_teacher_temp(self) -> float:
        """The teacher's temperature in the current epoch."""
        return teacher_temperature(
            self.current_epoch,
            self.warmup_teacher_temp_epochs,
            self.warmup_teacher_temp,
            self.teacher_temp,
        )

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        global_views, local_views = crops_by_size(views, self.global_crops, "DINO")
        count = len(global_views[0])
        global_features = self.backbone(torch.cat(global_views))
        student = [global_features]
        if local_views:
            student.append(self.backbone(torch.cat(local_views)))
        student_out = torch.cat([self.head(f) for f in student]).split(count)
        with torch.no_grad():
            teacher = self.teacher_ema
            teacher_out = teacher.head(teacher.backbone(torch.cat(global_views))).split(count)
        temperature = self.current_teacher_temp()
        loss = self.criterion(list(teacher_out), list(student_out), teacher_temp=temperature)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/teacher_temp", temperature, on_step=False, on_epoch=True)
        return loss + self.online_probe_loss(global_features[:count], targets)

    def on_after_backward(self) -> None:
        """No update of the head's last layer in the first ``freeze_last_layer_epochs``
        epochs (its gradient is dropped, so the optimiser skips it)."""
        self.head.cancel_last_layer_gradients(self.current_epoch)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """DINO's clipping, each parameter's gradient to norm ``clip_grad``; then the
        trainer's own ``gradient_clip_val``, if one is set."""
        if self.clip_grad:
            clip_each_parameter(self.parameters(), self.clip_grad)
        super().configure_gradient_clipping(
            optimizer,
            gradient_clip_val=gradient_clip_val,
            gradient_clip_algorithm=gradient_clip_algorithm,
        )


@torch.no_grad()
def clip_each_parameter(parameters: Any, max_norm: float) -> None:
    """Scale each parameter's gradient down to L2 norm ``max_norm`` where it is larger (DINO's
    ``clip_gradients``: per parameter, not over all of them)."""
    for parameter in parameters:
        if parameter.grad is not None:  # no host sync: the factor stays on the device
            factor = max_norm / (parameter.grad.norm() + 1e-6)
            parameter.grad.mul_(factor.clamp(max=1.0))
