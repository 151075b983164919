"""SimCLR (Chen et al. 2020): pull two views of an image together against all other views."""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor

from sslkit.losses import info_nce
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models.backbones import Backbone


class SimCLR(SSLMethod):
    """Backbone + MLP projection head trained with InfoNCE (NT-Xent) between two views."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        temperature: float = 0.5,
        projection_dim: int = 128,
        hidden_dim: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        self.temperature = temperature
        self.projector = SimCLRProjectionHead(backbone.feature_dim, hidden_dim, projection_dim)

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "SimCLR")
        features = self.backbone(torch.cat([view_a, view_b]))
        z_a, z_b = self.projector(features).chunk(2)
        loss = info_nce(z_a, z_b, self.temperature)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(view_a)], targets)
