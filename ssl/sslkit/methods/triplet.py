"""Triplet margin learning (FaceNet-style) with positives from views or from labels."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sslkit.losses import triplet
from sslkit.methods.margin import MarginContrastive, MarginStats
from sslkit.models.backbones import Backbone


class Triplet(MarginContrastive):
    """Backbone + projection head trained with the triplet margin loss on mined triplets."""

    def __init__(self, backbone: Backbone, *, margin: float = 0.2, **kwargs: Any) -> None:
        super().__init__(backbone, margin=margin, **kwargs)

    def margin_loss(
        self, embeddings: Tensor, anchor: Tensor, positive: Tensor, negative: Tensor
    ) -> tuple[Tensor, MarginStats]:
        a, p, n = embeddings[anchor], embeddings[positive], embeddings[negative]
        loss = triplet(a, p, n, self.margin)
        with torch.no_grad():
            positive_distance = torch.linalg.vector_norm(a - p, dim=1)
            negative_distance = torch.linalg.vector_norm(a - n, dim=1)
            active = positive_distance - negative_distance + self.margin > 0
        return loss, MarginStats(positive_distance, negative_distance, active)
