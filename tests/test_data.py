"""Dataset sources, the DataModule and the data configs."""

from __future__ import annotations

import gzip
import logging
import pickle
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from sslkit.augment import eval_transform, no_views, simclr_views
from sslkit.data import (
    CIFAR10,
    CIFAR100,
    SHAPE_NAMES,
    STL10,
    ArrayDataset,
    CorruptDataError,
    DatasetNotFoundError,
    DatasetSource,
    FashionMNIST,
    ImageFolder,
    SSLDataModule,
    SyntheticShapes,
)
from sslkit.data.datamodule import tensor_images
from sslkit.data.sources import fashion_mnist
from sslkit.data.subsets import balanced_subset
from tests.conftest import compose_config

DEBIAN_DIR = fashion_mnist.DEBIAN_FASHION_MNIST_DIR


# ------------------------------------------------------------------------------ synthetic


def _tiny_shapes(seed: int = 0, **kwargs) -> SyntheticShapes:
    return SyntheticShapes(
        **{"num_train": 130, "num_test": 40, "image_size": 16, "seed": seed, **kwargs}
    )


def test_synthetic_is_deterministic_per_seed_and_differs_across_seeds():
    a, b, c = _tiny_shapes(0), _tiny_shapes(0), _tiny_shapes(1)
    for split in ("train", "test"):
        np.testing.assert_array_equal(a.build(split).images, b.build(split).images)
        assert a.build(split).targets == b.build(split).targets
        assert not np.array_equal(a.build(split).images, c.build(split).images)


def test_synthetic_splits_are_balanced_rgb_and_distinct():
    source = _tiny_shapes(num_classes=13)
    train, test = source.build("train"), source.build("test")
    assert (len(train), len(test)) == (130, 40)
    for split, size in ((train, 130), (test, 40)):
        counts = np.bincount(split.targets, minlength=13)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1
        assert len(split) == size
    image, label = train[0]
    assert image.mode == "RGB" and image.size == (16, 16)
    assert isinstance(label, int)
    assert not np.array_equal(train.images[:40], test.images)
    assert source.class_names == SHAPE_NAMES


def test_synthetic_statistics_describe_the_train_images():
    source = _tiny_shapes()
    pixels = source.build("train").images.reshape(-1, 3) / 255
    np.testing.assert_allclose(source.mean, pixels.mean(0), atol=1e-3)
    np.testing.assert_allclose(source.std, pixels.std(0), atol=1e-3)
    assert source.in_channels == 3 and source.num_classes == 10 and not source.multilabel


def test_synthetic_images_are_not_mostly_background():
    # Each shape covers a visible part of the image: the foreground colour differs from the
    # corners (background) for a good fraction of pixels.
    images = _tiny_shapes().build("train").images.astype(float)
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]].mean(1, keepdims=True)
    changed = np.abs(images - corners[:, None]).max(-1) > 40
    assert np.median(changed.mean((1, 2))) > 0.15


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be between 2 and 13"):
        SyntheticShapes(num_classes=len(SHAPE_NAMES) + 1)
    with pytest.raises(ValueError, match="every class appears"):
        SyntheticShapes(num_train=5, num_classes=10)
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        _tiny_shapes().build("val")


# -------------------------------------------------------------------------- Fashion-MNIST


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _write_fashion(directory: Path, n_train: int = 20, n_test: int = 10, suffix: str = ".gz"):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(
            directory / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28))
        )
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10)


@pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(),
    reason=f"{DEBIAN_DIR} is absent (install it with `apt-get install dataset-fashion-mnist`)",
)
def test_fashion_mnist_reads_the_debian_files():
    source = FashionMNIST(root=None)
    train, test = source.build("train"), source.build("test")
    assert (len(train), len(test)) == (60000, 10000)
    for split in (train, test):
        assert set(split.targets) == set(range(10))
    image, label = test[0]
    assert image.mode == "L" and image.size == (28, 28) and 0 <= label < 10
    assert source.mean[0] == pytest.approx(train.images.mean(dtype=np.float32) / 255, abs=1e-3)
    assert source.std[0] == pytest.approx(train.images.std(dtype=np.float32) / 255, abs=1e-3)
    assert source.class_names[0] == "T-shirt/top" and len(source.class_names) == 10


