"""Dataset sources: what a dataset is (classes, channels, size, statistics) and how to build
its splits.

A source is cheap to construct and touches the disk only in ``build``, so composing a config
never reads data. Every split is a dataset of ``(PIL image, int label)`` with a ``targets``
list that is read without decoding images (class counts, stratification, labelled subsets).
Label ``-1`` marks an unlabelled image (STL-10's unlabelled set).
"""

from __future__ import annotations

import csv
import gzip
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

SPLITS = ("train", "test")
UNLABELED = -1

# Where Debian's `dataset-fashion-mnist` package installs the four gzip idx files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


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


# ----------------------------------------------------------------------------- Fashion-MNIST

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Reads an idx file of unsigned bytes (gzip-compressed if it ends in .gz).

    Checks the magic number, the number of dimensions and the payload length, so that a
    truncated download or a wrong file fails here with the file's name instead of later as
    garbage pixels.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDataError(
            f"Cannot read {path}: {err}. The file is damaged; delete it and fetch it again."
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        raise CorruptDataError(
            f"{path} is not an idx file of {ndim}-d unsigned bytes (magic number "
            f"{raw[:4].hex() or 'missing'}, expected 000008{ndim:02x}). The file is damaged or "
            "not what its name says; delete it and fetch it again."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{path} is truncated: its header is incomplete.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise CorruptDataError(
            f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}: the file "
            "is truncated or damaged; delete it and fetch it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


class FashionMNIST(DatasetSource):
    """Fashion-MNIST: 70k 28x28 grayscale clothing images, 10 classes (60k train, 10k test).

    Reads the four standard idx files (gzip or plain) from ``root`` or ``root/FashionMNIST/raw``
    (torchvision's layout), else from Debian's ``dataset-fashion-mnist`` package. With
    ``download=True`` and no local copy, torchvision fetches them into ``root``.
    """

    name = "fashion_mnist"
    num_classes = 10
    in_channels = 1
    image_size = 28
    # Statistics of the 60k training images.
    mean = (0.2860,)
    std = (0.3530,)
    class_names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]

    def __init__(self, root: str | Path | None = None, download: bool = False) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.download = bool(download)

    def _candidate_dirs(self) -> list[Path]:
        local = [self.root, self.root / "FashionMNIST" / "raw"] if self.root else []
        return [*local, DEBIAN_FASHION_MNIST_DIR]

    def _locate(self) -> Path | None:
        """The first candidate folder holding all four files. A folder under ``root`` that holds
        only some of them is an error, not a reason to read another copy."""
        stems = [stem for pair in _FASHION_MNIST_FILES.values() for stem in pair]
        for directory in self._candidate_dirs():
            present = [stem for stem in stems if _find_file(directory, stem)]
            if len(present) == len(stems):
                return directory
            if present and directory != DEBIAN_FASHION_MNIST_DIR:
                missing = [stem for stem in stems if stem not in present]
                raise DatasetNotFoundError(
                    f"{directory} holds {len(present)} of the 4 Fashion-MNIST files; missing: "
                    f"{', '.join(missing)} (.gz or plain). Copy the missing files there, or set "
                    "data.source.root to a folder with all four (or data.source.download=true)."
                )
        return None

    def _fetch(self) -> Path:
        from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

        root = self.root or Path("data")
        try:
            TorchvisionFashionMNIST(str(root), train=True, download=True)
            TorchvisionFashionMNIST(str(root), train=False, download=True)
        except (RuntimeError, OSError) as err:
            raise DatasetNotFoundError(
                f"Downloading Fashion-MNIST into {root.resolve()} failed ({err}). Install it "
                "offline with `apt-get install dataset-fashion-mnist`, or copy the four "
                "*-idx*-ubyte.gz files there and set data.source.root to that folder."
            ) from None
        return root / "FashionMNIST" / "raw"

    @cached_property
    def directory(self) -> Path:
        """The folder the idx files are read from (found on first use)."""
        found = self._locate()
        if found is not None:
            return found
        if self.download:
            return self._fetch()
        looked = ", ".join(str(d) for d in self._candidate_dirs())
        raise DatasetNotFoundError(
            "Fashion-MNIST not found: looked for train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
            f"in {looked}. Install it with `apt-get install dataset-fashion-mnist`, let "
            "torchvision download it with data.source.download=true, or set "
            "data.source.root=DIR to a folder that holds these files."
        )

    def _path(self, stem: str) -> Path:
        path = _find_file(self.directory, stem)
        if path is None:
            raise DatasetNotFoundError(f"{stem}.gz is missing from {self.directory}.")
        return path

    def build(self, split: str) -> ArrayDataset:
        images_stem, labels_stem = _FASHION_MNIST_FILES[check_split(split)]
        images_path, labels_path = self._path(images_stem), self._path(labels_stem)
        images = read_idx(images_path, ndim=3)
        labels = read_idx(labels_path, ndim=1)
        if len(images) != len(labels):
            raise CorruptDataError(
                f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
                "labels; one of them is from another dataset or damaged."
            )
        if labels.size and labels.max() >= self.num_classes:
            raise CorruptDataError(
                f"{labels_path} holds label {int(labels.max())}, but Fashion-MNIST has "
                f"{self.num_classes} classes; the file is damaged or from another dataset."
            )
        return ArrayDataset(images, labels.tolist())


# ------------------------------------------------------------------ torchvision-backed sources


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


# ------------------------------------------------------------------------------- ImageFolder


_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def unreadable_images(files: Sequence[Path]) -> list[Path]:
    """The files whose image structure PIL rejects (header and chunks checked, not decoded)."""
    bad = []
    for path in files:
        try:
            with Image.open(path) as handle:
                handle.verify()
        except _IMAGE_ERRORS:
            bad.append(path)
    return bad


class FolderDataset(Dataset):
    """Image files decoded on access, converted to RGB, shorter side resized to ``image_size``.

    ``targets`` are class ids, or a ``(N, C)`` multi-hot array (see :class:`LabelledDataset`).
    """

    def __init__(
        self, files: Sequence[Path], targets: Sequence[int] | np.ndarray, image_size: int
    ) -> None:
        self.files = list(files)
        self.targets = as_targets(targets)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, Any]:
        path = self.files[index]
        try:
            with Image.open(path) as handle:
                image = handle.convert("RGB")
        except _IMAGE_ERRORS as err:
            others = [p for p in unreadable_images(self.files) if p != path]
            listed = ", ".join(map(str, others[:10])) + (" ..." if len(others) > 10 else "")
            also = f" {len(others)} more cannot be read: {listed}." if others else ""
            raise CorruptDataError(
                f"Cannot read image {path}: {err}.{also} Remove or replace "
                f"{'these files' if others else 'this file'}."
            ) from None
        scale = self.image_size / min(image.size)
        if scale != 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        return image, label_of(self.targets, index)


