"""Classification metrics of score matrices, in pure torch.

Both protocols (kNN and linear probe) produce a ``(N, num_classes)`` score matrix; these
functions turn it into the named metrics written to ``results.json``. They follow
scikit-learn's definitions (``zero_division=0``) so numbers can be checked against it, but
need nothing beyond torch at runtime.
"""

from __future__ import annotations

import torch
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

    confusion = confusion_matrix(predictions, targets, num_classes)
    true_positives = confusion.diagonal()
    precision, recall, f1 = _precision_recall_f1(
        true_positives, predicted=confusion.sum(dim=0), support=confusion.sum(dim=1)
    )
    metrics: dict = {"top1": (predictions == targets).double().mean().item()}
    if num_classes > 5:
        metrics["top5"] = top_k_accuracy(scores, targets, k=5)
    metrics.update(
        macro_precision=precision.mean().item(),
        macro_recall=recall.mean().item(),
        macro_f1=f1.mean().item(),
        per_class=_per_class(precision, recall, f1, support=confusion.sum(dim=1)),
    )
    return metrics


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``(num_classes, num_classes)`` counts: row = true class, column = predicted class."""
    return torch.bincount(
        targets.long() * num_classes + predictions.long(), minlength=num_classes * num_classes
    ).view(num_classes, num_classes)


def top_k_accuracy(scores: Tensor, targets: Tensor, k: int) -> float:
    """Fraction of samples whose true class is among the k best-scored, ties counting against.

    A sample is a hit when fewer than k other classes score at least as high as its true
    class: a deterministic rule that does not depend on how a sort orders equal scores.
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
    scores = scores.detach().cpu().double()
    positives = targets.detach().cpu() > 0
    predicted = scores >= threshold

    true_positives = (predicted & positives).sum(dim=0)
    support = positives.sum(dim=0)
    precision, recall, f1 = _precision_recall_f1(
        true_positives, predicted=predicted.sum(dim=0), support=support
    )
    pooled_tp = true_positives.sum().item()
    pooled_denominator = predicted.sum().item() + support.sum().item()
    ap = average_precision(scores, positives)
    has_positive = support > 0
    per_class = _per_class(precision, recall, f1, support)
    for row, value, valid in zip(per_class, ap.tolist(), has_positive.tolist(), strict=True):
        row["ap"] = value if valid else None
    return {
        "mAP": ap[has_positive].mean().item() if has_positive.any() else float("nan"),
        "micro_f1": 2 * pooled_tp / pooled_denominator if pooled_denominator else 0.0,
        "macro_precision": precision.mean().item(),
        "macro_recall": recall.mean().item(),
        "macro_f1": f1.mean().item(),
        "per_class": per_class,
        "threshold": float(threshold),
    }


def average_precision(scores: Tensor, positives: Tensor) -> Tensor:
    """Per-column average precision ``(C,)`` of ``(N, C)`` scores and boolean positives.

    Samples with equal scores form one threshold, so each positive contributes the precision
    reached at the end of its tie group; the sum is divided by the number of positives.
    Columns without positives give 0 (callers decide whether to exclude them).
    """
    n = scores.shape[0]
    order = scores.argsort(dim=0, descending=True, stable=True)
    sorted_scores = scores.gather(0, order)
    sorted_positives = positives.gather(0, order).double()
    precision_at = sorted_positives.cumsum(dim=0) / torch.arange(
        1, n + 1, dtype=torch.float64
    ).unsqueeze(1)
    positions = torch.arange(n).unsqueeze(1).expand_as(sorted_scores)
    group_end = torch.ones_like(sorted_scores, dtype=torch.bool)
    group_end[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    # Index of the last sample of each sample's tie group: running min from the bottom.
    end_of_group = torch.where(group_end, positions, n).flip(0).cummin(dim=0).values.flip(0)
    precision_at_threshold = precision_at.gather(0, end_of_group)
    num_positives = sorted_positives.sum(dim=0)
    summed = (sorted_positives * precision_at_threshold).sum(dim=0)
    return torch.where(num_positives > 0, summed / num_positives.clamp(min=1), 0.0)


def _precision_recall_f1(
    true_positives: Tensor, *, predicted: Tensor, support: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class precision, recall and F1 from counts, 0 where a denominator is 0."""
    tp = true_positives.double()
    precision = tp / predicted.clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1_denominator = predicted + support
    f1 = 2 * tp / f1_denominator.clamp(min=1)
    return precision, recall, f1


def _per_class(precision: Tensor, recall: Tensor, f1: Tensor, support: Tensor) -> list[dict]:
    return [
        {"precision": p, "recall": r, "f1": f, "support": int(s)}
        for p, r, f, s in zip(
            precision.tolist(), recall.tolist(), f1.tolist(), support.tolist(), strict=True
        )
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
