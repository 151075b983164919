"""Weighted k-nearest-neighbour classification of frozen features (DINO's kNN protocol).

Features are L2-normalised, so the inner-product index of faiss returns cosine
similarities; every one of the k most similar training samples votes for its label with
weight ``exp(similarity / temperature)``. The classifier has no trainable parameter, which
makes it the cheapest and least tunable read-out of an encoder's feature space.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sslkit.eval.metrics import check_labels

#: Upper bound on the elements of the (queries, k, num_classes) multi-hot gather in one chunk.
_MULTILABEL_GATHER_BUDGET = 1 << 24


class WeightedKNN:
    """A faiss index over L2-normalised training features and their labels.

    Build it once and query it for several k: the neighbours are searched once for the
    largest k and every smaller k reuses the best-ranked prefix, which is what makes the
    protocol's k=20 and k=200 cost one search.

    Single-label: ``train_labels`` is ``(N,)`` integer class ids and the score of a class is
    the summed weight of the neighbours that carry it (unnormalised, as in DINO).
    Multi-label: ``train_labels`` is ``(N, num_classes)`` multi-hot, every neighbour votes its
    weight for each label it carries and scores are divided by the summed neighbour weight,
    so each score is the weighted fraction of neighbours carrying the label, in [0, 1].
    """

    def __init__(self, train_features: Tensor, train_labels: Tensor, *, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if train_features.ndim != 2:
            raise ValueError(
                f"train_features must be 2-D (N, D), got shape {tuple(train_features.shape)}"
            )
        if train_features.shape[0] == 0:
            raise ValueError("train_features is empty: the kNN classifier needs training samples")
        self.num_classes = num_classes
        self.multilabel = train_labels.ndim == 2
        self.train_labels = check_labels(
            train_labels,
            num_samples=train_features.shape[0],
            num_classes=num_classes,
            multilabel=self.multilabel,
            name="train_labels",
        )
        self.dim = train_features.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(_normalised_numpy(train_features))

    @property
    def num_train(self) -> int:
        """Number of training samples in the index (the largest usable k)."""
        return self.index.ntotal

    def predict(self, test_features: Tensor, *, k: int, temperature: float) -> Tensor:
        """Vote scores ``(N_test, num_classes)`` of the k nearest training samples."""
        return self.predict_each_k(test_features, ks=[k], temperature=temperature)[k]

    def predict_each_k(
        self,
        test_features: Tensor,
        *,
        ks: Sequence[int],
        temperature: float,
        chunk_size: int = 4096,
    ) -> dict[int, Tensor]:
        """Vote scores for several k from a single neighbour search.

        Args:
            test_features: ``(N_test, D)`` query features, normalised here.
            ks: Numbers of neighbours; each k larger than the training set is clipped to it
                (the result stays keyed by the requested k).
            temperature: Positive temperature of the weights ``exp(similarity / T)``.
            chunk_size: Queries searched at once, which bounds memory on large test sets.

        Returns:
            ``{k: (N_test, num_classes) float32 CPU scores}``.
        """
        if not ks:
            raise ValueError("ks is empty: pass at least one number of neighbours")
        if any(k < 1 for k in ks):
            raise ValueError(f"every k must be >= 1, got {list(ks)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if test_features.ndim != 2 or test_features.shape[1] != self.dim:
            raise ValueError(
                f"test_features must be (N_test, {self.dim}) like the training features, "
                f"got shape {tuple(test_features.shape)}"
            )
        effective = {k: min(k, self.num_train) for k in ks}
        k_max = max(effective.values())
        if self.multilabel:
            rows = _MULTILABEL_GATHER_BUDGET // (k_max * self.num_classes)
            chunk_size = max(1, min(chunk_size, rows))
        parts: dict[int, list[Tensor]] = {k: [] for k in ks}
        for start in range(0, test_features.shape[0], chunk_size):
            similarities, indices = self.neighbours(
                test_features[start : start + chunk_size], k=k_max
            )
            for k, k_eff in effective.items():
                parts[k].append(
                    self._vote(similarities[:, :k_eff], indices[:, :k_eff], temperature)
                )
        empty = torch.zeros(0, self.num_classes)
        return {k: torch.cat(chunks) if chunks else empty for k, chunks in parts.items()}

    def neighbours(self, test_features: Tensor, *, k: int) -> tuple[Tensor, Tensor]:
        """Cosine similarities and indices ``(N_test, k)`` of the k most similar training
        samples of each query, most similar first (k is clipped to the training set)."""
        similarities, indices = self.index.search(
            _normalised_numpy(test_features), min(k, self.num_train)
        )
        return torch.from_numpy(similarities), torch.from_numpy(indices)

    def _vote(self, similarities: Tensor, indices: Tensor, temperature: float) -> Tensor:
        neighbour_labels = self.train_labels[indices]
        if self.multilabel:
            # The normalisation cancels any common factor, so measure from the nearest
            # neighbour (the first column) to keep exp() finite at small temperatures.
            weights = ((similarities - similarities[:, :1]) / temperature).exp()
            scores = torch.bmm(weights.unsqueeze(1), neighbour_labels).squeeze(1)
            return scores / weights.sum(dim=1, keepdim=True)
        weights = (similarities / temperature).exp()
        scores = torch.zeros(weights.shape[0], self.num_classes)
        return scores.scatter_add_(1, neighbour_labels, weights)


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    num_classes: int,
    k: int,
    temperature: float,
) -> Tensor:
    """Weighted kNN vote scores ``(N_test, num_classes)`` of test features (DINO's kNN).

    Every feature is L2-normalised; each test sample's k most cosine-similar training
    samples vote ``exp(similarity / temperature)`` for their label, and k larger than the
    training set is clipped to it (the protocol's k and T are
    :class:`~sslkit.eval.KNNProtocol`'s). ``train_labels`` of shape ``(N,)`` holds class ids
    (scores are summed weights; argmax is the prediction); of shape ``(N, num_classes)`` it is
    multi-hot (scores are weighted label frequencies in [0, 1]). See :class:`WeightedKNN`.
    """
    knn = WeightedKNN(train_features, train_labels, num_classes=num_classes)
    return knn.predict(test_features, k=k, temperature=temperature)


def _normalised_numpy(features: Tensor) -> np.ndarray:
    normalised = F.normalize(features.detach().to("cpu", torch.float32), dim=1)
    return np.ascontiguousarray(normalised.numpy(), dtype=np.float32)