def _scan_classes(root: Path) -> dict[str, list[Path]]:
    """Image files per class folder (non-hidden sub-folders of ``root``, sorted)."""
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"Image folder {root.resolve()} does not exist. Set data.source.root=DIR to a folder "
            "with one sub-folder of images per class (DIR/<class>/<image>.png)."
        )
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        classes[folder.name] = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
    if not any(classes.values()):
        raise DatasetNotFoundError(
            f"No images found in class sub-folders of {root.resolve()} (extensions: "
            f"{', '.join(IMAGE_EXTENSIONS)}). The expected layout is DIR/<class>/<image>.png."
        )
    return classes


def read_label_csv(path: Path, image_root: Path) -> list[tuple[Path, list[str]]]:
    """Rows ``path,label1;label2;...`` of a multi-label CSV as (image file, label names).

    Image paths are relative to ``image_root`` unless absolute; a first row whose path field
    is ``path`` is a header and skipped; an empty label field means no label. Every listed
    image must exist, so a wrong root fails here with the files it could not find.
    """
    if not path.is_file():
        raise DatasetNotFoundError(
            f"Label file {path.resolve()} does not exist. Set data.source.labels_csv to a CSV "
            "with one row per image: path,label1;label2;..."
        )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(field.strip() for field in row)]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    entries = []
    for number, row in enumerate(rows, start=1):
        if len(row) > 2:
            raise CorruptDataError(
                f"{path}: row {number} has {len(row)} fields; expected path,label1;label2;... "
                "(labels separated by ';', not ',')."
            )
        file = image_root / row[0].strip()
        labels = [name.strip() for name in (row[1] if len(row) > 1 else "").split(";")]
        entries.append((file, sorted({name for name in labels if name})))
    if not entries:
        raise DatasetNotFoundError(f"Label file {path.resolve()} lists no image.")
    missing = [str(file) for file, _ in entries if not file.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} image(s) listed in {path} do not exist, e.g. {missing[0]}; paths "
            f"are relative to {image_root.resolve()} (data.source.root or test_root)."
        )
    return entries


def stratified_split(
    targets: Sequence[int], test_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic per-class train/test split of indices.

    Every class with at least two images keeps at least one on each side, so both splits
    cover the classes that can be covered.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(targets)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(members) * test_fraction)
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) >= 2 else 0
        test.extend(members[:n_test].tolist())
        train.extend(members[n_test:].tolist())
    return sorted(train), sorted(test)


