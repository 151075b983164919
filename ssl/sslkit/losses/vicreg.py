"""The VICReg loss (Bardes et al. 2022): lightly's ``VICRegLoss`` with its covariance term
computed without masking the covariance matrix."""

from __future__ import annotations

from lightly.loss import VICRegLoss as LightlyVICRegLoss
from lightly.loss.vicreg_loss import invariance_loss, variance_loss
from torch import Tensor

from sslkit.distributed import gather_with_grad, is_distributed


def covariance_loss(z: Tensor) -> Tensor:
    """VICReg's covariance term of ``z`` ``(N, D)``: the squared off-diagonal entries of the
    unbiased covariance matrix ``Cov = (z - mean)^T (z - mean) / (N - 1)``, summed and divided
    by D.

    The value and gradient are lightly's ``covariance_loss``, computed differently: lightly
    selects the D * (D - 1) off-diagonal entries of Cov with a boolean mask (a copy of the
    whole matrix and a scatter in the backward pass, the costliest part of a VICReg step on a
    CPU at D = 2048). Here the sum of all squared entries minus the squared diagonal; and as
    ``||X^T X||_F = ||X X^T||_F``, the N x N Gram matrix replaces the D x D covariance when the
    batch is narrower than the projection (N < D, as in every preset).
    """
    if z.ndim != 2:
        raise ValueError(f"covariance_loss takes (N, D) projections, got shape {tuple(z.shape)}.")
    n, dim = z.shape
    centred = z - z.mean(dim=0)
    if n < dim:
        gram = centred @ centred.T
        all_squared = gram.pow(2).sum()
    else:
        all_squared = (centred.T @ centred).pow(2).sum()
    diagonal_squared = centred.pow(2).sum(dim=0).pow(2).sum()
    return (all_squared - diagonal_squared) / (n - 1) ** 2 / dim


class VICRegLoss(LightlyVICRegLoss):
    """lightly's ``VICRegLoss`` (its settings, invariance and variance terms, and its gathering
    of both views' projections with gradients across processes before the variance and
    covariance) with :func:`covariance_loss` for the covariance term. Inputs are ``(N, D)``."""

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        if z_a.shape != z_b.shape or z_a.ndim != 2 or len(z_a) < 2:
            raise ValueError(
                "VICRegLoss takes two (N, D) projections of the same shape with N >= 2, got "
                f"{tuple(z_a.shape)} and {tuple(z_b.shape)}."
            )
        invariance = invariance_loss(x=z_a, y=z_b)
        if self.gather_distributed and is_distributed():
            z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
        variance = 0.5 * (variance_loss(x=z_a, eps=self.eps) + variance_loss(x=z_b, eps=self.eps))
        covariance = covariance_loss(z_a) + covariance_loss(z_b)
        return (
            self.lambda_param * invariance + self.mu_param * variance + self.nu_param * covariance
        )
