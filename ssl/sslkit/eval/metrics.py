"""Classification metrics of score matrices.

Both protocols (kNN and linear probe) produce a ``(N, num_classes)`` score matrix; these
functions turn it into the named metrics written to ``results.json``. Precision, recall, F1,
average precision and the confusion matrix are scikit-learn's (``zero_division=0``); only the
top-5 accuracy is sslkit's own, for its deterministic handling of tied scores.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as skm
from torch import Tensor


def classification_metrics(scores: Tensor, targets: Tensor, num_classes: int) -> dict:
    """Single-label metrics of ``(N, num_classes)`` scores against ``(N,)`` class ids.

    The prediction is the argmax of the scores. Returns a dict with

    - ``top1``: accuracy of the prediction.
    - ``top5`` (only when ``num_classes > 5``): fraction of samples whose true class is among
      the five best-scored. Ties count against the sample: a class is in the top five when
      fewer than five *other* classes score at least as high, so classes with no kNN vote
      (score 0) are never counted as hits by accident of ordering.
    - ``macro_precision``, ``macro_recall``, ``macro_f1``: unweighted means over all
      ``num_classes`` classes (a class that is never predicted has precision 0, one absent
      from ``targets`` has recall 0), as scikit-learn's
      ``precision_recall_fscore_support(labels=range(num_classes), zero_division=0)``.
      Averaging over the fixed class list keeps the figure comparable between runs.
    - ``per_class``: one ``{precision, recall, f1, support}`` dict per class, in class order.

    All rates are floats in [0, 1]; ``support`` is the number of samples of the class.
    """
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(
            f"scores must be (N, num_classes={num_classes}), got shape {tuple(scores.shape)}"
        )
    if scores.shape[0] == 0:
        raise ValueError("classification_metrics needs at least one sample")
    targets = check_labels(
        targets,
        num_samples=scores.shape[0],
        num_classes=num_classes,
        multilabel=False,
        name="targets",
    )
    scores = scores.detach().cpu().float()
    predictions = scores.argmax(dim=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        targets.numpy(), predictions.numpy(), labels=range(num_classes), zero_division=0
    )
    metrics: dict = {"top1": (predictions == targets).double().mean().item()}
    if num_classes > 5:
        metrics["top5"] = top_k_accuracy(scores, targets, k=5)
    metrics.update(
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        per_class=_per_class(precision, recall, f1, support),
    )
    return metrics


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``(num_classes, num_classes)`` counts: row = true class, column = predicted class."""
    counts = skm.confusion_matrix(
        targets.cpu().numpy(), predictions.cpu().numpy(), labels=range(num_classes)
    )
    return torch.from_numpy(counts)


def top_k_accuracy(scores: Tensor, targets: Tensor, k: int) -> float:
    """Fraction of samples whose true class is among the k best-scored, ties counting against.

    A sample is a hit when fewer than k other classes score at least as high as its true
    class: a deterministic rule that does not depend on how a sort orders equal scores.
    scikit-learn's ``top_k_accuracy_score`` breaks ties by class index instead, so with kNN
    scores, where every class without a vote ties at 0, a true class with a high index and no
    vote counts as a hit there (e.g. scores ``[0.9, 0, 0, 0, 0, 0, 0]`` for a sample of class
    6 at k=5: a hit for scikit-learn, a miss here).
    """
    target_scores = scores.gather(1, targets.view(-1, 1))
    rivals = (scores >= target_scores).sum(dim=1) - 1
    return (rivals < k).double().mean().item()


def multilabel_metrics(scores: Tensor, targets: Tensor, threshold: float = 0.5) -> dict:
    """Multi-label metrics of ``(N, C)`` probability scores against ``(N, C)`` multi-hot targets.

    ``threshold``: a label is predicted when its score is ``>= threshold``. Scores are
    expected to be probabilities in [0, 1] (sigmoid outputs of the linear probe, weighted
    label frequencies of the kNN), so the default 0.5 predicts a label when it is more
    likely present than not. Only the thresholded metrics depend on it; ``mAP`` does not.

    Returns a dict with

    - ``mAP``: mean over the classes with at least one positive of the average precision
      ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, as scikit-learn's
      ``average_precision_score`` (NaN when no class has a positive).
    - ``micro_f1``: F1 of all (sample, class) decisions pooled.
    - ``macro_precision``, ``macro_recall``, ``macro_f1``: unweighted means over all C
      classes with ``zero_division=0``, as scikit-learn's ``average="macro"``.
    - ``per_class``: one ``{precision, recall, f1, support, ap}`` dict per class, in class
      order; ``support`` is the number of positives and ``ap`` is None without positives.
    - ``threshold``: the threshold used, so the result records its own setting.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (N, C), got shape {tuple(scores.shape)}")
    if targets.shape != scores.shape:
        raise ValueError(
            f"multi-hot targets must have the shape of scores {tuple(scores.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    if scores.shape[0] == 0:
        raise ValueError("multilabel_metrics needs at least one sample")
    scores = scores.detach().cpu().double().numpy()
    positives = (targets.detach().cpu() > 0).numpy()
    predicted = scores >= threshold
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        positives, predicted, average=None, zero_division=0
    )
    has_positive = support > 0
    ap = [
        float(skm.average_precision_score(positives[:, c], scores[:, c])) if valid else None
        for c, valid in enumerate(has_positive)
    ]
    per_class = _per_class(precision, recall, f1, support)
    for row, value in zip(per_class, ap, strict=True):
        row["ap"] = value
    valid_ap = [value for value in ap if value is not None]
    return {
        "mAP": float(np.mean(valid_ap)) if valid_ap else float("nan"),
        "micro_f1": float(skm.f1_score(positives, predicted, average="micro", zero_division=0)),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "threshold": float(threshold),
    }


def _per_class(
    precision: np.ndarray, recall: np.ndarray, f1: np.ndarray, support: np.ndarray
) -> list[dict]:
    return [
        {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for p, r, f, s in zip(precision, recall, f1, support, strict=True)
    ]


def check_labels(
    labels: Tensor, *, num_samples: int, num_classes: int, multilabel: bool, name: str
) -> Tensor:
    """Validate labels for ``num_samples`` samples and return them on the CPU.

    Class ids ``(N,)`` in ``[0, num_classes)`` come back as int64, multi-hot
    ``(N, num_classes)`` targets as float32. ``name`` is the argument named in the error.
    """
    labels = labels.detach().cpu()
    if multilabel:
        if labels.shape != (num_samples, num_classes):
            raise ValueError(
                f"multi-hot {name} must have shape (N, num_classes) = "
                f"({num_samples}, {num_classes}), got {tuple(labels.shape)}"
            )
        return labels.float()
    if labels.shape != (num_samples,) or labels.is_floating_point():
        hint = "; multi-hot labels need multilabel=True" if labels.ndim == 2 else ""
        raise ValueError(
            f"{name} must be ({num_samples},) integer class ids to match the features, "
            f"got shape {tuple(labels.shape)} of dtype {labels.dtype}{hint}"
        )
    if num_samples and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), "
            f"got values in [{labels.min().item()}, {labels.max().item()}]"
        )
    return labels.long()
