"""BYOL (Grill et al. 2020): a student predicts an EMA teacher's projection of another view.

No negatives are needed: the predictor on the student side and the slowly moving teacher are
what keep the representation from collapsing to a constant.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from torch import Tensor, nn

from sslkit.losses import byol_loss
from sslkit.losses.byol import BYOL_LOSS_KINDS
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models.backbones import Backbone
from sslkit.models.ema import EMATeacher

log = logging.getLogger(__name__)


class BYOL(SSLMethod):
    """Student (backbone + projector + predictor) regressed onto an EMA teacher (backbone +
    projector) with the symmetric BYOL loss over both view orders.

    The teacher (``teacher_ema``, an :class:`~sslkit.models.EMATeacher` of the backbone and the
    projector) is a frozen copy of the student, moved towards it after every optimiser step with
    momentum ``tau`` rising from ``tau_base`` to 1 on a cosine over the run (logged as
    ``train/tau``; ``SSLMethod`` moves every registered teacher). Under gradient accumulation it
    moves once per optimiser step, not per micro-batch, and the schedule follows the trainer's
    global step, so a resumed run continues it where it stopped.

    Args:
        backbone: the student encoder (its EMA copy is the teacher's encoder).
        projection_dim: output size of projector and predictor.
        hidden_dim: hidden width of the projector (MLP with BatchNorm).
        prediction_hidden_dim: hidden width of the predictor.
        tau_base: teacher momentum at the first step (0.996 in BYOL; 0.99 suits short runs).
        loss: ``cosine`` (BYOL's ``2 - 2 cos``) or ``mse`` of L2-normalised vectors.
        collapse_threshold: warn when the per-dimension std of the L2-normalised projections
            falls below ``collapse_threshold / sqrt(projection_dim)`` (healthy is about
            ``1 / sqrt(projection_dim)``, collapse is 0); 0 disables the warning.
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        projection_dim: int = 256,
        hidden_dim: int = 4096,
        prediction_hidden_dim: int = 4096,
        tau_base: float = 0.996,
        loss: str = "cosine",
        collapse_threshold: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if not 0.0 <= tau_base <= 1.0:
            raise ValueError(f"method.tau_base is a momentum in [0, 1], got {tau_base}.")
        if loss not in BYOL_LOSS_KINDS:
            raise ValueError(f"method.loss must be one of {list(BYOL_LOSS_KINDS)}, got {loss!r}.")
        if collapse_threshold < 0:
            raise ValueError(f"method.collapse_threshold must be >= 0, got {collapse_threshold}.")
        self.tau_base = tau_base
        self.loss_kind = loss
        self.collapse_threshold = collapse_threshold
        self.projector = BYOLProjectionHead(backbone.feature_dim, hidden_dim, projection_dim)
        self.predictor = BYOLPredictionHead(projection_dim, prediction_hidden_dim, projection_dim)
        self.teacher_ema = EMATeacher(
            {"backbone": self.backbone, "projector": self.projector}, base_momentum=tau_base
        )
        self._collapse_warned_epoch = -1

    def evaluation_encoders(self) -> dict[str, nn.Module]:
        """The student's backbone and the teacher's (``eval.encoder=teacher``)."""
        return {"student": self.backbone, "teacher": self.teacher_ema.backbone}

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "BYOL")
        images = torch.cat([view_a, view_b])
        features = self.backbone(images)
        projections = self.projector(features)
        p_a, p_b = self.predictor(projections).chunk(2)
        with torch.no_grad():
            teacher = self.teacher_ema
            z_a, z_b = teacher.projector(teacher.backbone(images)).chunk(2)
        loss = 0.5 * (byol_loss(p_a, z_b, self.loss_kind) + byol_loss(p_b, z_a, self.loss_kind))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self.monitor_collapse(projections.detach())
        return loss + self.online_probe_loss(features[: len(view_a)], targets)

    def monitor_collapse(self, projections: Tensor) -> float:
        """Log the per-dimension std of the L2-normalised projections; warn if it collapses.

        A collapsed network maps every image to the same vector, which the BYOL loss alone
        cannot detect (it is then 0). The warning is issued at most once per epoch, on rank 0;
        on accelerators the value is read every ``HOST_CHECK_EVERY`` steps (NaN in between).
        """
        std = F.normalize(projections, dim=1).std(dim=0).mean()
        self.log("train/projection_std", std, on_step=True, on_epoch=True)
        if not self.host_check_due():
            return math.nan
        value = std.item()
        threshold = self.collapse_threshold / math.sqrt(projections.shape[1])
        if (
            value < threshold
            and self._collapse_warned_epoch != self.current_epoch
            and self.global_rank == 0
        ):
            self._collapse_warned_epoch = self.current_epoch
            log.warning(
                "BYOL may be collapsing: the per-dimension std of the normalised projections is "
                "%.2g in epoch %d (healthy is about %.2g, the warning threshold %.2g). Try a "
                "lower learning rate (optim.lr), a higher method.tau_base or stronger "
                "augmentation.",
                value,
                self.current_epoch,
                1 / math.sqrt(projections.shape[1]),
                threshold,
            )
        return value

    def update_teacher(self, step: int, total_steps: int) -> None:
        """Move the teacher towards the student with the momentum of optimiser step ``step``
        (what ``SSLMethod.optimizer_step`` does in a Lightning run)."""
        self.teacher_ema.update(step, total_steps)

    #: Where checkpoints written before the teacher was an ``EMATeacher`` keep its weights.
    LEGACY_TEACHER_KEYS = {
        "teacher_backbone.": "teacher_ema.backbone.",
        "teacher_projector.": "teacher_ema.projector.",
    }

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Older checkpoints hold the teacher as two top-level modules; rename their keys so
        # they load (strictly) into ``teacher_ema``.
        for old, new in self.LEGACY_TEACHER_KEYS.items():
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)
