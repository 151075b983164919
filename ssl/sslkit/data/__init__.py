"""Datasets (sources), synthetic shapes and volumes, and the DataModule that turns them into loaders."""

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
from sslkit.data.sources.video_folder import VideoFiles, VideoFolder, read_video
from sslkit.data.sources.volume_folder import VolumeFolder
from sslkit.data.subsets import stratified_split
from sslkit.data.synthetic import SHAPE_NAMES, SyntheticShapes
from sslkit.data.synthetic_video import MOTIONS, SyntheticClips
from sslkit.data.synthetic_volumes import SOLID_NAMES, SyntheticVolumes
from sslkit.data.video import VideoDataModule

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "SHAPE_NAMES",
    "SOLID_NAMES",
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
    "MOTIONS",
    "SSLDataModule",
    "SyntheticClips",
    "SyntheticShapes",
    "SyntheticVolumes",
    "TensorArrayDataset",
    "TransformedDataset",
    "VideoDataModule",
    "VideoFiles",
    "VideoFolder",
    "VolumeFolder",
    "class_counts",
    "read_idx",
    "read_video",
    "stratified_split",
]