@pytest.mark.parametrize(("layout", "suffix"), [("", ".gz"), ("FashionMNIST/raw", "")])
def test_fashion_mnist_prefers_files_under_root(tmp_path, layout, suffix):
    _write_fashion(tmp_path / layout, suffix=suffix)
    source = FashionMNIST(root=str(tmp_path))
    assert (len(source.build("train")), len(source.build("test"))) == (20, 10)
    assert source.directory == tmp_path / layout


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_fashion_mnist_arrays_are_writable_so_tensors_wrap_them_without_a_warning(tmp_path, suffix):
    """torch warns that a tensor made from a read-only array is undefined to write to; the
    batched views wrap the training images without copying them."""
    _write_fashion(tmp_path, suffix=suffix)
    train = FashionMNIST(root=str(tmp_path)).build("train")
    assert train.images.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, targets = tensor_images(train, 28)
    assert images.shape == (20, 1, 28, 28) and images.data_ptr() == train.images.ctypes.data
    assert targets.tolist() == [i % 10 for i in range(20)]


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNIST(root=str(root)).build("train")
    message = str(info.value)
    assert str(root) in message and str(tmp_path / "debian") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "data.source.download=true" in message
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not gzip", "Cannot read"),
        (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc", mtime=0), "truncated"),
        (gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x01a", mtime=0), "not an idx file"),
    ],
    ids=["not-gzip", "truncated", "not-idx"],  # the same ids in every worker process
)
def test_corrupt_idx_files_name_the_file(tmp_path, monkeypatch, content, match):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    _write_fashion(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(content)
    with pytest.raises(CorruptDataError, match=match) as info:
        FashionMNIST(root=str(tmp_path)).build("train")
    assert str(bad) in str(info.value)


# ------------------------------------------------------------------- torchvision sources


@pytest.mark.parametrize(
    ("source_class", "folder"),
    [(CIFAR10, "cifar-10-batches-py"), (CIFAR100, "cifar-100-python"), (STL10, "stl10_binary")],
)
def test_missing_torchvision_dataset_raises_dataset_not_found(tmp_path, source_class, folder):
    with pytest.raises(DatasetNotFoundError, match="download=true") as info:
        source_class(root=str(tmp_path)).build("test")
    assert str(tmp_path / folder) in str(info.value)


def test_torchvision_sources_describe_their_classes():
    assert len(CIFAR100.class_names) == 100 == len(set(CIFAR100.class_names))
    assert CIFAR100.class_names == sorted(CIFAR100.class_names)
    for source_class in (CIFAR10, STL10):
        assert len(source_class.class_names) == source_class.num_classes == 10
    assert STL10.image_size == 96


# --------------------------------------------------------------------------- ImageFolder


def _write_folder(root: Path, per_class: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            size = (int(rng.integers(10, 30)), int(rng.integers(10, 30)))
            mode = ("RGB", "L", "RGBA")[i % 3]
            Image.new(mode, size, color=(i * 20,) * len(mode)).save(root / name / f"{i}.png")


def test_image_folder_split_is_stratified_deterministic_and_rgb(tmp_path):
    _write_folder(tmp_path, {"cat": 5, "dog": 10})
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    source = ImageFolder(str(tmp_path), image_size=12, test_fraction=0.2)
    train, test = source.build("train"), source.build("test")
    assert source.class_names == ["cat", "dog"] and source.num_classes == 2
    assert np.bincount(test.targets).tolist() == [1, 2]
    assert np.bincount(train.targets).tolist() == [4, 8]
    assert not set(train.files) & set(test.files)
    assert train.files == ImageFolder(str(tmp_path), test_fraction=0.2).build("train").files
    for image, _ in train:
        assert image.mode == "RGB" and min(image.size) == 12


def test_image_folder_with_a_test_root(tmp_path):
    _write_folder(tmp_path / "train", {"a": 3, "b": 3})
    _write_folder(tmp_path / "test", {"b": 2})
    source = ImageFolder(str(tmp_path / "train"), test_root=str(tmp_path / "test"))
    assert len(source.build("train")) == 6
    assert source.build("test").targets == [1, 1]


def test_corrupt_image_error_names_the_file(tmp_path):
    _write_folder(tmp_path, {"a": 2, "b": 2})
    bad = tmp_path / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    source = ImageFolder(str(tmp_path), test_fraction=0.5)
    dataset = next(d for d in (source.build("train"), source.build("test")) if bad in d.files)
    with pytest.raises(CorruptDataError, match="broken.png"):
        dataset[dataset.files.index(bad)]


def test_missing_or_empty_image_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data.source.root"):
        ImageFolder(str(tmp_path / "absent")).build("train")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetNotFoundError, match="No images"):
        ImageFolder(str(tmp_path)).build("train")


# ---------------------------------------------------------------------------- DataModule


class FakeSource(DatasetSource):
    """A few random images with chosen labels; counts how often each split is built."""

    def __init__(self, train_labels, test_labels=(0, 1, 1, 0, 1), in_channels=3, num_classes=2):
        self.name, self.num_classes, self.in_channels, self.image_size = (
            "fake",
            num_classes,
            in_channels,
            12,
        )
        self.mean, self.std = (0.5,) * in_channels, (0.25,) * in_channels
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.labels = {"train": list(train_labels), "test": list(test_labels)}
        self.builds = 0

    def build(self, split):
        self.builds += 1
        rng = np.random.default_rng(len(self.labels[split]))
        shape = (len(self.labels[split]), 12, 12) + ((3,) if self.in_channels == 3 else ())
        return ArrayDataset(rng.integers(0, 256, shape, dtype=np.uint8), self.labels[split])


def _module(source, backend="auto", **kwargs) -> SSLDataModule:
    return SSLDataModule(
        source,
        augment=partial(simclr_views, backend=backend),
        **{"batch_size": 4, "eval_batch_size": 3, **kwargs},
    )


@pytest.mark.parametrize("backend", ["batched", "pil"])
@pytest.mark.parametrize("in_channels", [3, 1])
def test_train_batches_are_two_views_and_labels(in_channels, backend):
    source = FakeSource([0, 1] * 5, in_channels=in_channels)
    module = _module(source, backend=backend)
    module.setup("fit")
    module.setup("validate")
    assert source.builds == 2
    loader = module.train_dataloader()
    # Lightning calls on_after_batch_transfer once the batch is on the training device.
    batches = [module.on_after_batch_transfer(batch, 0) for batch in loader]
    assert len(batches) == 2  # 10 images, batch 4, last incomplete batch dropped
    views, labels = batches[0]
    assert isinstance(views, list) and len(views) == 2
    assert all(v.shape == (4, in_channels, 12, 12) and v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])
    assert labels.shape == (4,) and labels.dtype == torch.int64


