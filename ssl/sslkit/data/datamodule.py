"""The LightningDataModule shared by every method: augmented views for pretraining and
un-augmented images for evaluation, both built from one dataset source.

Datasets held in memory (Fashion-MNIST, CIFAR, STL-10, synthetic shapes, volumes) stay one uint8
tensor, ``(N, C, H, W)`` for images and ``(N, C, D, H, W)`` for volumes and clips: a batch is an
index gather, and the views are made on the training device after the batch has been moved
there (``on_after_batch_transfer`` calls the views' ``batch``, whatever the modality). Image
folders go through PIL per image in DataLoader workers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from sslkit.augment.views import ViewFactory, eval_transform
from sslkit.configurable import configurable
from sslkit.data.sampling import ResumableTrainOrder
from sslkit.data.sources.base import (
    SPLITS,
    UNLABELED,
    ArrayDataset,
    DatasetSource,
    LabelledDataset,
    TensorArrayDataset,
    check_split,
)
from sslkit.data.subsets import balanced_subset

log = logging.getLogger(__name__)


class TransformedDataset(Dataset):
    """Applies ``transform`` to the image of each ``(image, label)`` item of ``dataset``."""

    def __init__(self, dataset: LabelledDataset, transform: Callable[[Image.Image], Any]) -> None:
        self.dataset = dataset
        self.transform = transform
        self.targets = dataset.targets

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


class SubsetDataset(Dataset):
    """The items of ``dataset`` at ``indices``, with their ``targets``."""

    def __init__(self, dataset: LabelledDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        all_targets = dataset.targets
        self.targets = [all_targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.dataset[self.indices[index]]


class TensorImages(Dataset):
    """Samples of one split as one uint8 tensor ``(N, C, *spatial)`` (images ``(N, C, H, W)``,
    volumes and clips ``(N, C, D, H, W)``); items are whole batches.

    The DataLoader hands ``__getitems__`` a batch of indices, so a batch is one gather. With
    ``mean``/``std`` (one entry per channel) the samples come out as normalised float32 (the
    un-augmented evaluation view), otherwise as uint8 for the batched augmentation on the
    training device.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.images = images
        self.targets = targets
        self.scale: tuple[Tensor, Tensor] | None = None
        if images.ndim < 4:
            raise ValueError(
                f"TensorImages needs samples (N, C, H, W) or (N, C, D, H, W), got "
                f"{tuple(images.shape)}."
            )
        if mean is not None and std is not None:
            shape = (1, images.shape[1], *[1] * (images.ndim - 2))
            mean_t = torch.tensor(mean, dtype=torch.float32).view(shape)
            std_t = torch.tensor(std, dtype=torch.float32).view(shape)
            # (x / 255 - mean) / std as one multiply-add.
            self.scale = (1 / (255 * std_t), -mean_t / std_t)

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index].contiguous()
        if self.scale is not None:
            images = torch.addcmul(self.scale[1], images.float(), self.scale[0])
        return images, self.targets[index]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, targets = self.__getitems__([index])
        return images[0], targets[0]


