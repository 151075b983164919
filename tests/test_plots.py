"""The run plots on small inputs: what is drawn when, and that every file is a real image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.augment import simclr_views
from sslkit.data import SSLDataModule, SyntheticShapes
from sslkit.eval.cache import extract_split_features
from sslkit.eval.plots import embed_2d, plot_confusion_matrix, plot_curves, write_plots
from tests.test_monitor import assert_real_png


def test_curves_need_a_loss_or_a_monitor(tmp_path):
    assert plot_curves({}, tmp_path / "a.png") is None
    assert plot_curves({"lr-SGD": [[1, 0.1]]}, tmp_path / "b.png") is None
    path = plot_curves(
        {"train/loss": [[1, 2.0], [2, 1.5]], "monitor/knn_top1@20": [[2, 0.4]]}, tmp_path / "c.png"
    )
    assert_real_png(path)


def test_confusion_matrix_is_drawn_for_many_classes(tmp_path):
    scores = torch.randn(200, 40)
    targets = torch.randint(0, 40, (200,))
    names = [f"class {i}" for i in range(40)]
    assert_real_png(plot_confusion_matrix(scores, targets, names, tmp_path / "c.png", "probe"))


def test_embedding_is_seeded_and_two_dimensional():
    features = torch.randn(40, 16)
    first, method = embed_2d(features, seed=3)
    second, _ = embed_2d(features, seed=3)
    assert first.shape == (40, 2) and method in {"tsne", "umap"}
    np.testing.assert_allclose(first, second)


@pytest.fixture(scope="module")
def multilabel_module() -> SSLDataModule:
    source = SyntheticShapes(
        num_train=48, num_test=24, image_size=16, num_classes=5, multilabel=True
    )
    return SSLDataModule(source, augment=simclr_views, batch_size=8, eval_batch_size=24)


def test_multilabel_plots_skip_the_confusion_matrix(multilabel_module, tmp_path):
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 8))
    features = extract_split_features(encoder, multilabel_module, torch.device("cpu"))
    history = {"train/loss": [[1, 3.0], [2, 2.5]], "val/online_accuracy": [[1, 0.6], [2, 0.7]]}
    paths = write_plots(
        tmp_path / "plots",
        features=features,
        scores={"linear": torch.rand(24, 5)},
        datamodule=multilabel_module,
        history=history,
        max_points=20,
    )
    assert set(paths) == {"curves", "embedding", "retrieval"}
    for path in paths.values():
        assert_real_png(path)
    with Image.open(paths["embedding"]) as image:
        assert image.size[0] > image.size[1]  # room for the legend
    assert sorted(p.name for p in Path(tmp_path / "plots").iterdir()) == sorted(
        p.name for p in paths.values()
    )
