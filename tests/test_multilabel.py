"""Multi-label data end to end: synthetic shapes, CSV image folders, loaders, metrics, results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score

from sslkit.augment import simclr_views
from sslkit.data import (
    CorruptDataError,
    DatasetNotFoundError,
    ImageFolder,
    SSLDataModule,
    SyntheticShapes,
)
from sslkit.eval import KNNProtocol, LinearProtocol, run_protocols
from sslkit.train import train
from tests.conftest import TINY


def _shapes(**kwargs) -> SyntheticShapes:
    settings = {"num_train": 90, "num_test": 30, "image_size": 16, "num_classes": 6}
    return SyntheticShapes(**{**settings, "multilabel": True, **kwargs})


def test_synthetic_multilabel_targets_are_the_shapes_present():
    source = _shapes(max_shapes_per_image=3)
    assert source.multilabel and source.grid == 2
    for split in ("train", "test"):
        targets = source.build(split).targets
        assert targets.dtype == np.float32 and set(np.unique(targets)) == {0.0, 1.0}
        assert targets.shape == (90 if split == "train" else 30, 6)
        assert set(targets.sum(axis=1).astype(int)) == {1, 2, 3}
        assert (targets.sum(axis=0) >= 5).all()  # every class is the first shape of 1/6
    image, label = source.build("train")[3]
    assert image.size == (16, 16) and image.mode == "RGB"
    assert label.dtype == torch.float32 and torch.equal(
        label, torch.from_numpy(source.build("train").targets[3])
    )
    again = _shapes(max_shapes_per_image=3).build("train")
    np.testing.assert_array_equal(again.images, source.build("train").images)
    np.testing.assert_array_equal(again.targets, source.build("train").targets)


def test_more_shapes_cover_more_of_the_image():
    source = _shapes(num_train=300, image_size=32, max_shapes_per_image=4)
    train = source.build("train")
    images = train.images.astype(float)
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]].mean(1, keepdims=True)
    covered = (np.abs(images - corners[:, None]).max(-1) > 40).mean((1, 2))
    counts = train.targets.sum(axis=1)
    assert covered[counts == 4].mean() > 1.5 * covered[counts == 1].mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_shapes_per_image": 7}, "between 1 and num_classes=6"),
        ({"max_shapes_per_image": 5, "image_size": 16}, "image_size >= 24"),
    ],
)
def test_synthetic_multilabel_rejects_impossible_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _shapes(**kwargs)


def _write_images(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 10), color=(20 * i, 0, 0)).save(root / name)


def test_image_folder_reads_a_multilabel_csv(tmp_path):
    names = [f"img/{i}.png" for i in range(10)]
    _write_images(tmp_path, names)
    labels = ["cat;dog", "dog", "", "fox; cat", "cat"] * 2
    rows = ["path,labels"] + [f"{n},{lab}" for n, lab in zip(names, labels, strict=True)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    source = ImageFolder(
        str(tmp_path), labels_csv=str(tmp_path / "labels.csv"), test_fraction=0.3, image_size=8
    )
    assert source.multilabel and source.class_names == ["cat", "dog", "fox"]
    train, test = source.build("train"), source.build("test")
    assert (len(train), len(test)) == (7, 3)
    assert not set(train.files) & set(test.files)
    expected = {
        tmp_path / n: [float(c in lab.replace(" ", "").split(";")) for c in ("cat", "dog", "fox")]
        for n, lab in zip(names, labels, strict=True)
    }
    for dataset in (train, test):
        for file, row in zip(dataset.files, dataset.targets, strict=True):
            assert row.tolist() == expected[file]
    image, label = train[0]
    assert min(image.size) == 8 and label.shape == (3,)


def test_image_folder_csv_errors_name_the_problem(tmp_path):
    _write_images(tmp_path, ["a.png", "b.png"])
    csv = tmp_path / "train.csv"
    csv.write_text("a.png,cat\nb.png,dog\n")
    (tmp_path / "test.csv").write_text("a.png,wolf\n")
    source = ImageFolder(str(tmp_path), labels_csv=str(csv), test_labels_csv=tmp_path / "test.csv")
    with pytest.raises(ValueError, match=r"labels \['wolf'\] that .*train.csv lacks"):
        source.build("test")
    csv.write_text("a.png,cat\nmissing.png,dog\n")
    with pytest.raises(DatasetNotFoundError, match="missing.png"):
        ImageFolder(str(tmp_path), labels_csv=str(csv)).build("train")
    csv.write_text("a.png,cat,dog\n")
    with pytest.raises(CorruptDataError, match="separated by ';'"):
        ImageFolder(str(tmp_path), labels_csv=str(csv)).build("train")
    with pytest.raises(DatasetNotFoundError, match="labels_csv"):
        ImageFolder(str(tmp_path), labels_csv=str(tmp_path / "none.csv")).build("train")


def test_datamodule_yields_multi_hot_batches():
    module = SSLDataModule(_shapes(), augment=simclr_views, batch_size=8, eval_batch_size=16)
    assert module.multilabel
    views, labels = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    assert len(views) == 2 and labels.shape == (8, 6) and labels.dtype == torch.float32
    images, labels = next(iter(module.eval_dataloader("test")))
    assert images.shape == (16, 3, 16, 16) and labels.shape == (16, 6)


def test_multilabel_protocol_metrics_match_sklearn():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(300, 5, generator=generator) < 0.3).float()
    features = labels @ torch.randn(5, 12, generator=generator)
    features += 0.8 * torch.randn(300, 12, generator=generator)
    result = run_protocols(
        features[:200],
        labels[:200],
        features[200:],
        labels[200:],
        num_classes=5,
        multilabel=True,
        knn=KNNProtocol(k=[10]),
        linear=LinearProtocol(epochs=20, batch_size=64),
    )
    y = labels[200:].numpy()
    for name, suffix in (("knn", "@10"), ("linear", "")):
        scores = result.scores[f"{name}{suffix}"].numpy()
        predicted = scores >= 0.5
        metrics = {
            k.removesuffix(suffix): v for k, v in result.metrics.items() if k.startswith(name)
        }
        assert metrics[f"{name}/mAP"] == pytest.approx(average_precision_score(y, scores))
        assert metrics[f"{name}/micro_f1"] == pytest.approx(
            f1_score(y, predicted, average="micro", zero_division=0)
        )
        assert metrics[f"{name}/macro_f1"] == pytest.approx(
            f1_score(y, predicted, average="macro", zero_division=0)
        )
        per_class_f1 = f1_score(y, predicted, average=None, zero_division=0)
        assert [row["f1"] for row in result.per_class[f"{name}{suffix}"]] == pytest.approx(
            per_class_f1
        )
    assert result.metrics["linear/mAP"] > 0.6


def test_training_on_multilabel_data_reports_map(hydra_run, tmp_path):
    cfg = hydra_run("train", [*TINY, "data.source.multilabel=true", "baselines=[]"])
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    names = ["mAP", "micro_f1", "macro_f1", "macro_precision", "macro_recall"]
    expected = {f"knn/{m}@{k}" for m in names for k in (5, 20)} | {f"linear/{m}" for m in names}
    assert set(results["metrics"]) == expected | {"rankme"}
    assert results["protocol"]["multilabel"] and results["protocol"]["threshold"] == 0.5
    assert results["protocol"]["settings"]["linear"]["threshold"] == 0.5
    assert {"ap", "precision", "recall", "f1", "support"} == set(results["per_class"]["linear"][0])
