"""What every dataset source offers, and the in-memory split most of them build.

A source is cheap to construct and touches the disk only in ``build``, so composing a config
never reads data. Every split is a dataset of ``(PIL image, int label)`` with a ``targets``
list that is read without decoding images (class counts, stratification, labelled subsets).
Label ``-1`` marks an unlabelled image (STL-10's unlabelled set).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

SPLITS = ("train", "test")
UNLABELED = -1


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the config says; the message says how to get them."""


class CorruptDataError(ValueError):
    """A dataset file exists but cannot be read; the message names the file."""


class LabelledDataset(Protocol):
    """What every split offers: ``(PIL image, label)`` items and the labels up front.

    Single-label: ``targets`` is a list of class ids and a label is an int. Multi-label:
    ``targets`` is a ``(N, num_classes)`` multi-hot float32 array and a label is its row as a
    float32 tensor, so batches collate to the ``(B, num_classes)`` targets of BCE.
    """

    targets: Sequence[Any]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Image.Image, Any]: ...


def multi_hot(label_sets: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """``(N, num_classes)`` float32 rows with 1 at the class ids of each label set."""
    targets = np.zeros((len(label_sets), num_classes), dtype=np.float32)
    for row, labels in zip(targets, label_sets, strict=True):
        row[list(labels)] = 1.0
    return targets


def channel_stats(
    samples: np.ndarray, channel_axis: int = 1, min_std: float = 0.0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 ``samples`` in [0, 1] units, over every
    other axis, rounded to 4 decimals (the ``mean``/``std`` sources give the views);
    ``min_std`` is a floor for channels that barely vary."""
    values = np.moveaxis(samples, channel_axis, 0)
    values = values.reshape(len(values), -1).astype(np.float64) / 255
    std = np.maximum(values.std(axis=1), min_std)
    return tuple(values.mean(axis=1).round(4).tolist()), tuple(std.round(4).tolist())


def check_split(split: str) -> str:
    """Returns ``split`` if it is a known split name, else raises a ValueError listing them."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    return split


class DatasetSource(ABC):
    """Describes one dataset and builds its splits; subclasses set the attributes below."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    multilabel: bool = False
    class_names: list[str]
    #: 2 for images (C, H, W); 3 for volumes and clips (C, D, H, W).
    spatial_dims: int = 2

    @abstractmethod
    def build(self, split: str) -> LabelledDataset:
        """The ``train`` or ``test`` split as ``(PIL image, int label)`` items."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ArrayDataset(Dataset):
    """Images held in one uint8 array, (N, H, W) grayscale or (N, H, W, 3) RGB.

    One array instead of N PIL images keeps memory compact and makes the dataset cheap to
    pickle into DataLoader worker processes. ``targets`` are class ids, or a ``(N, C)``
    multi-hot array for multi-label data (see :class:`LabelledDataset`).
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int] | np.ndarray) -> None:
        if images.dtype != np.uint8 or not (
            images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
        ):
            raise ValueError(
                "images must be a uint8 array of shape (N, H, W) or (N, H, W, 3), got "
                f"{images.dtype} {images.shape}."
            )
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels.")
        self.images = images
        self.targets = as_targets(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, Any]:
        image = Image.fromarray(np.ascontiguousarray(self.images[index]))
        return image, label_of(self.targets, index)


class TensorArrayDataset(Dataset):
    """Samples held in one channels-first uint8 array ``(N, C, *spatial)``: volumes
    ``(N, C, D, H, W)`` (and clips ``(N, C, T, H, W)``), which PIL cannot hold.

    Items are ``(uint8 tensor (C, *spatial), label)``; the DataModule gathers whole batches
    from the array and makes the views on the training device, so items are read one by one
    only by plots. ``targets`` as in :class:`ArrayDataset`.
    """

    def __init__(self, samples: np.ndarray, targets: Sequence[int] | np.ndarray) -> None:
        if samples.dtype != np.uint8 or samples.ndim < 4:
            raise ValueError(
                "samples must be a channels-first uint8 array (N, C, ...) with at least two "
                f"spatial axes, got {samples.dtype} {samples.shape}."
            )
        if len(samples) != len(targets):
            raise ValueError(f"{len(samples)} samples but {len(targets)} labels.")
        self.samples = samples
        self.targets = as_targets(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        return torch.from_numpy(self.samples[index].copy()), label_of(self.targets, index)


def as_targets(targets: Sequence[int] | np.ndarray) -> list[int] | np.ndarray:
    """Class ids as a list of ints; a 2-D multi-hot array as float32 ``(N, C)``."""
    if np.ndim(targets) == 2:
        return np.asarray(targets, dtype=np.float32)
    return [int(t) for t in targets]


def label_of(targets: list[int] | np.ndarray, index: int) -> int | torch.Tensor:
    """The label of item ``index``: its class id, or its multi-hot row as a float32 tensor."""
    if isinstance(targets, np.ndarray):
        return torch.from_numpy(targets[index].copy())
    return targets[index]
