"""Pairwise and triplet methods: every positives/mining mode trains, and misuse fails clearly."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException

from sslkit.build import build_datamodule, build_method
from sslkit.data import SyntheticShapes
from sslkit.data.sources.base import UNLABELED, ArrayDataset
from sslkit.methods import PairwiseContrastive, Triplet
from sslkit.models import ConvNet
from sslkit.train import train
from tests.conftest import TINY

MARGIN_LOGS = (
    "train/loss",
    "train/mined_fraction",
    "train/active_fraction",
    "train/positive_distance",
    "train/negative_distance",
)


class UnlabelledShapes(SyntheticShapes):
    """The synthetic shapes with every training image unlabelled, like STL-10's extra split."""

    def build(self, split: str) -> ArrayDataset:
        dataset = super().build(split)
        if split == "train":
            return ArrayDataset(dataset.images, [UNLABELED] * len(dataset))
        return dataset


@pytest.mark.parametrize(
    ("method", "positives", "mining", "expected"),
    [
        ("pairwise", "views", "hard", PairwiseContrastive),
        ("pairwise", "labels", "semihard", PairwiseContrastive),
        ("triplet", "views", "random", Triplet),
        ("triplet", "labels", "hard", Triplet),
    ],
)
def test_training_step_updates_the_backbone(hydra_run, method, positives, mining, expected):
    cfg = hydra_run(
        "train",
        [*TINY, f"method={method}", f"method.positives={positives}", f"method.mining={mining}"],
    )
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    model = build_method(cfg, datamodule)
    assert isinstance(model, expected)
    assert (model.positives, model.mining, model.normalize) == (positives, mining, True)
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    loss = model.training_step(batch, 0)
    assert loss.ndim == 0 and math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (["method=pairwise", "method.mining=random"], "PairwiseContrastive"),
        (["method=triplet", "method.positives=labels", "method.mining=semihard"], "Triplet"),
    ],
)
def test_fit_logs_margin_diagnostics_and_evaluates(hydra_run, tmp_path: Path, overrides, name):
    train(hydra_run("train", [*TINY, *overrides, "baselines=[]"]))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == name
    assert {"knn/top1@5", "knn/top1@20", "linear/top1"} <= set(results["metrics"])
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in MARGIN_LOGS:
        assert f"{key}_epoch" in header


def test_collapsed_embeddings_give_zero_loss_not_nan():
    # All-zero weights make every embedding the same, so semihard mining finds no triplet.
    model = Triplet(ConvNet(widths=[8]), mining="semihard", optimizer=partial(torch.optim.SGD))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    views = [torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)]
    loss = model.training_step((views, torch.zeros(6, dtype=torch.long)), 0)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None for p in model.projector.parameters())


def test_labels_mode_on_an_unlabelled_dataset_fails_clearly(hydra_run):
    cfg = hydra_run(
        "train",
        [
            *TINY,
            "method=triplet",
            "method.positives=labels",
            f"data.source._target_={UnlabelledShapes.__module__}.UnlabelledShapes",
            "baselines=[]",
        ],
    )
    with pytest.raises(ValueError, match=r"positives=labels needs a class label for every") as info:
        train(cfg)
    assert "32 of the 32 images in this batch are unlabelled" in str(info.value)
    assert "method.positives=views" in str(info.value)


def test_views_mode_needs_two_views(hydra_run):
    cfg = hydra_run("train", [*TINY, "method=pairwise", "augment=supervised"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    model = build_method(cfg, datamodule)
    with pytest.raises(ValueError, match="at least 2 augmented views .* use augment=simclr"):
        model.training_step(
            datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0), 0
        )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.positives=classes", "method.positives='classes' is not known"),
        ("method.mining=hardest", "unknown mining 'hardest'"),
        ("method.margin=0", "method.margin must be > 0"),
        ("method=pairwise method.positive_margin=1.5", r"positive_margin must lie in \[0, "),
        ("method=pairwise method.positive_margin=-0.1", r"positive_margin must lie in \[0, "),
    ],
)
def test_bad_settings_fail_when_the_method_is_built(hydra_run, override, message):
    overrides = override.split() if override.startswith("method=") else ["method=triplet", override]
    cfg = hydra_run("train", [*TINY, *overrides])
    datamodule = build_datamodule(cfg)
    with pytest.raises(InstantiationException, match=message):
        build_method(cfg, datamodule)


def test_labels_mode_refuses_multilabel_data():
    with pytest.raises(ValueError, match="needs single-label classes"):
        PairwiseContrastive(
            ConvNet(widths=[8]),
            positives="labels",
            multilabel=True,
            num_classes=3,
            optimizer=partial(torch.optim.SGD),
        )