def test_in_memory_batches_are_one_uint8_gather():
    module = _module(FakeSource([0, 1] * 5))
    loader = module.train_dataloader()
    assert loader.num_workers == 0
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 12, 12)
    train = module.dataset("train")
    expected = torch.stack(
        [torch.from_numpy(train.images[i]).permute(2, 0, 1) for i in range(len(train))]
    )
    # Every batch row is one of the dataset's images, with its own label.
    for image, label in zip(images, labels, strict=True):
        matches = (expected == image).flatten(1).all(dim=1).nonzero().flatten().tolist()
        assert matches and train.targets[matches[0]] == int(label)


def test_batched_backend_needs_an_in_memory_dataset(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / name / f"{i}.png")
    source = ImageFolder(str(tmp_path), image_size=8, test_fraction=0.25)
    with pytest.raises(ValueError, match="augment.backend=auto or augment.backend=pil"):
        _module(source, backend="batched").train_dataloader()
    views, _ = next(iter(_module(source).train_dataloader()))  # auto: PIL per image
    assert [v.shape for v in views] == [(4, 3, 8, 8)] * 2


@pytest.mark.parametrize("in_channels", [3, 1])
def test_eval_batches_are_unaugmented_and_stable(in_channels):
    source = FakeSource([0, 1] * 5, in_channels=in_channels)
    module = _module(source)
    module.setup()
    first = list(module.eval_dataloader("train"))
    second = list(module.eval_dataloader("train"))
    assert [len(labels) for _, labels in first] == [3, 3, 3, 1]
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    reference = eval_transform(
        image_size=12, mean=source.mean, std=source.std, in_channels=in_channels
    )
    image, label = module.dataset("train")[4]
    torch.testing.assert_close(first[1][0][1], reference(image))
    assert torch.cat([y for _, y in first]).tolist() == module.dataset("train").targets
    images, _ = next(iter(module.val_dataloader()))
    assert images.shape == (3, in_channels, 12, 12)


def test_forwarded_properties():
    source = FakeSource([0, 1] * 5, in_channels=1)
    module = _module(source)
    assert (module.name, module.num_classes, module.in_channels, module.image_size) == (
        "fake",
        2,
        1,
        12,
    )
    assert module.class_names == ["c0", "c1"] and not module.multilabel
    assert module.mean == (0.5,) and module.std == (0.25,)


def test_imbalance_warning(caplog):
    module = _module(FakeSource([0] * 30 + [1] * 2), imbalance_warn_ratio=10.0)
    with (
        caplog.at_level(logging.INFO, logger="sslkit.data.datamodule"),
        pytest.warns(UserWarning, match=r"imbalanced: class 'c0' has 30 images and 'c1' only 2"),
    ):
        module.setup()
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert any("c0=30, c1=2" in r.getMessage() for r in caplog.records)


def test_empty_class_warns_and_balanced_data_does_not():
    with pytest.warns(UserWarning, match="no training images: c2"):
        _module(FakeSource([0, 1] * 5, num_classes=3)).setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _module(FakeSource([0] * 9 + [1] * 1)).setup()  # ratio 9 <= 10


