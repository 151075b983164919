"""SimSiam (Chen & He 2021): a predictor maps one view's projection onto the other's, whose
gradient is stopped; no negatives, no teacher.

The stop-gradient on the target branch is what keeps the two-branch siamese network from
collapsing to a constant, with the predictor bottleneck on the online branch.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead
from torch import Tensor, nn

from sslkit.losses.simsiam import simsiam_loss
from sslkit.methods.base import SSLMethod, split_views
from sslkit.methods.byol import BYOL
from sslkit.models.backbones import Backbone


class SimSiam(SSLMethod):
    """Backbone + projector (3-layer MLP, BatchNorm on every layer) + bottleneck predictor,
    trained with the symmetric negative cosine loss between each view's prediction and the
    other view's (stop-gradient) projection.

    With ``fixed_predictor_lr`` the predictor's learning rate stays at its base value (linearly
    scaled by the global batch like every rate) while every other parameter group follows the
    schedule, as in SimSiam's recipe (a predictor whose rate was not decayed trained better).

    Args:
        backbone: the encoder; both views go through it and the same projector.
        projection_dim: output size of the projector and the predictor.
        hidden_dim: hidden width of the projector.
        prediction_hidden_dim: hidden width of the predictor (the bottleneck, a quarter of
            ``projection_dim`` in SimSiam).
        fixed_predictor_lr: keep the predictor's learning rate out of the schedule.
        collapse_threshold: warn when the per-dimension std of the L2-normalised projections
            (logged as ``train/projection_std``) falls below
            ``collapse_threshold / sqrt(projection_dim)`` (healthy is about
            ``1 / sqrt(projection_dim)``, collapse is 0); 0 disables the warning.
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        projection_dim: int = 2048,
        hidden_dim: int = 2048,
        prediction_hidden_dim: int = 512,
        fixed_predictor_lr: bool = True,
        collapse_threshold: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        for name, value in (
            ("projection_dim", projection_dim),
            ("hidden_dim", hidden_dim),
            ("prediction_hidden_dim", prediction_hidden_dim),
        ):
            if value < 1:
                raise ValueError(f"method.{name} is a layer width and must be >= 1, got {value}.")
        if collapse_threshold < 0:
            raise ValueError(f"method.collapse_threshold must be >= 0, got {collapse_threshold}.")
        self.fixed_predictor_lr = fixed_predictor_lr
        self.collapse_threshold = collapse_threshold
        self.projector = SimSiamProjectionHead(backbone.feature_dim, hidden_dim, projection_dim)
        self.predictor = SimSiamPredictionHead(
            projection_dim, prediction_hidden_dim, projection_dim
        )
        self._collapse_warned_epoch = -1

    def fixed_lr_modules(self) -> list[nn.Module]:
        """The predictor when ``fixed_predictor_lr``: its rate is not scheduled."""
        return [self.predictor] if self.fixed_predictor_lr else []

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "SimSiam")
        features = self.backbone(torch.cat([view_a, view_b]))
        projections = self.projector(features)
        p_a, p_b = self.predictor(projections).chunk(2)
        z_a, z_b = projections.chunk(2)
        loss = simsiam_loss(p_a, p_b, z_a, z_b)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self.monitor_collapse(projections.detach())
        return loss + self.online_probe_loss(features[: len(view_a)], targets)

    #: BYOL's collapse monitor: logs ``train/projection_std``, warns once an epoch below
    #: ``collapse_threshold / sqrt(projection_dim)``.
    monitor_collapse = BYOL.monitor_collapse
