"""Dataset sources: what a dataset is (classes, channels, size, statistics) and how to build
its splits, one module per family of files.

- :mod:`~sslkit.data.sources.base`: the interface, errors and the in-memory split.
- :mod:`~sslkit.data.sources.fashion_mnist`: Fashion-MNIST's idx files.
- :mod:`~sslkit.data.sources.torchvision_datasets`: CIFAR-10/100 and STL-10 through torchvision.
- :mod:`~sslkit.data.sources.folder`: any folder of images (class folders or a label CSV).
"""

from sslkit.data.sources.base import (
    SPLITS,
    UNLABELED,
    ArrayDataset,
    CorruptDataError,
    DatasetNotFoundError,
    DatasetSource,
    LabelledDataset,
    as_targets,
    check_split,
    label_of,
    multi_hot,
)
from sslkit.data.sources.fashion_mnist import DEBIAN_FASHION_MNIST_DIR, FashionMNIST, read_idx
from sslkit.data.sources.folder import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderDataset,
    ImageFolder,
    read_label_csv,
    unreadable_images,
)
from sslkit.data.sources.torchvision_datasets import CIFAR10, CIFAR100, STL10, open_torchvision

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "DEBIAN_FASHION_MNIST_DIR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "STL10",
    "UNLABELED",
    "ArrayDataset",
    "CorruptDataError",
    "DatasetNotFoundError",
    "DatasetSource",
    "FashionMNIST",
    "FolderDataset",
    "ImageFolder",
    "LabelledDataset",
    "as_targets",
    "check_split",
    "label_of",
    "multi_hot",
    "open_torchvision",
    "read_idx",
    "read_label_csv",
    "unreadable_images",
]
