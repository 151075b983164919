"""The Barlow Twins loss (Zbontar et al. 2021): the cross-correlation of two views driven to the
identity, with the moments taken over the global batch."""

from __future__ import annotations

import torch
from torch import Tensor

from sslkit.distributed import gather_with_grad, is_distributed


def barlow_twins_loss(
    z_a: Tensor,
    z_b: Tensor,
    lambda_offdiag: float = 5e-3,
    *,
    eps: float = 1e-5,
    gather_distributed: bool = True,
) -> Tensor:
    """Barlow Twins loss of two batches of projections of the same N samples.

    Each column d of ``z_a`` and ``z_b`` is standardised over the batch,

        za_nd = (z_a[n, d] - mean_n z_a[:, d]) / sqrt(var_n z_a[:, d] + eps)

    (biased variance, as batch normalisation without affine parameters computes it; the same
    for ``z_b``), and their cross-correlation is ``C = za^T zb / N`` (D x D). The loss drives
    it to the identity:

        loss = sum_i (1 - C_ii)^2  +  lambda_offdiag * sum_{i != j} C_ij^2

    the first term making each dimension invariant to the views, the second decorrelating
    the dimensions (redundancy reduction).

    Under data-parallel training (an initialised ``torch.distributed`` group with more than
    one process) and ``gather_distributed=True``, the projections of every process are
    gathered with gradients first, so the means, variances and C span the global batch and
    every process computes the loss of the concatenated batch. The gathered copies send the
    gradient of every process's loss back to the process that owns the rows, so DDP's average
    of the gradients is the gradient of that one loss (not ``1 / world_size`` of it, as when
    C is summed over the processes without gradients). All processes must pass batches of
    the same size. With ``gather_distributed=False`` each process standardises and
    correlates its own batch only.

    Args:
        z_a: (N, D) projections of the first view.
        z_b: (N, D) projections of the second view, row n from the same sample as z_a[n].
        lambda_offdiag: weight of the off-diagonal (redundancy reduction) term, >= 0
            (5e-3 in the paper, with D = 8192).
        eps: added to the variance before the square root, > 0.
        gather_distributed: standardise and correlate over the batches of all processes.

    Returns:
        The scalar loss.
    """
    _check_inputs(z_a, z_b, lambda_offdiag, eps)
    if gather_distributed and is_distributed():
        # One collective for both views: (world_size * 2, N, D) -> [z_a, z_b of every rank].
        gathered = gather_with_grad(torch.stack([z_a, z_b]))
        z_a, z_b = gathered.view(-1, 2, *z_a.shape).transpose(0, 1).flatten(1, 2)
    n = z_a.shape[0]
    if n < 2:
        raise ValueError(
            "barlow_twins_loss standardises each dimension over the batch and needs at least "
            f"2 samples in it (over all processes), got {n}; use a larger batch."
        )
    c = _standardise(z_a, eps).T @ _standardise(z_b, eps) / n
    on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
    off_diagonal = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diagonal + lambda_offdiag * off_diagonal


def _standardise(z: Tensor, eps: float) -> Tensor:
    mean = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


def _check_inputs(z_a: Tensor, z_b: Tensor, lambda_offdiag: float, eps: float) -> None:
    if z_a.ndim != 2 or z_b.ndim != 2:
        raise ValueError(
            "barlow_twins_loss expects 2-D (batch, dim) projections, got shapes "
            f"{tuple(z_a.shape)} and {tuple(z_b.shape)}; flatten the projector output first."
        )
    if z_a.shape != z_b.shape:
        raise ValueError(
            "barlow_twins_loss expects z_a and z_b of the same shape (row n of each is a view "
            f"of sample n), got {tuple(z_a.shape)} and {tuple(z_b.shape)}."
        )
    if not lambda_offdiag >= 0:
        raise ValueError(
            f"barlow_twins_loss lambda_offdiag must be >= 0 (the weight of the off-diagonal "
            f"term), got {lambda_offdiag}."
        )
    if not eps > 0:
        raise ValueError(f"barlow_twins_loss eps must be > 0, got {eps}.")
