"""Seeded, class-balanced subsets of a labelled set: held-out test splits, capped splits,
low-shot label fractions and validation hold-outs.

Every subset depends only on the labels and a seed, never on images or features, so every
method compared sees the same images. This is the one place where images are chosen by class;
the training order of the chosen images is :mod:`sslkit.data.sampling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def seeded_class_orders(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """The indices of every class (in class order), each in a random order fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)]


def stratified_split(
    targets: Sequence[int], test_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic per-class train/test split of indices.

    Every class with at least two images keeps at least one on each side, so both splits
    cover the classes that can be covered.
    """
    train, test = [], []
    for members in seeded_class_orders(np.asarray(targets), seed):
        n_test = round(len(members) * test_fraction)
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) >= 2 else 0
        test.extend(members[:n_test].tolist())
        train.extend(members[n_test:].tolist())
    return sorted(train), sorted(test)


def balanced_subset(targets: Sequence[Any], size: int, seed: int) -> list[int]:
    """``size`` indices spread evenly over the classes (round robin), fixed by ``seed``.

    Classes are visited in turn, each contributing its next image in a seeded random order,
    so a subset is as class-balanced as the data allows and a larger ``size`` extends a
    smaller one. Multi-label or unlabelled targets fall back to a seeded random subset.
    """
    labels = np.asarray(targets)
    if labels.ndim != 1:
        rng = np.random.default_rng(seed)
        return sorted(rng.permutation(len(labels))[:size].tolist())
    queues = [list(members) for members in seeded_class_orders(labels, seed)]
    chosen: list[int] = []
    while len(chosen) < size and any(queues):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(int(queue.pop(0)))
    return sorted(chosen)


def label_fraction_subset(labels: Tensor, fraction: float, *, seed: int) -> Tensor:
    """Sorted indices of a class-balanced subset holding ``fraction`` of the labelled samples.

    Semi-supervised protocols (SimCLR, VISSL) train the linear probe on 1% or 10% of the
    labels. Single-label ``(N,)`` class ids: every class keeps ``round(fraction * n_c)`` of its
    ``n_c`` samples, at least one (stratified, as ImageNet's 1% and 10% subsets), drawn in
    a seeded random order of each class. Multi-label ``(N, C)`` multi-hot labels: the first
    ``round(fraction * N)`` samples (at least one) of a seeded random order, plus, for every
    class that has a positive but none in that prefix, its first positive in the same order,
    so that every label keeps at least one example.

    The order depends only on ``seed`` and the labels, so a smaller fraction's subset is
    contained in a larger one's (a curve over fractions adds labels rather than swapping
    them), and ``fraction=1`` is the whole set.
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
