"""The pairwise contrastive (margin) loss of Hadsell, Chopra and LeCun (2006)."""

import torch
from torch import Tensor

from sslkit.losses.triplet import check_embeddings


def pairwise_contrastive(
    a: Tensor, b: Tensor, same: Tensor, margin: float, positive_margin: float = 0.0
) -> Tensor:
    """Contrastive loss of N labelled pairs of embeddings (Hadsell, Chopra and LeCun 2006).

    With d_i = ||a_i - b_i||_2 the Euclidean distance of pair i, s_i in {0, 1} whether its two
    members are the same (a positive pair) or different (a negative pair), m the margin and
    m_p the positive margin:

        loss = 1/N * sum_i  0.5 * s_i * max(0, d_i - m_p)**2  +  0.5 * (1 - s_i) * max(0, m - d_i)**2

    Positive pairs are pulled together until they are at most ``positive_margin`` apart;
    negative pairs are pushed apart until they are at least ``margin`` apart, after which they
    no longer contribute (which prevents collapse without pushing negatives to infinity). With
    ``positive_margin=0`` this is Hadsell et al.'s loss; a positive margin (the "double margin"
    form) stops pulling pairs that are already close. The embeddings are used as given:
    normalise them first for margins on the unit sphere, where distances lie in [0, 2].

    Args:
        a: (N, D) first members of the pairs.
        b: (N, D) second members, row i paired with a[i].
        same: (N,) 1 for positive pairs, 0 for negative pairs (bool or numeric).
        margin: distance beyond which negative pairs cost nothing; > 0.
        positive_margin: distance below which positive pairs cost nothing; in [0, margin).

    Returns:
        The scalar loss.
    """
    check_embeddings("pairwise_contrastive", a, b)
    if same.shape != a.shape[:1]:
        raise ValueError(
            f"pairwise_contrastive expects one `same` flag per pair, shape ({a.shape[0]},), got "
            f"{tuple(same.shape)}."
        )
    if not margin > 0:
        raise ValueError(f"pairwise_contrastive margin must be > 0, got {margin}.")
    if not 0 <= positive_margin < margin:
        raise ValueError(
            f"pairwise_contrastive positive_margin must lie in [0, margin={margin}), got "
            f"{positive_margin}."
        )
    same = same.to(a.dtype)
    distance = torch.linalg.vector_norm(a - b, dim=1)
    pull = same * (distance - positive_margin).clamp(min=0).square()
    push = (1 - same) * (margin - distance).clamp(min=0).square()
    return 0.5 * (pull + push).mean()
