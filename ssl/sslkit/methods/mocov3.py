"""MoCo v3 (Chen, Xie & He 2021): queries through a predictor against a momentum encoder's keys
of the other view, the other keys of the (global) batch as negatives; no queue."""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules.heads import BYOLPredictionHead, MoCoProjectionHead
from torch import Tensor, nn

from sslkit.losses.moco import moco_v3_info_nce
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models.backbones import Backbone
from sslkit.models.ema import EMATeacher


class MoCoV3(SSLMethod):
    """Query encoder (backbone + projector + predictor) trained with InfoNCE against the keys
    of a momentum encoder (backbone + projector), the other keys of the batch as negatives.

    The projector is MoCo v3's MLP (``num_layers`` layers, BatchNorm on every one, lightly's
    ``MoCoProjectionHead``), the predictor a two-layer MLP with a BatchNorm on its hidden layer
    (lightly's ``BYOLPredictionHead``, the same layers as MoCo v3's). The momentum encoder
    (``teacher_ema``, an :class:`~sslkit.models.EMATeacher` of the backbone and the projector)
    follows the query encoder after every optimiser step with a momentum that rises on a cosine
    from ``momentum`` to 1 (logged as ``train/tau``); ``eval.encoder=teacher`` evaluates it.

    The loss is symmetric: the queries of view a against the keys of view b and the other way
    round, each an N-way cross-entropy scaled by ``2 * temperature``, summed
    (:func:`~sslkit.losses.moco.moco_v3_info_nce`). On several processes the keys are gathered
    from every process in rank order, so the negatives are the global batch's.

    For a ViT the paper's recipe freezes the randomly initialised patch projection
    (``backbone.freeze_patch_embed=true``), which it found to stabilise training.

    Args:
        backbone: the query encoder's backbone (its EMA copy is the momentum encoder's).
        temperature: softmax temperature (0.2 in MoCo v3 for ResNets; 0.2 for ViTs).
        projection_dim: output width of projector and predictor (256 in MoCo v3).
        hidden_dim: hidden width of the projector (4096 in MoCo v3).
        prediction_hidden_dim: hidden width of the predictor (4096 in MoCo v3).
        num_layers: layers of the projector (3 for ResNets, 3 for ViTs in MoCo v3).
        momentum: the momentum encoder's momentum at the first step (0.99 in MoCo v3),
            rising on a cosine to 1 at the last.
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        temperature: float = 0.2,
        projection_dim: int = 256,
        hidden_dim: int = 4096,
        prediction_hidden_dim: int = 4096,
        num_layers: int = 3,
        momentum: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if not temperature > 0:
            raise ValueError(f"method.temperature must be > 0, got {temperature}.")
        for name, value in (
            ("projection_dim", projection_dim),
            ("hidden_dim", hidden_dim),
            ("prediction_hidden_dim", prediction_hidden_dim),
        ):
            if value < 1:
                raise ValueError(f"method.{name} is a layer width and must be >= 1, got {value}.")
        if num_layers < 2:
            raise ValueError(f"method.num_layers must be >= 2, got {num_layers}.")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"method.momentum is a momentum in [0, 1], got {momentum}.")
        self.temperature = temperature
        self.projector = MoCoProjectionHead(
            backbone.feature_dim, hidden_dim, projection_dim, num_layers=num_layers, batch_norm=True
        )
        self.predictor = BYOLPredictionHead(projection_dim, prediction_hidden_dim, projection_dim)
        self.teacher_ema = EMATeacher(
            {"backbone": self.backbone, "projector": self.projector}, base_momentum=momentum
        )

    def evaluation_encoders(self) -> dict[str, nn.Module]:
        """The query encoder's backbone and the momentum encoder's (``eval.encoder=teacher``)."""
        return {"student": self.backbone, "teacher": self.teacher_ema.backbone}

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "MoCoV3")
        images = torch.cat([view_a, view_b])
        features = self.backbone(images)
        q_a, q_b = self.predictor(self.projector(features)).chunk(2)
        with torch.no_grad():
            teacher = self.teacher_ema
            k_a, k_b = teacher.projector(teacher.backbone(images)).chunk(2)
        loss = moco_v3_info_nce(q_a, k_b, self.temperature) + moco_v3_info_nce(
            q_b, k_a, self.temperature
        )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(view_a)], targets)
