"""The named evaluation protocols and the one function that runs them on cached features.

Every run, whatever its method, ends in :func:`run_protocols`, so every ``results.json``
holds the same metric keys computed the same way, together with the settings that
produced them. The protocol dataclasses are what ``conf/eval/*.yaml`` instantiate.
"""

from __future__ import annotations

import inspect
import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from sslkit.data.subsets import label_fraction_subset
from sslkit.eval.cache import SplitFeatures
from sslkit.eval.knn import WeightedKNN
from sslkit.eval.linear import fit_linear_probe, select_probe_settings
from sslkit.eval.metrics import check_labels, classification_metrics, multilabel_metrics
from sslkit.run.results import fraction_label

#: A label is predicted present when its score (probe sigmoid, kNN vote share) is >= this.
MULTILABEL_THRESHOLD = 0.5


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


def _probe_default(name: str) -> Any:
    return inspect.signature(fit_linear_probe).parameters[name].default


@dataclass
class LinearProtocol:
    """Linear probe on frozen features: see :func:`~sslkit.eval.linear.fit_linear_probe`.

    The probe settings (``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``seed``) default
    to those of ``fit_linear_probe``, where they are written: SGD momentum 0.9, cosine decay from
    ``lr=0.1`` over 100 epochs of batch 512, no weight decay.

    Args:
        label_fractions: Fractions of the training labels the probe is trained on, one result
            each (low-shot evaluation, as SimCLR's 1% / 10%): class-balanced, nested subsets
            fixed by ``seed`` (see :func:`~sslkit.data.subsets.label_fraction_subset`).
        lr_grid, weight_decay_grid: When either is non-empty, ``lr`` and ``weight_decay`` are
            chosen from their product (an empty grid keeps the fixed value) on a validation
            split of ``val_fraction`` carved from each training subset, never from the test
            split; the probe reported is then retrained on the whole subset.
    """

    epochs: int = _probe_default("epochs")
    batch_size: int = _probe_default("batch_size")
    lr: float = _probe_default("lr")
    weight_decay: float = _probe_default("weight_decay")
    seed: int = _probe_default("seed")
    label_fractions: list[float] = field(default_factory=lambda: [1.0])
    lr_grid: list[float] = field(default_factory=list)
    weight_decay_grid: list[float] = field(default_factory=list)
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        self.label_fractions = [float(f) for f in self.label_fractions]
        self.lr_grid = [float(v) for v in self.lr_grid]
        self.weight_decay_grid = [float(v) for v in self.weight_decay_grid]
        fractions = self.label_fractions
        if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
            raise ValueError(
                f"eval.linear.label_fractions must be a non-empty list of fractions in (0, 1], "
                f"got {fractions}"
            )
        if len({fraction_label(f) for f in fractions}) != len(fractions):
            raise ValueError(f"eval.linear.label_fractions has duplicates: {fractions}")
        if any(v <= 0 for v in self.lr_grid) or any(v < 0 for v in self.weight_decay_grid):
            raise ValueError(
                "eval.linear.lr_grid needs learning rates > 0 and weight_decay_grid values "
                f">= 0, got {self.lr_grid} and {self.weight_decay_grid}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"eval.linear.val_fraction must lie in (0, 1), got {self.val_fraction}"
            )

    @property
    def searches(self) -> bool:
        """Whether lr / weight decay are chosen on a validation split."""
        return bool(self.lr_grid or self.weight_decay_grid)

    def grid(self) -> list[tuple[float, float]]:
        """Every ``(lr, weight_decay)`` pair tried when :attr:`searches`."""
        return list(
            itertools.product(
                self.lr_grid or [self.lr], self.weight_decay_grid or [self.weight_decay]
            )
        )

    def probe_settings(self) -> dict:
        """The keyword arguments of :func:`~sslkit.eval.linear.fit_linear_probe` it fixes."""
        return {name: getattr(self, name) for name in PROBE_SETTINGS}


#: The LinearProtocol fields that are fit_linear_probe arguments.
PROBE_SETTINGS = ("epochs", "batch_size", "lr", "weight_decay", "seed")


@dataclass
class ProtocolResult:
    """Outcome of :func:`run_protocols`, ready to be written to ``results.json``.

    Attributes:
        metrics: Flat ``{"knn/top1@20": 0.91, "linear/macro_f1": 0.88, ...}`` floats in
            [0, 1] (see :func:`run_protocols` for the keys), ready for a logger's summary; the
            evaluation adds the label-free ``rankme``, an effective rank between 1 and the
            feature dimension (:mod:`sslkit.eval.rankme`).
        per_class: ``{"knn@20": [...], "linear": [...], "linear@10%": [...]}``, one dict per
            class in class order with precision, recall, f1, support (and ap for multi-label).
        protocol: Every setting the numbers depend on, so a result documents itself; its
            ``settings`` entry maps each result name (the keys of ``per_class``) to the exact
            settings of the metrics ``<protocol>/<metric>[@<suffix>]`` it produced.
        timings: Seconds spent in each protocol (``knn``, ``linear``), metrics included.
        scores: Test-set scores ``(N_test, num_classes)`` per result name, for plots; not
            written to ``results.json``.
        knn_index: The kNN protocol's index of the training features (None without kNN), for
            plots that show neighbours; not written to ``results.json``.
    """

    metrics: dict[str, float]
    per_class: dict[str, list[dict]]
    protocol: dict
    timings: dict[str, float]
    scores: dict[str, Tensor] = field(default_factory=dict, repr=False)
    knn_index: WeightedKNN | None = field(default=None, repr=False)


