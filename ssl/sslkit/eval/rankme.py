"""RankMe (Garrido et al. 2023): the effective rank of a set of embeddings, without labels.

A representation that collapses (every image mapped to one point, or to a few directions) has
singular values concentrated on a few components and a RankMe near 1; one that spreads over
all ``D`` dimensions approaches ``D``. The evaluation reports it for the encoder and each
baseline on the training-split features it extracts anyway (``rankme`` in ``results.json``),
and the kNN monitor logs it while pretraining (``monitor/rankme``).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The paper's epsilon, added to every normalised singular value before the entropy.
EPSILON = 1e-7

#: Rows (or columns) of the features converted to float64 at a time.
_CHUNK = 8192


def singular_values(features: Tensor) -> Tensor:
    """The ``min(N, D)`` singular values of ``(N, D)`` features, float64, largest first.

    They are the square roots of the eigenvalues of the Gram matrix of the smaller side
    (``X^T X``, ``D x D``, when ``N >= D``, else ``X X^T``, ``N x N``), accumulated in float64
    over chunks of rows (columns). That costs one BLAS matrix product plus an eigensolver on a
    ``min(N, D)``-square matrix and never holds a float64 copy of the features, where
    ``torch.linalg.svdvals`` on the ``N x D`` matrix is several times slower, most of all on
    wide inputs such as raw pixels. Squaring the values doubles their dynamic range, so the
    Gram matrix is kept in float64: its rounding error then lies below ``EPSILON`` relative to
    the largest singular value, where float32 would add spurious directions.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
    n, d = features.shape
    size = min(n, d)
    gram = torch.zeros(size, size, dtype=torch.float64, device=features.device)
    if n >= d:
        for chunk in features.split(_CHUNK, dim=0):
            chunk = chunk.double()
            gram += chunk.T @ chunk
    else:
        for chunk in features.split(_CHUNK, dim=1):
            chunk = chunk.double()
            gram += chunk @ chunk.T
    eigenvalues = torch.linalg.eigvalsh(gram)  # ascending; tiny negatives are rounding
    return eigenvalues.clamp_min(0.0).sqrt().flip(0)


def rankme(features: Tensor, epsilon: float = EPSILON) -> float:
    """The effective rank of ``(N, D)`` features: ``exp(-sum_k p_k log p_k)``.

    ``p_k = s_k / sum_j s_j + epsilon`` over the ``min(N, D)`` singular values ``s_k`` of the
    features as they are (not centred, as in the paper). Lies between about 1 (one direction)
    and ``min(N, D)`` (equal singular values, e.g. orthogonal features of equal norm) and does
    not change when the features are scaled. All-zero features have rank 0.

    Raises:
        ValueError: for input that is not 2-D, is empty, or holds NaN/inf values.
    """
    if features.ndim != 2 or not features.numel():
        raise ValueError(
            f"RankMe needs a non-empty 2-D (N, D) feature matrix, got shape {tuple(features.shape)}"
        )
    if not torch.isfinite(features).all():
        raise ValueError("RankMe of features with NaN/inf values is undefined")
    if epsilon < 0:
        raise ValueError(f"RankMe's epsilon must be >= 0, got {epsilon}")
    values = singular_values(features)
    total = values.sum()
    if total == 0:
        return 0.0
    p = values / total + epsilon
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))
