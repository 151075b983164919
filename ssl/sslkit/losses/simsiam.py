"""SimSiam's symmetric negative cosine loss with a stop-gradient on the targets."""

from __future__ import annotations

from lightly.loss import NegativeCosineSimilarity
from torch import Tensor


def simsiam_loss(p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
    """The symmetric SimSiam loss of two views' predictions ``p`` and projections ``z``.

    With D(p, z) = -1/N * sum_i p_i . z_i / (||p_i|| ||z_i||) the mean negative cosine
    similarity of N rows and sg the stop-gradient,

        loss = 1/2 * D(p_a, sg(z_b)) + 1/2 * D(p_b, sg(z_a))        (in [-1, 1])

    Each view's prediction is pulled towards the other view's projection, which is held
    constant: the gradient reaches the encoder only through the predictions, the stop-gradient
    that keeps SimSiam from collapsing. D is lightly's ``NegativeCosineSimilarity``; it is a
    mean over the local rows, so under data parallelism the mean over processes (DDP's
    gradient average) equals the loss of one process on the global batch.

    Args:
        p_a: (N, D) predictions of the first view.
        p_b: (N, D) predictions of the second view.
        z_a: (N, D) projections of the first view (targets of ``p_b``, detached here).
        z_b: (N, D) projections of the second view (targets of ``p_a``, detached here).

    Returns:
        The scalar loss.
    """
    shapes = {tuple(t.shape) for t in (p_a, p_b, z_a, z_b)}
    if len(shapes) != 1 or p_a.ndim != 2 or p_a.shape[0] == 0:
        raise ValueError(
            "simsiam_loss expects four non-empty 2-D (batch, dim) tensors of the same shape, "
            f"got {[tuple(t.shape) for t in (p_a, p_b, z_a, z_b)]}."
        )
    return 0.5 * (_negative_cosine(p_a, z_b.detach()) + _negative_cosine(p_b, z_a.detach()))


_negative_cosine = NegativeCosineSimilarity()
