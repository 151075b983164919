"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of two views' projections driven to
the identity, which makes them invariant to the views and their dimensions non-redundant."""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules.heads import BarlowTwinsProjectionHead
from torch import Tensor

from sslkit.losses.barlow_twins import barlow_twins_loss
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models.backbones import Backbone


class BarlowTwins(SSLMethod):
    """Backbone + projector (three linear layers, the first two with BatchNorm and ReLU)
    trained with :func:`~sslkit.losses.barlow_twins.barlow_twins_loss` between two views.

    No negatives, teacher or predictor: the loss itself forbids the collapsed solution, since
    a constant projection has no variance to standardise and leaves C far from the identity.
    Under data-parallel training the standardisation and the cross-correlation span the
    global batch (the projections of every process, gathered with gradients).

    Args:
        backbone: the encoder being pretrained.
        projection_dim: output width of the projector (8192 in the paper).
        hidden_dim: width of its two hidden layers (8192 in the paper).
        lambda_offdiag: weight of the off-diagonal (redundancy reduction) term of the loss,
            >= 0 (5e-3 in the paper, with 8192 dimensions).
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        projection_dim: int = 8192,
        hidden_dim: int = 8192,
        lambda_offdiag: float = 5e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if projection_dim < 1 or hidden_dim < 1:
            raise ValueError(
                "method.projection_dim and method.hidden_dim are layer widths and must be "
                f">= 1, got {projection_dim} and {hidden_dim}."
            )
        if not lambda_offdiag >= 0:
            raise ValueError(
                "method.lambda_offdiag weighs the off-diagonal term of the Barlow Twins loss "
                f"and must be >= 0, got {lambda_offdiag}."
            )
        self.lambda_offdiag = lambda_offdiag
        self.projector = BarlowTwinsProjectionHead(backbone.feature_dim, hidden_dim, projection_dim)

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "BarlowTwins")
        features = self.backbone(torch.cat([view_a, view_b]))
        z_a, z_b = self.projector(features).chunk(2)
        loss = barlow_twins_loss(z_a, z_b, self.lambda_offdiag)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(view_a)], targets)
