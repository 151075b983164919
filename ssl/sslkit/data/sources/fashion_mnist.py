"""Fashion-MNIST, read from its four idx files (gzip or plain)."""

from __future__ import annotations

import gzip
import zlib
from functools import cached_property
from pathlib import Path

import numpy as np

from sslkit.data.sources.base import (
    ArrayDataset,
    CorruptDataError,
    DatasetNotFoundError,
    DatasetSource,
    check_split,
)

# Where Debian's `dataset-fashion-mnist` package installs the four gzip idx files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Reads an idx file of unsigned bytes (gzip-compressed if it ends in .gz).

    Checks the magic number, the number of dimensions and the payload length, so that a
    truncated download or a wrong file fails here with the file's name instead of later as
    garbage pixels. The array is writable (it owns a mutable buffer), so that the training
    loaders can wrap it in a tensor without a copy.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = bytearray(handle.read())  # mutable: np.frombuffer gives a writable array
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
