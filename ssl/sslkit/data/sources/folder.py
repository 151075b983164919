"""Any folder of images: class sub-folders, or a multi-label CSV of paths and labels."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import find_classes

from sslkit.data.sources.base import (
    CorruptDataError,
    DatasetNotFoundError,
    DatasetSource,
    as_targets,
    check_split,
    label_of,
    multi_hot,
)
from sslkit.data.subsets import stratified_split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

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


def class_files(
    root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS, kind: str = "image"
) -> dict[str, list[Path]]:
    """Files per class folder whose name ends with one of ``extensions`` (torchvision's
    ``find_classes``, hidden folders left out); ``kind`` names the files in messages."""
    example = f"DIR/<class>/<{kind}>{extensions[0]}"
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{kind.capitalize()} folder {root.resolve()} does not exist. Set data.source.root=DIR "
            f"to a folder with one sub-folder of {kind}s per class ({example})."
        )
    try:
        names = [name for name in find_classes(str(root))[0] if not name.startswith(".")]
    except FileNotFoundError:  # no class folder at all
        names = []
    classes = {
        name: sorted(
            p
            for p in (root / name).rglob("*")
            if p.name.lower().endswith(tuple(extensions))
            and not p.name.startswith(".")
            and p.is_file()
        )
        for name in names
    }
    if not any(classes.values()):
        raise DatasetNotFoundError(
            f"No {kind}s found in class sub-folders of {root.resolve()} (extensions: "
            f"{', '.join(extensions)}). The expected layout is {example}."
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
    #: The files this source reads in its class folders, and what messages call them.
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    kind = "image"

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
        return class_files(self.root, self.extensions, self.kind)

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

    def _build_multilabel(self, split: str) -> Dataset:
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
        return self.dataset_of([f for f, _ in rows], self._multi_hot(rows, source))

    def dataset_of(self, files: list[Path], targets: list[int] | np.ndarray) -> Dataset:
        """The split dataset reading ``files``; subclasses read other kinds of files."""
        return FolderDataset(files, targets, self.image_size)

    def build(self, split: str) -> Dataset:
        check_split(split)
        if self.multilabel:
            return self._build_multilabel(split)
        if self.test_root is not None:
            classes = (
                self._train_files
                if split == "train"
                else class_files(self.test_root, self.extensions, self.kind)
            )
            files, targets = self._labelled(classes)
        else:
            all_files, all_targets = self._labelled(self._train_files)
            train, test = stratified_split(all_targets, self.test_fraction, self.seed)
            chosen = train if split == "train" else test
            files = [all_files[i] for i in chosen]
            targets = [all_targets[i] for i in chosen]
        return self.dataset_of(files, targets)
