"""VICReg (Bardes et al. 2022): variance, invariance and covariance regularisation of two
views' projections."""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules.heads import VICRegProjectionHead
from torch import Tensor

from sslkit.losses.vicreg import VICRegLoss
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models.backbones import Backbone


class VICReg(SSLMethod):
    """Backbone + expander (``num_layers`` linear layers, all but the last with BatchNorm and
    ReLU) trained with the VICReg loss between two views.

    With Z, Z' the (N, D) projections of the two views, Var and Cov taken over the batch
    (unbiased, Cov = (Z - mean)^T (Z - mean) / (N - 1)),

        s(Z, Z') = 1/(N*D) * sum_n ||z_n - z'_n||^2                            (invariance)
        v(Z)     = 1/D * sum_d max(0, 1 - sqrt(Var(Z[:, d]) + eps))              (variance)
        c(Z)     = 1/D * sum_{i != j} Cov(Z)_ij^2                               (covariance)

        loss = invariance_weight * s(Z, Z')
             + variance_weight * (v(Z) + v(Z')) / 2
             + covariance_weight * (c(Z) + c(Z'))

    (the authors' code, with the variance term averaged over the two views). The variance
    term keeps every dimension from collapsing, the covariance term decorrelates them.

    The loss is lightly's ``VICRegLoss`` (``sslkit.losses.vicreg``: its covariance term
    computed without lightly's boolean mask, same value) with ``gather_distributed=True``: under
    data-parallel training the variance and covariance are taken over the projections of every
    process, gathered with gradients, and the invariance term over the local pairs, so the mean
    of the processes' losses and DDP's averaged gradients equal those of one process on the
    global batch. The projector is lightly's ``VICRegProjectionHead``.

    Args:
        backbone: the encoder being pretrained.
        projection_dim: output width of the expander (8192 in the paper).
        hidden_dim: width of its hidden layers (8192 in the paper).
        num_layers: linear layers of the expander, >= 2 (3 in the paper).
        invariance_weight: weight of s (lambda, 25 in the paper), >= 0.
        variance_weight: weight of v (mu, 25 in the paper), >= 0.
        covariance_weight: weight of c (nu, 1 in the paper), >= 0.
        eps: added to the variance before the square root, > 0.
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        projection_dim: int = 8192,
        hidden_dim: int = 8192,
        num_layers: int = 3,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        eps: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if projection_dim < 1 or hidden_dim < 1:
            raise ValueError(
                "method.projection_dim and method.hidden_dim are layer widths and must be "
                f">= 1, got {projection_dim} and {hidden_dim}."
            )
        if num_layers < 2:
            raise ValueError(
                "method.num_layers counts the expander's linear layers (a hidden layer and "
                f"the output layer at least) and must be >= 2, got {num_layers}."
            )
        weights = {
            "invariance_weight": invariance_weight,
            "variance_weight": variance_weight,
            "covariance_weight": covariance_weight,
        }
        for name, value in weights.items():
            if not value >= 0:
                raise ValueError(
                    f"method.{name} weighs a VICReg term and must be >= 0, got {value}."
                )
        if sum(weights.values()) == 0:
            raise ValueError(
                "method.invariance_weight, variance_weight and covariance_weight are all 0: the "
                "VICReg loss would be constant; give at least one a positive weight."
            )
        if not eps > 0:
            raise ValueError(f"method.eps must be > 0, got {eps}.")
        self.projector = VICRegProjectionHead(
            backbone.feature_dim, hidden_dim, projection_dim, num_layers=num_layers
        )
        self.criterion = VICRegLoss(
            lambda_param=invariance_weight,
            mu_param=variance_weight,
            nu_param=covariance_weight,
            gather_distributed=True,
            eps=eps,
        )

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "VICReg")
        if len(view_a) < 2:
            raise ValueError(
                "VICReg takes variances and covariances over the batch and needs at least 2 "
                f"images in the batch of every process, got {len(view_a)}; use a larger "
                "data.batch_size."
            )
        features = self.backbone(torch.cat([view_a, view_b]))
        z_a, z_b = self.projector(features).chunk(2)
        loss = self.criterion(z_a, z_b)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(view_a)], targets)