def test_unlabelled_images_are_pretrained_on_but_not_evaluated():
    module = _module(FakeSource([0, 1, -1, -1, 0, 1, -1, -1]))
    module.setup()
    _, labels = next(iter(module.train_dataloader()))
    assert len(labels) == 4
    eval_labels = torch.cat([y for _, y in module.eval_dataloader("train")]).tolist()
    assert eval_labels == [0, 1, 0, 1]


def test_labels_outside_the_declared_classes_are_an_error():
    with pytest.raises(ValueError, match="num_classes=2"):
        _module(FakeSource([0, 1, 2, 1])).setup()


def test_train_split_smaller_than_a_batch_is_an_error():
    module = _module(FakeSource([0, 1, 0]), batch_size=8)
    with pytest.raises(ValueError, match="data.batch_size to at most 3"):
        module.train_dataloader()
    assert (
        len(list(_module(FakeSource([0, 1, 0]), batch_size=8, drop_last=False).train_dataloader()))
        == 1
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "data.batch_size"),
        ({"eval_batch_size": -1}, "data.eval_batch_size"),
        ({"num_workers": -2}, "data.num_workers"),
        ({"imbalance_warn_ratio": 0.5}, "imbalance_warn_ratio"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _module(FakeSource([0, 1]), **kwargs)


def test_loaders_can_run_in_worker_processes():
    module = _module(FakeSource([0, 1] * 4), backend="pil", num_workers=2)
    loader = module.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    # Workers started with "spawn" (macOS, Windows) receive the dataset pickled.
    image, label = pickle.loads(pickle.dumps(loader.dataset))[0]
    assert label == loader.dataset[0][1]
    # Evaluation batches of an in-memory dataset are gathered in the main process.
    assert module.eval_dataloader("test").num_workers == 0


def test_unknown_split():
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        _module(FakeSource([0, 1] * 4)).eval_dataloader("validation")


# ------------------------------------------------------------------------------- configs


def _instantiate_data(name: str, **source_overrides) -> SSLDataModule:
    overrides = [f"data.source.{key}={value}" for key, value in source_overrides.items()]
    cfg = compose_config("train", [f"data={name}", "augment=simclr", *overrides])
    return instantiate(cfg.data, augment=instantiate(cfg.augment))


def test_synthetic_config_trains():
    module = _instantiate_data("synthetic", num_train=256, num_test=20, image_size=16)
    assert isinstance(module.source, SyntheticShapes)
    views, labels = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    assert [v.shape for v in views] == [(128, 3, 16, 16)] * 2


def test_dataset_configs_point_at_the_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SSLKIT_DATA", str(tmp_path))
    fashion = _instantiate_data("fashion_mnist")
    assert isinstance(fashion.source, FashionMNIST) and fashion.source.root == tmp_path
    for name, source_class in (("cifar10", CIFAR10), ("cifar100", CIFAR100), ("stl10", STL10)):
        module = _instantiate_data(name)
        assert isinstance(module.source, source_class) and module.source.root == tmp_path
        with pytest.raises(DatasetNotFoundError):
            module.setup()


def test_imagefolder_config_needs_a_root(tmp_path):
    with pytest.raises(Exception, match="root"):
        _instantiate_data("imagefolder")
    _write_folder(tmp_path, {"x": 4, "y": 4})
    module = _instantiate_data("imagefolder", root=str(tmp_path), image_size=16)
    module.setup()
    assert module.num_classes == 2 and module.name == tmp_path.name


def test_max_train_and_max_test_take_balanced_reproducible_subsets() -> None:
    source = SyntheticShapes(num_train=200, num_test=100, image_size=16, num_classes=10, seed=0)
    module = SSLDataModule(source, no_views, batch_size=8, max_train=50, max_test=30, subset_seed=1)
    module.setup()
    train, test = module.dataset("train"), module.dataset("test")
    assert len(train) == 50 and len(test) == 30
    assert np.bincount(np.asarray(train.targets), minlength=10).tolist() == [5] * 10
    again = SSLDataModule(source, no_views, batch_size=8, max_train=50, subset_seed=1)
    again.setup()
    assert again.dataset("train").indices == train.indices
    assert len(again.dataset("test")) == 100
    larger = balanced_subset(source.build("train").targets, 60, seed=1)
    assert set(train.indices) <= set(larger)
    images, labels = next(iter(module.eval_dataloader("test")))
    assert labels.tolist() == test.targets[: len(labels)]


def test_max_train_must_be_positive() -> None:
    source = SyntheticShapes(num_train=20, num_test=10, image_size=16, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="data.max_train"):
        SSLDataModule(source, no_views, max_train=0)