def _whole_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate for :class:`TensorImages`: its ``__getitems__`` already made the batch."""
    return batch


def standardize_samples(samples: Tensor) -> Tensor:
    """Each sample of a batch ``(B, C, ...)`` z-scored over all its pixels and channels, so that
    its overall brightness and contrast (which every view of it keeps) cannot serve as a
    feature; the per-sample intensity normalisation usual for MRI."""
    std, mean = torch.std_mean(samples, dim=tuple(range(1, samples.ndim)), keepdim=True)
    return (samples - mean) / (std + 1e-5)


def resize_images(images: Tensor, size: int) -> Tensor:
    """Images ``(B, C, H, W)`` resized to ``size`` x ``size`` (bilinear, antialiased); other
    batches as they are."""
    if images.ndim != 4 or tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


class EvalBatches:
    """Collate of the evaluation loaders: the data steps every encoder's input gets (resize to
    ``data.input_size``, ``data.standardize``) after the un-augmented view; picklable for
    loader workers."""

    def __init__(self, collate: Callable[[Any], Any], size: int, standardize: bool) -> None:
        self.collate, self.size, self.standardize = collate, size, standardize

    def __call__(self, items: Any) -> tuple[Tensor, Tensor]:
        images, labels = self.collate(items)
        images = resize_images(images, self.size)
        return (standardize_samples(images) if self.standardize else images), labels


def tensor_images(dataset: LabelledDataset, image_size: int) -> tuple[Tensor, Tensor] | None:
    """Channels-first uint8 samples and their targets, without copying, when ``dataset`` is an
    in-memory array (or a subset of one) whose last two axes are ``image_size``: images
    ``(N, C, H, W)`` of an :class:`ArrayDataset`, volumes and clips ``(N, C, D, H, W)`` of a
    :class:`TensorArrayDataset`; else None (read with PIL)."""
    indices = None
    if isinstance(dataset, SubsetDataset):
        dataset, indices = dataset.dataset, dataset.indices
    if isinstance(dataset, TensorArrayDataset):
        images = torch.from_numpy(dataset.samples)
    elif isinstance(dataset, ArrayDataset):
        images = torch.from_numpy(dataset.images)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    else:
        return None
    if tuple(images.shape[-2:]) != (image_size, image_size):
        return None
    targets = torch.as_tensor(np.asarray(dataset.targets))
    if indices is not None:
        index = torch.as_tensor(indices, dtype=torch.long)
        images, targets = images[index], targets[index]
    return images, targets


def class_counts(targets: Sequence[Any], num_classes: int) -> np.ndarray:
    """Images per class; unlabelled items (label -1) are not counted.

    Multi-hot ``(N, num_classes)`` targets count the images carrying each label. Raises a
    ValueError for labels outside ``[0, num_classes)``, which means the source's
    ``num_classes`` does not match its data.
    """
    if np.ndim(targets) == 2:
        multi_hot = np.asarray(targets)
        if multi_hot.shape[1] != num_classes:
            raise ValueError(
                f"Multi-hot labels have {multi_hot.shape[1]} columns, but the source declares "
                f"num_classes={num_classes}."
            )
        return (multi_hot > 0).sum(axis=0)
    labels = np.asarray(targets, dtype=np.int64)
    labels = labels[labels != UNLABELED]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Labels range from {labels.min()} to {labels.max()}, but the source declares "
            f"num_classes={num_classes}."
        )
    return np.bincount(labels, minlength=num_classes)


@configurable(runtime=("augment",))
class SSLDataModule(ResumableTrainOrder, pl.LightningDataModule):
    """Pretraining and evaluation loaders for one dataset source.

    - ``train_dataloader``: shuffled ``(views, labels)`` batches, ``views`` a list of
      (B, C, H, W) tensors ((B, C, D, H, W) for volumes and clips) made by
      ``augment(image_size=, mean=, std=, in_channels=)``: a view factory whose result either
      transforms one PIL image or, with ``backend`` ``"batched"`` (or ``"auto"``) and a dataset
      held in memory, turns a whole uint8 batch into its views with ``batch(images)``.
    - ``eval_dataloader(split)``: un-augmented, normalised ``(images, labels)`` in a fixed
      order, labelled images only; ``val_dataloader`` is the test split (online probe).

    With ``drop_last`` the last incomplete training batch is dropped (contrastive losses
    depend on the batch size); a train split smaller than one batch is an error rather than
    a silently smaller batch, so the effective batch size is always the configured one.
    ``input_size``: the side the views and the evaluation give the network (None: the
    source's native size, e.g. 28 for Fashion-MNIST); in-memory images are resized on the
    batched path too. ``standardize``: z-score every sample over all its pixels and channels
    after the views, alike in training and evaluation (:func:`standardize_samples`); the
    raw-pixel baseline reads the pixels without it.
    Class counts of the train split are logged, and a warning is raised when the largest
    class outnumbers the smallest by more than ``imbalance_warn_ratio`` (``inf`` disables it).
    ``max_train`` / ``max_test`` cap a split at a class-balanced subset fixed by
    ``subset_seed``, for quick studies on a fraction of a large dataset.
    """

    def __init__(
        self,
        source: DatasetSource,
        augment: ViewFactory,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        num_workers: int = 2,
        drop_last: bool = True,
        imbalance_warn_ratio: float = 10.0,
        max_train: int | None = None,
        max_test: int | None = None,
        subset_seed: int = 0,
        input_size: int | None = None,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        if input_size is not None and (
            isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1
        ):
            raise ValueError(
                f"data.input_size must be a positive integer or null (the dataset's own size), "
                f"got {input_size!r}."
            )
        if input_size is not None and getattr(source, "spatial_dims", 2) != 2:
            raise ValueError(
                f"data.input_size resizes images, but {source!r} holds volumes or clips; set "
                "their size with data.source.image_size instead."
            )
        for key, value in (("max_train", max_train), ("max_test", max_test)):
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"data.{key} must be a positive integer or null, got {value!r}.")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key} must be a positive integer, got {value!r}.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers must be an integer >= 0, got {num_workers!r}.")
        if not imbalance_warn_ratio >= 1.0:
            raise ValueError(
                f"data.imbalance_warn_ratio must be >= 1 (inf disables the warning), "
                f"got {imbalance_warn_ratio!r}."
            )
        if not callable(getattr(source, "build", None)):
            raise TypeError(f"source must be a dataset source with build(split), got {source!r}.")
        if not callable(augment):
            raise TypeError(
                f"augment must be a view factory such as sslkit.augment.simclr_views, got "
                f"{augment!r}."
            )
        self.source = source
        self.augment = augment
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.drop_last = bool(drop_last)
        self.imbalance_warn_ratio = float(imbalance_warn_ratio)
        self.limits = {"train": max_train, "test": max_test}
        self.subset_seed = subset_seed
        self.input_size = input_size
        self.standardize = bool(standardize)
        self._datasets: dict[str, LabelledDataset] = {}
        self.batched_views: Any = None

    # Properties of the source, so that models and evaluation need only the DataModule.
    @property
    def name(self) -> str:
        return self.source.name

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def in_channels(self) -> int:
        return self.source.in_channels

    @property
    def image_size(self) -> int:
        """The side of the images the network sees: ``input_size``, else the native size."""
        return self.input_size or self.source.image_size

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes and clips."""
        return getattr(self.source, "spatial_dims", 2)

    @property
    def multilabel(self) -> bool:
        return self.source.multilabel

    @property
    def class_names(self) -> list[str]:
        return list(self.source.class_names)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.source.mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.source.std)

    def setup(self, stage: str | None = None) -> None:
        """Builds the train and test splits once; later calls are no-ops."""
        if self._datasets:
            return
        for split in SPLITS:
            dataset = self.source.build(split)
            limit = self.limits[split]
            if limit is not None and limit < len(dataset):
                indices = balanced_subset(dataset.targets, limit, self.subset_seed)
                dataset = SubsetDataset(dataset, indices)
                log.info(
                    "%s %s split limited to %d images (class-balanced)", self.name, split, limit
                )
            self._datasets[split] = dataset
        self._report_class_counts(self._datasets["train"].targets)

    def dataset(self, split: str) -> LabelledDataset:
        """The raw ``(PIL image, label)`` dataset of a split (builds the splits if needed)."""
        check_split(split)
        self.setup()
        return self._datasets[split]

    def _report_class_counts(self, targets: Sequence[Any]) -> None:
        counts = class_counts(targets, self.num_classes)
        names = self.class_names
        unlabeled = 0 if self.multilabel else len(targets) - int(counts.sum())
        log.info(
            "%s train split: %d labelled images%s; per class: %s",
            self.name,
            len(targets) - unlabeled,
            f" and {unlabeled} unlabelled" if unlabeled else "",
            ", ".join(f"{n}={c}" for n, c in zip(names, counts.tolist(), strict=True)),
        )
        smallest, largest = int(counts.argmin()), int(counts.argmax())
        ratio = counts[largest] / counts[smallest] if counts[smallest] else math.inf
        if counts.sum() == 0 or ratio <= self.imbalance_warn_ratio:
            return
        if counts[smallest] == 0:
            empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
            problem = f"classes with no training images: {', '.join(empty)}"
        else:
            problem = (
                f"class {names[largest]!r} has {counts[largest]} images and {names[smallest]!r} "
                f"only {counts[smallest]} (ratio {ratio:.1f} > {self.imbalance_warn_ratio:g})"
            )
        message = (
            f"The {self.name} train split is imbalanced: {problem}. Top-1 accuracy is then "
            "dominated by the large classes; compare macro-averaged metrics, or rebalance the "
            "data. Set data.imbalance_warn_ratio=inf to silence this warning."
        )
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=2)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        # In-memory batches are one gather: worker processes would only add copies.
        in_memory = isinstance(dataset, TensorImages)
        workers = 0 if in_memory else self.num_workers
        # Training order seeded per epoch and continued exactly by a resumed run.
        sampler = self.train_sampler(dataset, batch_size) if train else None
        collate = _whole_batch if in_memory else default_collate
        if not train:
            collate = EvalBatches(collate, self.image_size, self.standardize)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=sampler.loader_generator() if sampler else None,
            drop_last=train and self.drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate,
        )

    def _in_memory(self, split: str) -> tuple[Tensor, Tensor] | None:
        return tensor_images(self.dataset(split), self.source.image_size)

    def check_train_size(self, size: int) -> None:
        """Refuses a train split smaller than one batch when incomplete batches are dropped."""
        if self.drop_last and size < self.batch_size:
            raise ValueError(
                f"The {self.name} train split has {size} images, fewer than "
                f"data.batch_size={self.batch_size}, so drop_last would leave no batch. Set "
                f"data.batch_size to at most {size} or data.drop_last=false."
            )

    def train_dataloader(self) -> DataLoader:
        """Shuffled pretraining batches ``(views, labels)``; label -1 marks unlabelled images."""
        train = self.dataset("train")
        self.check_train_size(len(train))
        views = self.augment(
            image_size=self.image_size, mean=self.mean, std=self.std, in_channels=self.in_channels
        )
        backend = getattr(views, "backend", "pil")
        tensors = self._in_memory("train") if backend != "pil" else None
        if backend == "batched" and tensors is None:
            raise ValueError(
                f"augment.backend=batched needs a dataset held in memory at its image size "
                f"(Fashion-MNIST, CIFAR, STL-10, synthetic shapes, volumes), but {self.name} is "
                "read image by image. Use augment.backend=auto or augment.backend=pil."
            )
        self.batched_views = views if tensors is not None else None
        if tensors is not None:
            log.info("%s: views made per batch on the training device", self.name)
            return self._loader(TensorImages(*tensors), self.batch_size, train=True)
        return self._loader(TransformedDataset(train, views), self.batch_size, train=True)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Turns an in-memory uint8 training batch into its views, on the device it is on, and
        standardises the views of every training batch with ``standardize`` (evaluation
        batches come standardised from their loader)."""
        images, labels = batch
        if isinstance(images, Tensor) and images.dtype == torch.uint8:
            if self.batched_views is None:
                raise RuntimeError("a uint8 batch arrived but no batched views were set up")
            images = self.batched_views.batch(images)
        elif isinstance(images, Tensor):
            return batch
        if self.standardize:
            images = [standardize_samples(view) for view in images]
        return images, labels

    def without_standardize(self) -> contextlib.AbstractContextManager[None]:
        """Evaluation loaders made inside this context skip ``standardize`` (the raw-pixel
        baseline reads the pixels as the views give them)."""

        @contextlib.contextmanager
        def off() -> Any:
            standardize, self.standardize = self.standardize, False
            try:
                yield
            finally:
                self.standardize = standardize

        return off()

    def labelled_indices(self, split: str) -> np.ndarray:
        """Indices into :meth:`dataset` of the items evaluation uses, in the order of
        :meth:`eval_dataloader`: the labelled images (every image of multi-label data)."""
        targets = np.asarray(self.dataset(split).targets)
        if targets.ndim != 1:
            return np.arange(len(targets))
        return np.flatnonzero(targets != UNLABELED)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Un-augmented, normalised ``(images, labels)`` of a split's labelled images, in a
        fixed order, for feature extraction (kNN, linear probe) and validation."""
        dataset = self.dataset(split)
        keep = self.labelled_indices(split)
        if len(keep) == len(dataset):
            keep = None
        tensors = self._in_memory(split)
        if tensors is not None:
            images, labels = tensors
            if keep is not None:
                index = torch.as_tensor(keep, dtype=torch.long)
                images, labels = images[index], labels[index]
            return self._loader(
                TensorImages(images, labels, self.mean, self.std), self.eval_batch_size, False
            )
        transform = eval_transform(
            image_size=self.image_size, mean=self.mean, std=self.std, in_channels=self.in_channels
        )
        labelled: Dataset = TransformedDataset(dataset, transform)
        if keep is not None:
            labelled = Subset(labelled, keep.tolist())
        return self._loader(labelled, self.eval_batch_size, train=False)

    def val_dataloader(self) -> DataLoader:
        """The test split, un-augmented: what the online linear probe is monitored on."""
        return self.eval_dataloader("test")