def empty_result(
    train_features: Tensor, test_features: Tensor, num_classes: int, multilabel: bool
) -> ProtocolResult:
    """A result without metrics yet: the splits' sizes and the feature width, which every
    protocol's result carries (the fine-tuning alone starts from it)."""
    return ProtocolResult(
        metrics={},
        per_class={},
        protocol={
            "feature_dim": train_features.shape[1],
            "num_train": train_features.shape[0],
            "num_test": test_features.shape[0],
            "num_classes": num_classes,
            "multilabel": multilabel,
            **({"threshold": MULTILABEL_THRESHOLD} if multilabel else {}),
            "settings": {},
        },
        timings={},
    )


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
        linear/{top1,top5,macro_precision,macro_recall,macro_f1}    label fraction 1
        linear/{top1,...}@{p}%     for each other label fraction, e.g. linear/top1@10%

    multi-label (thresholded metrics at ``protocol["threshold"]``)::

        knn/{mAP,micro_f1,macro_f1,macro_precision,macro_recall}@{k}
        linear/{mAP,micro_f1,macro_f1,macro_precision,macro_recall}[@{p}%]

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
            return multilabel_metrics(scores, test_labels, threshold=MULTILABEL_THRESHOLD)
        return classification_metrics(scores, test_labels, num_classes)

    result = empty_result(train_features, test_features, num_classes, multilabel)

    def record(name: str, suffix: str, scores: Tensor, settings: dict) -> None:
        metrics = score(scores)
        metrics.pop("threshold", None)
        result.per_class[f"{name}{suffix}"] = metrics.pop("per_class")
        result.scores[f"{name}{suffix}"] = scores
        if multilabel:
            settings["threshold"] = MULTILABEL_THRESHOLD
        result.protocol["settings"][f"{name}{suffix}"] = {"protocol": name, **settings}
        result.metrics.update({f"{name}/{key}{suffix}": value for key, value in metrics.items()})

    if knn is not None:
        start = time.perf_counter()
        classifier = WeightedKNN(train_features, train_labels, num_classes=num_classes)
        result.knn_index = classifier
        scores = classifier.predict_each_k(test_features, ks=knn.k, temperature=knn.temperature)
        for k, k_scores in scores.items():
            settings = {
                "k": k,
                "k_effective": min(k, classifier.num_train),
                "temperature": knn.temperature,
                "num_train": classifier.num_train,
            }
            record("knn", f"@{k}", k_scores, settings)
        result.timings["knn"] = time.perf_counter() - start
        result.protocol["knn"] = asdict(knn) | {
            "k_effective": [min(k, classifier.num_train) for k in knn.k]
        }

    if linear is not None:
        start = time.perf_counter()
        for fraction in linear.label_fractions:
            subset = label_fraction_subset(train_labels, fraction, seed=linear.seed)
            settings = linear.probe_settings()
            if linear.searches:
                selection = select_probe_settings(
                    train_features[subset],
                    train_labels[subset],
                    grid=linear.grid(),
                    val_fraction=linear.val_fraction,
                    num_classes=num_classes,
                    multilabel=multilabel,
                    device=device,
                    epochs=linear.epochs,
                    batch_size=linear.batch_size,
                    seed=linear.seed,
                )
                settings.update(lr=selection["lr"], weight_decay=selection["weight_decay"])
            probe = fit_linear_probe(
                train_features[subset],
                train_labels[subset],
                num_classes=num_classes,
                multilabel=multilabel,
                device=device,
                **settings,
            )
            settings.update(label_fraction=fraction, num_train=len(subset))
            if linear.searches:
                settings["selection"] = selection
            suffix = "" if fraction == 1.0 else f"@{fraction_label(fraction)}"
            record("linear", suffix, probe.scores(test_features), settings)
        result.timings["linear"] = time.perf_counter() - start
        result.protocol["linear"] = asdict(linear)
    return result


def run_protocols_on_splits(
    features: SplitFeatures,
    datamodule: Any,
    *,
    knn: KNNProtocol | None,
    linear: LinearProtocol | None,
    device: str | torch.device = "cpu",
) -> ProtocolResult:
    """:func:`run_protocols` on the train/test features of ``datamodule``'s splits."""
    return run_protocols(
        features.train_features,
        features.train_labels,
        features.test_features,
        features.test_labels,
        num_classes=datamodule.num_classes,
        multilabel=datamodule.multilabel,
        knn=knn,
        linear=linear,
        device=device,
    )
