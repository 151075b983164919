"""Supervised baseline: backbone + linear classifier trained end to end on the labels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.methods.base import SSLMethod, require_labels
from sslkit.models.backbones import Backbone


class Supervised(SSLMethod):
    """The reference every self-supervised result is compared with.

    Trains the backbone and a linear head with softmax + cross-entropy on class labels, or
    sigmoid + binary cross-entropy on multi-hot targets when the dataset is multi-label. Every
    view of the batch is a training example with its image's label (one mild view with
    ``augment=supervised``). Afterwards the frozen backbone goes through the same kNN and
    linear-probe evaluation as every pretraining method.
    """

    def __init__(self, backbone: Backbone, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        if self.num_classes < 1:
            raise ValueError("Supervised needs a labelled dataset with num_classes >= 1.")
        self.classifier = nn.Linear(backbone.feature_dim, self.num_classes)

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        if not self.multilabel:
            require_labels(targets, "Supervised")
        features = self.backbone(torch.cat(list(views)))
        logits = self.classifier(features)
        repeated = targets.repeat(len(views), *([1] * (targets.ndim - 1)))
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, repeated.float())
        else:
            loss = F.cross_entropy(logits, repeated)
            top1 = (logits.argmax(dim=1) == repeated).float().mean()
            self.log("train/top1", top1, on_step=False, on_epoch=True)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(targets)], targets)
