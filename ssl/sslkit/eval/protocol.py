"""The named evaluation protocols and the one function that runs them on cached features.

Every run, whatever its method, ends in :func:`run_protocols`, so every ``results.json``
holds the same metric keys computed the same way, together with the settings that
produced them. The protocol dataclasses are what ``conf/eval/*.yaml`` instantiate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from sslkit.eval.knn import WeightedKNN
from sslkit.eval.linear import fit_linear_probe
from sslkit.eval.metrics import check_labels, classification_metrics, multilabel_metrics


@dataclass
class KNNProtocol:
    """Weighted kNN (DINO): cosine top-k on L2-normalised features, votes ``exp(sim / T)``.

    Args:
        k: Numbers of neighbours, each reported separately (k=20 and k=200 by default, the
            two values of DINO's table); one neighbour search serves all of them.
        temperature: Temperature of the vote weights; lower trusts the closest neighbours more.
    """

    k: list[int] = field(default_factory=lambda: [20, 200])
    temperature: float = 0.07

    def __post_init__(self) -> None:
        ks = [self.k] if isinstance(self.k, int) else self.k
        self.k = [int(k) for k in ks]
        if not self.k or min(self.k) < 1:
            raise ValueError(f"KNNProtocol.k must be a non-empty list of k >= 1, got {self.k}")
        if self.temperature <= 0:
            raise ValueError(f"KNNProtocol.temperature must be > 0, got {self.temperature}")


@dataclass
class LinearProtocol:
    """Linear probe on frozen features: see :func:`~sslkit.eval.linear.fit_linear_probe`.

    The defaults are those of ``fit_linear_probe``: SGD momentum 0.9, cosine decay from
    ``lr=0.1`` over 100 epochs of batch 512, no weight decay.
    """

    epochs: int = 100
    batch_size: int = 512
    lr: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class ProtocolResult:
    """Outcome of :func:`run_protocols`, ready to be written to ``results.json``.

    Attributes:
        metrics: Flat ``{"knn/top1@20": 0.91, "linear/macro_f1": 0.88, ...}`` floats in
            [0, 1] (see :func:`run_protocols` for the keys), ready for a logger's summary.
        per_class: ``{"knn@20": [...], "linear": [...]}``, one dict per class in class order
            with precision, recall, f1, support (and ap for multi-label).
        protocol: Every setting the numbers depend on, so a result documents itself.
        timings: Seconds spent in each protocol (``knn``, ``linear``), metrics included.
    """

    metrics: dict[str, float]
    per_class: dict[str, list[dict]]
    protocol: dict
    timings: dict[str, float]


def run_protocols(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    multilabel: bool = False,
    knn: KNNProtocol | None,
    linear: LinearProtocol | None,
    device: str | torch.device = "cpu",
) -> ProtocolResult:
    """Evaluate frozen features with the kNN and/or linear-probe protocol.

    Both protocols fit on the train split and are scored on the test split; pass ``None``
    for a protocol to skip it. Labels are ``(N,)`` class ids, or ``(N, num_classes)``
    multi-hot with ``multilabel=True``.

    Metric keys, single-label (``top5`` only when ``num_classes > 5``)::

        knn/{top1,top5,macro_precision,macro_recall,macro_f1}@{k}   for each k
        linear/{top1,top5,macro_precision,macro_recall,macro_f1}

    multi-label (thresholded metrics at ``protocol["threshold"]``)::

        knn/{mAP,micro_f1,macro_f1,macro_precision,macro_recall}@{k}
        linear/{mAP,micro_f1,macro_f1,macro_precision,macro_recall}

    The kNN always runs on the CPU (faiss); ``device`` is where the linear probe trains.
    """
    if knn is None and linear is None:
        raise ValueError("no protocol to run: pass a KNNProtocol and/or a LinearProtocol")
    for name, features in (("train_features", train_features), ("test_features", test_features)):
        if features.ndim != 2:
            raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(features.shape)}")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test features differ in dimension: {train_features.shape[1]} "
            f"vs {test_features.shape[1]}; were they extracted by the same encoder?"
        )
    train_labels, test_labels = (
        check_labels(
            labels,
            num_samples=features.shape[0],
            num_classes=num_classes,
            multilabel=multilabel,
            name=name,
        )
        for labels, features, name in (
            (train_labels, train_features, "train_labels"),
            (test_labels, test_features, "test_labels"),
        )
    )

    def score(scores: Tensor) -> dict:
        if multilabel:
            return multilabel_metrics(scores, test_labels)
        return classification_metrics(scores, test_labels, num_classes)

    result = ProtocolResult(
        metrics={},
        per_class={},
        protocol={
            "feature_dim": train_features.shape[1],
            "num_train": train_features.shape[0],
            "num_test": test_features.shape[0],
            "num_classes": num_classes,
            "multilabel": multilabel,
        },
        timings={},
    )

    def record(name: str, suffix: str, metrics: dict) -> None:
        result.per_class[f"{name}{suffix}"] = metrics.pop("per_class")
        threshold = metrics.pop("threshold", None)
        if threshold is not None:
            result.protocol["threshold"] = threshold
        result.metrics.update({f"{name}/{key}{suffix}": value for key, value in metrics.items()})

    if knn is not None:
        start = time.perf_counter()
        classifier = WeightedKNN(train_features, train_labels, num_classes=num_classes)
        scores = classifier.predict_each_k(test_features, ks=knn.k, temperature=knn.temperature)
        for k, k_scores in scores.items():
            record("knn", f"@{k}", score(k_scores))
        result.timings["knn"] = time.perf_counter() - start
        result.protocol["knn"] = asdict(knn) | {
            "k_effective": [min(k, classifier.num_train) for k in knn.k]
        }

    if linear is not None:
        start = time.perf_counter()
        probe = fit_linear_probe(
            train_features,
            train_labels,
            num_classes=num_classes,
            multilabel=multilabel,
            device=device,
            **asdict(linear),
        )
        record("linear", "", score(probe.scores(test_features)))
        result.timings["linear"] = time.perf_counter() - start
        result.protocol["linear"] = asdict(linear)
    return result