class ImageFolder(DatasetSource):
    """Any folder of images, RGB at ``image_size``: class folders, or a multi-label CSV.

    Single-label: ``root/<class>/<image>``, the label is the class folder. Multi-label: with
    ``labels_csv``, a CSV of ``path,label1;label2;...`` rows (paths relative to ``root``) gives
    each image a set of labels; the classes are the sorted label names of that file.

    The test split comes from ``test_root`` (the same class folders; or, with
    ``test_labels_csv``, that CSV with paths relative to ``test_root`` or else ``root``), or
    without one from a deterministic split of ``root`` holding ``test_fraction`` of every
    class (of all rows for a CSV). ``mean``/``std`` default to ImageNet's, the usual choice for
    natural photographs.
    """

    in_channels = 3

    def __init__(
        self,
        root: str | Path,
        test_root: str | Path | None = None,
        image_size: int = 64,
        test_fraction: float = 0.2,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        name: str | None = None,
        labels_csv: str | Path | None = None,
        test_labels_csv: str | Path | None = None,
    ) -> None:
        if test_labels_csv is not None and labels_csv is None:
            raise ValueError("test_labels_csv needs labels_csv for the train split.")
        self.root = Path(root).expanduser()
        self.test_root = Path(test_root).expanduser() if test_root is not None else None
        self.labels_csv = Path(labels_csv).expanduser() if labels_csv is not None else None
        self.test_labels_csv = (
            Path(test_labels_csv).expanduser() if test_labels_csv is not None else None
        )
        has_test_split = (
            self.test_labels_csv is not None
            if self.labels_csv is not None
            else self.test_root is not None
        )
        if not has_test_split and not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        self.image_size = int(image_size)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.name = name or self.root.name or "imagefolder"
        self.multilabel = self.labels_csv is not None

    @cached_property
    def _train_files(self) -> dict[str, list[Path]]:
        return _scan_classes(self.root)

    @cached_property
    def _train_rows(self) -> list[tuple[Path, list[str]]]:
        return read_label_csv(self.labels_csv, self.root)

    @property
    def class_names(self) -> list[str]:
        """Class folder names under ``root`` (or label names of ``labels_csv``), sorted; the
        label is the index in this list."""
        if self.multilabel:
            return sorted({name for _, names in self._train_rows for name in names})
        return list(self._train_files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _labelled(self, classes: dict[str, list[Path]]) -> tuple[list[Path], list[int]]:
        index = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted(set(classes) - set(index))
        if unknown:
            raise ValueError(
                f"Test folder {self.test_root} has classes {unknown} that {self.root} lacks; "
                "the two folders need the same class sub-folders."
            )
        files = [f for name, paths in classes.items() for f in paths]
        targets = [index[name] for name, paths in classes.items() for _ in paths]
        return files, targets

    def _multi_hot(self, rows: list[tuple[Path, list[str]]], source: Path) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted({name for _, names in rows for name in names} - set(index))
        if unknown:
            raise ValueError(
                f"{source} has labels {unknown} that {self.labels_csv} lacks; the train CSV "
                "must name every class."
            )
        return multi_hot([[index[name] for name in names] for _, names in rows], len(index))

    def _build_multilabel(self, split: str) -> FolderDataset:
        if self.test_labels_csv is not None:
            if split == "train":
                rows, source = self._train_rows, self.labels_csv
            else:
                rows = read_label_csv(self.test_labels_csv, self.test_root or self.root)
                source = self.test_labels_csv
        else:
            train, test = stratified_split(
                [0] * len(self._train_rows), self.test_fraction, self.seed
            )
            rows = [self._train_rows[i] for i in (train if split == "train" else test)]
            source = self.labels_csv
        return FolderDataset([f for f, _ in rows], self._multi_hot(rows, source), self.image_size)

    def build(self, split: str) -> FolderDataset:
        check_split(split)
        if self.multilabel:
            return self._build_multilabel(split)
        if self.test_root is not None:
            classes = self._train_files if split == "train" else _scan_classes(self.test_root)
            files, targets = self._labelled(classes)
        else:
            all_files, all_targets = self._labelled(self._train_files)
            train, test = stratified_split(all_targets, self.test_fraction, self.seed)
            chosen = train if split == "train" else test
            files = [all_files[i] for i in chosen]
            targets = [all_targets[i] for i in chosen]
        return FolderDataset(files, targets, self.image_size)
