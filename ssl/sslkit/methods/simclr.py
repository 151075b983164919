"""SimCLR (Chen et al. 2020): pull two views of an image together against all other views.

With ``positives=labels`` it is SupCon (Khosla et al. 2020, L_out): every other view of the
same class in the global batch is a positive of an anchor, not only its own other view.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor

from sslkit.losses import info_nce
from sslkit.losses.supcon import supcon
from sslkit.methods.base import SSLMethod, require_labels, split_views
from sslkit.methods.margin import POSITIVES
from sslkit.models.backbones import Backbone


class SimCLR(SSLMethod):
    """Backbone + MLP projection head trained with InfoNCE (NT-Xent) between two views.

    Args:
        backbone: the encoder being pretrained.
        temperature: softmax temperature of the contrastive loss.
        projection_dim: output size of the projection head.
        hidden_dim: hidden size of the projection head.
        positives: ``views`` (SimCLR: the other view of an image is its one positive, no
            labels) or ``labels`` (SupCon: every other view of its class in the global batch;
            every image needs a single class label; takes one or more views of one size).
        **kwargs: the ``SSLMethod`` arguments (optimizer, schedule, probe, ...).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        temperature: float = 0.5,
        projection_dim: int = 128,
        hidden_dim: int = 512,
        positives: str = "views",
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if positives not in POSITIVES:
            raise ValueError(
                f"method.positives={positives!r} is not known; choose from {', '.join(POSITIVES)}."
            )
        if positives == "labels" and self.multilabel:
            raise ValueError(
                "SimCLR with method.positives=labels needs single-label classes, but this "
                "dataset is multi-label; use method.positives=views."
            )
        self.temperature = temperature
        self.positives = positives
        self.projector = SimCLRProjectionHead(backbone.feature_dim, hidden_dim, projection_dim)

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        if self.positives == "labels":
            return self._supcon_step(list(views), targets)
        view_a, view_b = split_views(views, 2, "SimCLR")
        features = self.backbone(torch.cat([view_a, view_b]))
        z_a, z_b = self.projector(features).chunk(2)
        loss = info_nce(z_a, z_b, self.temperature)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(view_a)], targets)

    def _supcon_step(self, views: list[Tensor], targets: Tensor) -> Tensor:
        if not views or len({tuple(view.shape) for view in views}) != 1:
            raise ValueError(
                "SimCLR with method.positives=labels needs one or more views of one size per "
                f"image, got {len(views)} of shapes {sorted({tuple(v.shape) for v in views})}; "
                "use augment=simclr or augment=supervised."
            )
        if targets.ndim != 1:
            raise ValueError(
                "SimCLR with method.positives=labels needs one class label per image, got "
                f"targets of shape {tuple(targets.shape)} (multi-label data); use "
                "method.positives=views."
            )
        require_labels(targets, "SimCLR with method.positives=labels", "use method.positives=views")
        features = self.backbone(torch.cat(views))
        loss = supcon(self.projector(features).chunk(len(views)), targets, self.temperature)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(targets)], targets)
