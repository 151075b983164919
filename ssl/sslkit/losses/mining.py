"""Choosing which pairs and triplets of a batch the margin losses are computed on.

Every embedding of a batch carries an identity: the image it was cropped from (positives are
views of the same image) or its class label (positives are images of the same class). An
anchor's positives are the other embeddings with its identity, its negatives all embeddings
with another identity. Mining picks, for every anchor, one positive at random and one
negative by a strategy, and returns index tensors into the batch, so the caller computes the
loss, with gradients, on exactly the chosen rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

MINING = ("random", "hard", "semihard")


def check_mining(mining: str) -> str:
    """Return ``mining`` if it names a strategy, else raise a ValueError listing them."""
    if mining not in MINING:
        raise ValueError(f"unknown mining {mining!r}; choose from {', '.join(MINING)}.")
    return mining


def _random_choice(candidates: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per row, the column of one True entry drawn uniformly (arbitrary for empty rows)."""
    scores = torch.rand(
        candidates.shape, device=candidates.device, generator=generator, dtype=torch.float32
    )
    return scores.masked_fill(~candidates, -1.0).argmax(dim=1)


def _closest(distance: Tensor, candidates: Tensor) -> Tensor:
    """Per row, the candidate column at the smallest distance (arbitrary for empty rows)."""
    return distance.masked_fill(~candidates, float("inf")).argmin(dim=1)


@torch.no_grad()
def mine_triplets(
    embeddings: Tensor,
    identity: Tensor,
    mining: str = "random",
    margin: float = 0.2,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Index tensors ``(anchor, positive, negative)`` of one triplet per usable anchor.

    Every embedding with at least one positive and one negative in the batch is an anchor; its
    positive is drawn uniformly from its positives and its negative, with d the Euclidean
    distance between embeddings, is

    - ``random``: drawn uniformly from its negatives;
    - ``hard``: the hardest one, the negative closest to the anchor;
    - ``semihard`` (Schroff et al. 2015, FaceNet): the closest negative farther from the anchor
      than the positive but within the margin, ``d(a, p) < d(a, n) < d(a, p) + margin``.
      Anchors without such a negative are left out, so fewer triplets than anchors may come
      back (none once every triplet is satisfied or when the embeddings have collapsed).

    Hard negatives give the largest gradients but, early in training, mostly noisy or
    mislabelled ones; semihard negatives are informative yet never closer than the positive.

    Args:
        embeddings: (M, D) embeddings of the batch; only their distances are used (no gradient).
        identity: (M,) integer identity per embedding; equal identities make positives.
        mining: ``random``, ``hard`` or ``semihard``.
        margin: the semihard window; use the loss's margin.
        generator: random source for the random draws (default: torch's global one).

    Returns:
        Three (T,) int64 index tensors into ``embeddings``, T <= M.
    """
    check_mining(mining)
    if embeddings.ndim != 2 or identity.shape != embeddings.shape[:1]:
        raise ValueError(
            "mine_triplets expects (M, D) embeddings and one identity per embedding, got "
            f"shapes {tuple(embeddings.shape)} and {tuple(identity.shape)}."
        )
    count = len(embeddings)
    distance = torch.cdist(embeddings, embeddings)
    same = identity[:, None] == identity[None, :]
    is_positive = same & ~torch.eye(count, dtype=torch.bool, device=same.device)
    is_negative = ~same
    anchor = torch.arange(count, device=embeddings.device)
    usable = is_positive.any(dim=1) & is_negative.any(dim=1)
    positive = _random_choice(is_positive, generator)
    if mining == "random":
        negative = _random_choice(is_negative, generator)
    elif mining == "hard":
        negative = _closest(distance, is_negative)
    else:
        positive_distance = distance[anchor, positive][:, None]
        window = is_negative & (distance > positive_distance)
        window &= distance < positive_distance + margin
        negative = _closest(distance, window)
        usable &= window.any(dim=1)
    return anchor[usable], positive[usable], negative[usable]


def pairs_from_triplets(
    anchor: Tensor, positive: Tensor, negative: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Balanced pairs ``(a, b, same)`` from triplets: each gives one positive and one negative.

    Returns (2T,) index tensors ``a`` and ``b`` and a bool ``same``: first the T positive pairs
    (anchor, positive), then the T negative pairs (anchor, negative).
    """
    a = torch.cat([anchor, anchor])
    b = torch.cat([positive, negative])
    same = torch.arange(len(a), device=a.device) < len(anchor)
    return a, b, same
