"""Choosing which pairs and triplets of a batch the margin losses are computed on.

Every embedding of a batch carries an identity: the image it was cropped from (positives are
views of the same image) or its class label (positives are images of the same class). An
anchor's positives are the other embeddings with its identity, its negatives all embeddings
with another identity. Mining takes every (anchor, positive) pair of the batch, as FaceNet does
(Schroff et al. 2015: all anchor-positive pairs, negatives mined), and picks one negative per
pair by a strategy; it returns index tensors into the batch, so the caller computes the loss,
with gradients, on exactly the chosen rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

MINING = ("random", "hard", "semihard")

# Pairs whose rows of the distance matrix are handled at once (bounds the memory of mining
# when classes are large: labelled positives in a big global batch).
_CHUNK_ELEMENTS = 1 << 24


def check_mining(mining: str) -> str:
    """Return ``mining`` if it names a strategy, else raise a ValueError listing them."""
    if mining not in MINING:
        raise ValueError(f"unknown mining {mining!r}; choose from {', '.join(MINING)}.")
    return mining


def _negatives(
    distance: Tensor,
    is_negative: Tensor,
    positive_distance: Tensor,
    mining: str,
    margin: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """For rows of pairs: the chosen negative's column and whether the pair has one."""
    if mining == "random":
        scores = torch.rand(
            is_negative.shape, device=is_negative.device, generator=generator, dtype=torch.float32
        )
        return scores.masked_fill(~is_negative, -1.0).argmax(dim=1), is_negative.any(dim=1)
    if mining == "semihard":
        window = positive_distance[:, None]
        is_negative = is_negative & (distance > window) & (distance < window + margin)
    closest = distance.masked_fill(~is_negative, float("inf")).argmin(dim=1)
    return closest, is_negative.any(dim=1)


@torch.no_grad()
def mine_triplets(
    embeddings: Tensor,
    identity: Tensor,
    mining: str = "random",
    margin: float = 0.2,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Index tensors ``(anchor, positive, negative)``: one triplet per usable (anchor, positive)
    pair of the batch.

    Every ordered pair of distinct embeddings with one identity is an (anchor, positive) pair;
    it is usable when the anchor has a negative, and its negative, with d the Euclidean
    distance between embeddings, is

    - ``random``: drawn uniformly from the anchor's negatives, independently per pair;
    - ``hard``: the hardest one, the negative closest to the anchor;
    - ``semihard`` (Schroff et al. 2015, FaceNet): the closest negative farther from the anchor
      than the positive but within the margin, ``d(a, p) < d(a, n) < d(a, p) + margin``.
      Pairs without such a negative are left out (all of them once every triplet is satisfied
      or when the embeddings have collapsed).

    With two views per image and image identities every anchor has exactly one positive, its
    other view. With class labels an anchor pairs with every other image of its class: all
    positives carry the class signal (one random positive per anchor learnt the synthetic
    shapes' classes far more slowly, see experiments/synthetic).

    Hard negatives give the largest gradients but, early in training, mostly noisy or
    mislabelled ones; semihard negatives are informative yet never closer than the positive.

    Args:
        embeddings: (M, D) embeddings of the batch; only their distances are used (no gradient).
        identity: (M,) integer identity per embedding; equal identities make positives.
        mining: ``random``, ``hard`` or ``semihard``.
        margin: the semihard window; use the loss's margin.
        generator: random source for the random draws (default: torch's global one).

    Returns:
        Three (T,) int64 index tensors into ``embeddings``, anchors in ascending order.
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
    anchor, positive = is_positive.nonzero(as_tuple=True)
    negative = torch.empty_like(anchor)
    usable = torch.zeros_like(anchor, dtype=torch.bool)
    step = max(1, _CHUNK_ELEMENTS // max(count, 1))
    for start in range(0, len(anchor), step):
        rows = slice(start, start + step)
        a, p = anchor[rows], positive[rows]
        negative[rows], usable[rows] = _negatives(
            distance[a], ~same[a], distance[a, p], mining, margin, generator
        )
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
