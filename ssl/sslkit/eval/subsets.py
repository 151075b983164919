"""Labelled subsets of a training set: low-shot fractions and validation hold-outs.

Semi-supervised protocols (SimCLR, VISSL) train the linear probe on 1% or 10% of the labels;
the subsets must be the same for every method compared, so they depend only on the labels
and a seed, never on features. Subsets of one seed are nested: the 1% subset lies inside the
10% subset, which lies inside the full set, so a curve over fractions adds labels rather than
swapping them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fraction_label(fraction: float) -> str:
    """``0.01 -> "1%"``, ``0.1 -> "10%"``, ``0.125 -> "12.5%"``: the suffix of low-shot keys."""
    return f"{100 * fraction:g}%"


def label_fraction_subset(labels: Tensor, fraction: float, *, seed: int) -> Tensor:
    """Sorted indices of a class-balanced subset holding ``fraction`` of the labelled samples.

    Single-label ``(N,)`` class ids: every class keeps ``round(fraction * n_c)`` of its
    ``n_c`` samples, at least one (stratified, as ImageNet's 1% and 10% subsets), drawn in
    a seeded random order of each class. Multi-label ``(N, C)`` multi-hot labels: the first
    ``round(fraction * N)`` samples (at least one) of a seeded random order, plus, for every
    class that has a positive but none in that prefix, its first positive in the same order,
    so that every label keeps at least one example.

    The order depends only on ``seed`` and the labels, so a smaller fraction's subset is
    contained in a larger one's, and ``fraction=1`` is the whole set.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a label fraction must lie in (0, 1], got {fraction}")
    num_samples = labels.shape[0]
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))
    if fraction == 1.0:
        return torch.arange(num_samples)
    ordered = labels.detach().cpu()[order]
    if ordered.ndim == 2:
        positives = ordered > 0
        size = max(1, round(fraction * num_samples))
        chosen = torch.zeros(num_samples, dtype=torch.bool)
        chosen[:size] = True
        covered = positives[:size].any(dim=0)
        has_positive = positives.any(dim=0)
        first_positive = positives.double().argmax(dim=0)
        chosen[first_positive[has_positive & ~covered]] = True
        return order[chosen].sort().values
    parts = []
    for label in ordered.unique():
        members = order[ordered == label]
        parts.append(members[: max(1, round(fraction * len(members)))])
    return torch.cat(parts).sort().values


def holdout_split(labels: Tensor, fraction: float, *, seed: int) -> tuple[Tensor, Tensor]:
    """``(train, validation)`` index tensors: a class-balanced ``fraction`` held out.

    The validation part is :func:`label_fraction_subset` of the labels (so every class is
    represented in it) and the train part is the rest; both are sorted.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    validation = label_fraction_subset(labels, fraction, seed=seed)
    keep = torch.ones(labels.shape[0], dtype=torch.bool)
    keep[validation] = False
    return keep.nonzero().flatten(), validation
