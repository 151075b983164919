import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from sslkit.eval import classification_metrics, multilabel_metrics


def _single_label_case(num_classes=10, n=300, seed=0):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, num_classes, (n,), generator=generator)
    targets[targets == 7] = 2  # class 7 is absent from the targets
    scores = torch.randn(n, num_classes, generator=generator) + 1.5 * torch.nn.functional.one_hot(
        targets, num_classes
    )
    scores[:, 3] -= 100.0  # class 3 is never predicted
    return scores, targets


def test_classification_metrics_match_sklearn_with_absent_and_unpredicted_classes():
    scores, targets = _single_label_case()
    metrics = classification_metrics(scores, targets, num_classes=10)
    y_true, y_pred = targets.numpy(), scores.argmax(dim=1).numpy()
    assert 3 not in y_pred and 7 not in y_true and 3 in y_true

    labels = list(range(10))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    macro = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    assert metrics["top1"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["top5"] == pytest.approx(
        top_k_accuracy_score(y_true, scores.numpy(), k=5, labels=labels)
    )
    assert metrics["macro_precision"] == pytest.approx(macro[0])
    assert metrics["macro_recall"] == pytest.approx(macro[1])
    assert metrics["macro_f1"] == pytest.approx(macro[2])
    assert [row["precision"] for row in metrics["per_class"]] == pytest.approx(precision)
    assert [row["recall"] for row in metrics["per_class"]] == pytest.approx(recall)
    assert [row["f1"] for row in metrics["per_class"]] == pytest.approx(f1)
    assert [row["support"] for row in metrics["per_class"]] == support.tolist()
    assert metrics["per_class"][3]["precision"] == 0.0
    assert metrics["per_class"][7] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_top5_is_reported_only_with_more_than_five_classes():
    scores, targets = _single_label_case(num_classes=5)
    metrics = classification_metrics(scores, targets, num_classes=5)
    assert "top5" not in metrics
    assert len(metrics["per_class"]) == 5


def test_top5_does_not_count_a_class_without_votes_as_a_hit():
    # kNN-like scores: only three classes got votes, the true class (index 8) got none.
    scores = torch.zeros(1, 10)
    scores[0, [1, 4, 6]] = torch.tensor([3.0, 2.0, 1.0])
    assert classification_metrics(scores, torch.tensor([8]), 10)["top5"] == 0.0
    assert classification_metrics(scores, torch.tensor([6]), 10)["top5"] == 1.0


def test_perfect_predictions_give_ones():
    targets = torch.arange(8).repeat(3)
    metrics = classification_metrics(torch.nn.functional.one_hot(targets, 8).float(), targets, 8)
    for key in ("top1", "top5", "macro_precision", "macro_recall", "macro_f1"):
        assert metrics[key] == 1.0


@pytest.mark.parametrize(
    ("scores", "targets", "message"),
    [
        (
            torch.zeros(4, 3),
            torch.zeros(4, dtype=torch.long),
            r"scores must be \(N, num_classes=5\)",
        ),
        (torch.zeros(4, 5), torch.zeros(3, dtype=torch.long), "targets must be"),
        (torch.zeros(4, 5), torch.full((4,), 5), r"must lie in \[0, 5\)"),
        (torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), "at least one sample"),
    ],
)
def test_classification_metrics_reject_bad_inputs(scores, targets, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(scores, targets, num_classes=5)


def _multilabel_case(n=120, num_classes=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, num_classes, generator=generator) < 0.3).float()
    targets[:, 5] = 0  # class 5 has no positive
    noisy = 0.6 * targets + 0.7 * torch.rand(n, num_classes, generator=generator)
    scores = (noisy.clamp(0, 1) * 10).round() / 10  # coarse scores: many tied thresholds
    return scores, targets


def test_multilabel_metrics_match_sklearn():
    scores, targets = _multilabel_case()
    metrics = multilabel_metrics(scores, targets, threshold=0.5)
    y_true, y_score = targets.numpy().astype(int), scores.numpy()
    y_pred = (y_score >= 0.5).astype(int)

    ap = [average_precision_score(y_true[:, c], y_score[:, c]) for c in range(5)]
    assert [row["ap"] for row in metrics["per_class"][:5]] == pytest.approx(ap)
    assert metrics["per_class"][5]["ap"] is None
    assert metrics["mAP"] == pytest.approx(np.mean(ap))
    assert metrics["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, zero_division=0
    )
    assert metrics["macro_precision"] == pytest.approx(precision.mean())
    assert metrics["macro_recall"] == pytest.approx(recall.mean())
    assert [row["f1"] for row in metrics["per_class"]] == pytest.approx(f1)
    assert [row["support"] for row in metrics["per_class"]] == support.tolist()
    assert metrics["threshold"] == 0.5


def test_threshold_changes_only_the_thresholded_metrics():
    scores, targets = _multilabel_case(seed=1)
    low = multilabel_metrics(scores, targets, threshold=0.2)
    high = multilabel_metrics(scores, targets, threshold=0.8)
    assert low["mAP"] == high["mAP"]
    assert low["macro_recall"] > high["macro_recall"]
    assert high["threshold"] == 0.8


def test_average_precision_is_one_for_a_perfect_ranking():
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.1, 0.3], [0.2, 0.6]])
    metrics = multilabel_metrics(scores, targets)
    assert metrics["mAP"] == 1.0
    assert metrics["micro_f1"] == 1.0


def test_map_is_nan_without_any_positive():
    assert math.isnan(multilabel_metrics(torch.rand(4, 3), torch.zeros(4, 3))["mAP"])


def test_multilabel_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="must have the shape of scores"):
        multilabel_metrics(torch.rand(4, 3), torch.zeros(4, 2))
