"""Pairwise contrastive learning (Hadsell et al. 2006) with positives from views or labels."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sslkit.losses import pairs_from_triplets, pairwise_contrastive
from sslkit.methods.margin import MarginContrastive, MarginStats
from sslkit.models.backbones import Backbone


class PairwiseContrastive(MarginContrastive):
    """Backbone + projection head trained with the pairwise contrastive loss.

    Each mined triplet gives one positive and one negative pair, so every batch holds as many
    positive as negative pairs; ``mining`` chooses the negative pairs.

    The margin is 1.5 because embeddings are L2-normalised by default: two unrelated unit
    vectors in many dimensions lie about sqrt(2) apart, so a margin of 1.0 leaves nearly every
    negative term at zero (experiments/synthetic/README.md, section 2).

    Positive pairs closer than ``positive_margin`` are no longer pulled: without it
    (``positive_margin=0``, Hadsell et al.'s loss) the pulls and pushes balance with every pair
    at about half the margin, where classes that start mixed stay mixed
    (experiments/synthetic/README.md, section 6).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        margin: float = 1.5,
        positive_margin: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, margin=margin, **kwargs)
        if not 0 <= positive_margin < self.margin:
            raise ValueError(
                f"method.positive_margin must lie in [0, method.margin={self.margin}), got "
                f"{positive_margin}."
            )
        self.positive_margin = float(positive_margin)

    def margin_loss(
        self, embeddings: Tensor, anchor: Tensor, positive: Tensor, negative: Tensor
    ) -> tuple[Tensor, MarginStats]:
        first, second, same = pairs_from_triplets(anchor, positive, negative)
        a, b = embeddings[first], embeddings[second]
        loss = pairwise_contrastive(a, b, same, self.margin, self.positive_margin)
        with torch.no_grad():
            distance = torch.linalg.vector_norm(a - b, dim=1)
            active = torch.where(same, distance > self.positive_margin, distance < self.margin)
        return loss, MarginStats(distance[same], distance[~same], active)
