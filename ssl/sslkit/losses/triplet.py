"""The triplet margin loss (Weinberger and Saul 2009; Schroff et al. 2015, FaceNet)."""

import torch.nn.functional as F
from torch import Tensor


def triplet(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float) -> Tensor:
    """Triplet margin loss of N (anchor, positive, negative) triplets of embeddings.

    With d the Euclidean distance,

        loss = 1/N * sum_i  max(0, d(anchor_i, positive_i) - d(anchor_i, negative_i) + margin)

    i.e. each anchor must be closer to its positive than to its negative by at least
    ``margin``; triplets that already satisfy this cost nothing. Computed by
    ``torch.nn.functional.triplet_margin_loss`` (which adds 1e-6 to each difference before
    taking its norm).
    The embeddings are used as given: normalise them first for a margin on the unit sphere.

    Args:
        anchor: (N, D) anchors.
        positive: (N, D) positives, row i matching anchor[i].
        negative: (N, D) negatives, row i not matching anchor[i].
        margin: required gap between the negative and the positive distance; > 0.

    Returns:
        The scalar loss.
    """
    check_embeddings("triplet", anchor, positive, negative)
    if not margin > 0:
        raise ValueError(f"triplet margin must be > 0, got {margin}.")
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin, p=2)


def check_embeddings(loss: str, *embeddings: Tensor) -> None:
    """Raise a ValueError unless all embeddings are non-empty (N, D) tensors of one shape."""
    shapes = [tuple(e.shape) for e in embeddings]
    if any(len(shape) != 2 for shape in shapes) or len(set(shapes)) != 1:
        raise ValueError(
            f"{loss} expects (N, D) embeddings of one shape, row i of each from the same "
            f"pair or triplet, got shapes {', '.join(map(str, shapes))}."
        )
    if shapes[0][0] == 0:
        raise ValueError(f"{loss} needs at least one pair or triplet, got none.")
