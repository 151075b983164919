"""The supervised baseline: its loss is the right cross-entropy, and it trains and evaluates."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sslkit.methods import Supervised
from sslkit.models import ConvNet
from sslkit.train import train
from tests.conftest import TINY


def _model(num_classes: int, multilabel: bool = False) -> Supervised:
    torch.manual_seed(0)
    return Supervised(
        ConvNet(widths=[8]),
        num_classes=num_classes,
        multilabel=multilabel,
        online_probe=False,
        optimizer=partial(torch.optim.SGD),
    ).eval()


def test_single_label_loss_is_cross_entropy_over_every_view():
    model = _model(num_classes=4)
    views = [torch.randn(5, 3, 16, 16), torch.randn(5, 3, 16, 16)]
    labels = torch.tensor([0, 3, 1, 1, 2])
    loss = model.training_step((views, labels), 0)
    logits = torch.cat([model.classifier(model.backbone(v)) for v in views])
    expected = F.cross_entropy(logits, torch.cat([labels, labels]))
    torch.testing.assert_close(loss, expected)


def test_multilabel_loss_is_binary_cross_entropy_on_multi_hot_targets():
    model = _model(num_classes=3, multilabel=True)
    views = [torch.randn(4, 3, 16, 16)]
    targets = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    loss = model.training_step((views, targets), 0)
    logits = model.classifier(model.backbone(views[0]))
    expected = -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)).mean()
    torch.testing.assert_close(loss, expected)


def test_unlabelled_images_fail_clearly():
    model = _model(num_classes=4)
    views = [torch.randn(3, 3, 16, 16)]
    with pytest.raises(ValueError, match="Supervised needs a class label for every training"):
        model.training_step((views, torch.tensor([0, -1, 2])), 0)


def test_supervised_trains_and_goes_through_the_same_evaluation(hydra_run, tmp_path: Path):
    cfg = hydra_run(
        "train",
        [*TINY, "method=supervised", "augment=supervised", "trainer.max_epochs=2", "baselines=[]"],
    )
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == "Supervised"
    assert {"knn/top1@20", "linear/top1", "linear/macro_f1"} <= set(results["metrics"])
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_epoch", "train/top1"} <= set(header)
