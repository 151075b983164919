"""Datasets (sources), synthetic shapes and the DataModule that turns them into loaders."""

from sslkit.data.datamodule import SSLDataModule, TransformedDataset, class_counts
from sslkit.data.sources.base import (
    SPLITS,
    ArrayDataset,
    CorruptDataError,
    DatasetNotFoundError,
    DatasetSource,
    LabelledDataset,
    TensorArrayDataset,
)
from sslkit.data.sources.fashion_mnist import FashionMNIST, read_idx
from sslkit.data.sources.folder import FolderDataset, ImageFolder
from sslkit.data.sources.torchvision_datasets import CIFAR10, CIFAR100, STL10
from sslkit.data.subsets import stratified_split
from sslkit.data.synthetic import SHAPE_NAMES, SyntheticShapes

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "SHAPE_NAMES",
    "SPLITS",
    "STL10",
    "ArrayDataset",
    "CorruptDataError",
    "DatasetNotFoundError",
    "DatasetSource",
    "FashionMNIST",
    "FolderDataset",
    "ImageFolder",
    "LabelledDataset",
    "SSLDataModule",
    "SyntheticShapes",
    "TensorArrayDataset",
    "TransformedDataset",
    "class_counts",
    "read_idx",
    "stratified_split",
]
