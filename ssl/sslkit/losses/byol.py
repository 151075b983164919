"""The BYOL regression loss between the student's prediction and the teacher's projection."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from torch import Tensor

BYOL_LOSS_KINDS = ("cosine", "mse")


def byol_loss(p: Tensor, z: Tensor, kind: Literal["cosine", "mse"] = "cosine") -> Tensor:
    """Distance between predictions ``p`` and targets ``z``, with ``z`` a constant (no gradient).

    With p_i, z_i the L2-normalised rows and N rows,

        cosine:  loss = 1/N * sum_i (2 - 2 * p_i . z_i)        (BYOL's loss, in [0, 4])
        mse:     loss = 1/(N*D) * sum_i ||p_i - z_i||^2

    Because ||p_i - z_i||^2 = 2 - 2 * p_i . z_i for unit vectors, ``mse`` is ``cosine / D``:
    the same minimiser with gradients D times smaller, as in implementations that write the
    loss with ``F.mse_loss``. ``cosine`` is computed as ``2 + 2 *`` lightly's
    ``NegativeCosineSimilarity``.

    Args:
        p: (N, D) student predictions.
        z: (N, D) teacher projections of the other view; detached here, so the teacher is only
            ever moved by its EMA update.
        kind: ``cosine`` (default) or ``mse``.

    Returns:
        The scalar loss.
    """
    if kind not in BYOL_LOSS_KINDS:
        raise ValueError(f"byol_loss kind must be one of {list(BYOL_LOSS_KINDS)}, got {kind!r}.")
    if p.ndim != 2 or p.shape != z.shape or p.shape[0] == 0:
        raise ValueError(
            "byol_loss expects non-empty 2-D (batch, dim) predictions and targets of the same "
            f"shape, got {tuple(p.shape)} and {tuple(z.shape)}."
        )
    z = z.detach()
    if kind == "mse":
        return F.mse_loss(F.normalize(p, dim=1), F.normalize(z, dim=1))
    return 2 + 2 * _negative_cosine(p, z)


_negative_cosine = NegativeCosineSimilarity()
