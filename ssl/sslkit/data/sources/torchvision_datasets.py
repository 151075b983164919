"""Datasets read through torchvision's classes: CIFAR-10, CIFAR-100 and STL-10."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslkit.data.sources.base import ArrayDataset, DatasetNotFoundError, DatasetSource, check_split


def open_torchvision(make: Callable[[], Any], *, title: str, location: Path) -> Any:
    """Runs a torchvision dataset constructor, turning its "not found" into one clear error."""
    try:
        return make()
    except RuntimeError as err:
        if "not found" not in str(err).lower():
            raise
        raise DatasetNotFoundError(
            f"{title} not found (or incomplete) in {location.resolve()}. Download it with "
            "data.source.download=true, or set data.source.root=DIR (or the SSLKIT_DATA "
            "environment variable) to the folder that holds it."
        ) from None


class CIFAR10(DatasetSource):
    """CIFAR-10: 60k 32x32 RGB images of 10 object classes (50k train, 10k test)."""

    name = "cifar10"
    num_classes = 10
    in_channels = 3
    image_size = 32
    title = "CIFAR-10"
    folder = "cifar-10-batches-py"
    # Statistics of the 50k training images.
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    class_names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]

    def __init__(self, root: str | Path = "data", download: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.download = bool(download)

    def _torchvision_class(self) -> Any:
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        return TorchvisionCIFAR10

    def build(self, split: str) -> ArrayDataset:
        train = check_split(split) == "train"
        dataset_class = self._torchvision_class()
        dataset = open_torchvision(
            lambda: dataset_class(str(self.root), train=train, download=self.download),
            title=self.title,
            location=self.root / self.folder,
        )
        return ArrayDataset(dataset.data, dataset.targets)


class CIFAR100(CIFAR10):
    """CIFAR-100: 60k 32x32 RGB images of 100 fine-grained classes (50k train, 10k test)."""

    name = "cifar100"
    num_classes = 100
    title = "CIFAR-100"
    folder = "cifar-100-python"
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    # fmt: off
    class_names = [
        "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
        "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
        "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
        "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
        "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower",
        "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
        "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
        "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit",
        "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
        "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower",
        "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor", "train",
        "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
    ]
    # fmt: on

    def _torchvision_class(self) -> Any:
        from torchvision.datasets import CIFAR100 as TorchvisionCIFAR100

        return TorchvisionCIFAR100


class STL10(DatasetSource):
    """STL-10: 96x96 RGB images of 10 classes (5k train, 8k test, 100k unlabelled).

    With ``unlabeled=True`` the train split also holds the 100k unlabelled images (label -1),
    the setting STL-10 was made for; evaluation loaders keep only the labelled images.
    """

    name = "stl10"
    num_classes = 10
    in_channels = 3
    image_size = 96
    # Statistics of the 5k labelled training images.
    mean = (0.4467, 0.4398, 0.4066)
    std = (0.2603, 0.2566, 0.2713)
    class_names = [
        "airplane",
        "bird",
        "car",
        "cat",
        "deer",
        "dog",
        "horse",
        "monkey",
        "ship",
        "truck",
    ]

    def __init__(
        self, root: str | Path = "data", download: bool = False, unlabeled: bool = False
    ) -> None:
        self.root = Path(root).expanduser()
        self.download = bool(download)
        self.unlabeled = bool(unlabeled)

    def build(self, split: str) -> ArrayDataset:
        from torchvision.datasets import STL10 as TorchvisionSTL10

        torchvision_split = check_split(split)
        if split == "train" and self.unlabeled:
            torchvision_split = "train+unlabeled"
        dataset = open_torchvision(
            lambda: TorchvisionSTL10(
                str(self.root), split=torchvision_split, download=self.download
            ),
            title="STL-10",
            location=self.root / "stl10_binary",
        )
        # torchvision stores (N, C, H, W); a transposed view avoids copying 100k images.
        return ArrayDataset(dataset.data.transpose(0, 2, 3, 1), dataset.labels.tolist())
