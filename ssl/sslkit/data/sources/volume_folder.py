"""Any folder of 3-D volumes in class sub-folders: NumPy ``.npy``/``.npz`` and NIfTI
``.nii``/``.nii.gz`` files (MRI, CT, cryo-EM maps, ...).

Every volume is read once, when its split is built, normalised per volume and channel (values
clipped to the ``clip_percentiles`` of that volume, then scaled to [0, 1]), resized to
``image_size`` voxels per side (trilinear) and stored as uint8 (256 levels of the clipped
range), so a split is one ``(N, C, D, H, W)`` array in memory and batches are index gathers
with views made on the training device.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import nibabel
import numpy as np
import torch
import torch.nn.functional as F

from sslkit.data.sources.base import (
    CorruptDataError,
    DatasetSource,
    TensorArrayDataset,
    channel_stats,
    check_split,
)
from sslkit.data.sources.folder import class_files
from sslkit.data.subsets import stratified_split

VOLUME_EXTENSIONS = (".npy", ".npz", ".nii", ".nii.gz")


def _read_array(path: Path, array_key: str | None) -> np.ndarray:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float32))
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            if not archive.files:
                raise ValueError("the archive holds no array")
            key = array_key if array_key is not None else archive.files[0]
            if key not in archive.files:
                raise ValueError(f"no array {key!r} in it (arrays: {', '.join(archive.files)})")
            return archive[key]
    return np.load(path, allow_pickle=False)


def read_volume(path: Path, in_channels: int, array_key: str | None = None) -> np.ndarray:
    """A volume file as a float32 ``(C, D, H, W)`` array.

    A 3-D array is one channel. A 4-D array is channels-first ``(C, D, H, W)`` in ``.npy`` and
    ``.npz`` files and channels-last ``(X, Y, Z, C)`` in NIfTI files (the NIfTI layout).
    ``.npz`` files give their array ``array_key``, or their first one. Raises
    :class:`CorruptDataError` naming the file when it cannot be read or is not such a volume.
    """
    try:
        array = np.asarray(_read_array(path, array_key))
        if array.dtype.kind not in "biuf":
            raise ValueError(f"holds {array.dtype} values, not numbers")
        volume = array.astype(np.float32)
        if volume.ndim == 3:
            volume = volume[None]
        elif volume.ndim == 4 and path.name.lower().endswith((".nii", ".nii.gz")):
            volume = np.moveaxis(volume, -1, 0)
        if volume.ndim != 4 or volume.shape[0] != in_channels:
            raise ValueError(
                f"has shape {array.shape}; expected (D, H, W) or {in_channels} channels "
                "(C, D, H, W) (NIfTI: (X, Y, Z, C)) for data.source.in_channels="
                f"{in_channels}"
            )
        if min(volume.shape[1:]) < 2:
            raise ValueError(f"has shape {array.shape}, which is not a 3-D volume")
        if not np.isfinite(volume).all():
            raise ValueError("holds NaN or infinite values")
    except Exception as err:  # any failure to decode is this file's fault: name it
        reason = str(err) or type(err).__name__
        if isinstance(err, EOFError | zipfile.BadZipFile):
            reason = f"the file is cut short or damaged ({reason})"
        raise CorruptDataError(f"Cannot read volume {path}: {reason}.") from None
    return volume


def normalise_volume(volume: np.ndarray, size: int, percentiles: Sequence[float]) -> np.ndarray:
    """``(C, D, H, W)`` float -> ``(C, size, size, size)`` uint8: per channel, values clipped to
    the ``percentiles`` (low, high) of this volume and scaled to [0, 255], then resized
    (trilinear). A channel of one value becomes 0."""
    low, high = np.percentile(volume.reshape(len(volume), -1), percentiles, axis=1)
    span = np.where(high > low, high - low, 1.0)
    scaled = (np.clip(volume, low[:, None, None, None], high[:, None, None, None])
              - low[:, None, None, None]) / span[:, None, None, None]  # fmt: skip
    tensor = torch.from_numpy(scaled.astype(np.float32))[None]
    if tuple(tensor.shape[2:]) != (size, size, size):
        tensor = F.interpolate(tensor, size=(size,) * 3, mode="trilinear", align_corners=False)
    return (tensor[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


class VolumeFolder(DatasetSource):
    """A folder of volumes in class folders ``root/<class>/<volume>.{npy,npz,nii,nii.gz}``.

    The label is the class folder. The test split comes from ``test_root`` (the same class
    folders) or, without one, from a deterministic split of ``root`` holding ``test_fraction``
    of every class. Volumes are normalised per volume and channel and resized to
    ``image_size`` voxels per side (see the module). ``in_channels``: channels of every volume
    (3-D arrays are one channel). ``array_key``: the array of ``.npz`` files (default: the
    first). ``mean``/``std`` are those of the train split's voxels (after normalisation).
    """

    spatial_dims = 3

    def __init__(
        self,
        root: str | Path,
        test_root: str | Path | None = None,
        image_size: int = 32,
        in_channels: int = 1,
        test_fraction: float = 0.2,
        seed: int = 0,
        clip_percentiles: Sequence[float] = (0.5, 99.5),
        array_key: str | None = None,
        name: str | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.test_root = Path(test_root).expanduser() if test_root is not None else None
        if self.test_root is None and not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
        if int(image_size) < 2:
            raise ValueError(f"image_size must be at least 2 voxels, got {image_size}.")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        low, high = (float(p) for p in clip_percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(
                f"clip_percentiles is a range (low, high) within [0, 100], got {[low, high]}."
            )
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self.clip_percentiles = (low, high)
        self.array_key = array_key
        self.name = name or self.root.name or "volume_folder"
        self._splits: dict[str, TensorArrayDataset] = {}

    @cached_property
    def _train_files(self) -> dict[str, list[Path]]:
        return class_files(self.root, VOLUME_EXTENSIONS, kind="volume")

    @property
    def class_names(self) -> list[str]:
        """Class folder names under ``root``, sorted; the label is the index in this list."""
        return list(self._train_files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _files(self, split: str) -> tuple[list[Path], list[int]]:
        index = {name: i for i, name in enumerate(self.class_names)}
        if self.test_root is not None and split == "test":
            classes = class_files(self.test_root, VOLUME_EXTENSIONS, kind="volume")
            unknown = sorted(set(classes) - set(index))
            if unknown:
                raise ValueError(
                    f"Test folder {self.test_root} has classes {unknown} that {self.root} "
                    "lacks; the two folders need the same class sub-folders."
                )
        else:
            classes = self._train_files
        files = [f for name, paths in classes.items() for f in paths]
        targets = [index[name] for name, paths in classes.items() for _ in paths]
        if self.test_root is None:
            train, test = stratified_split(targets, self.test_fraction, self.seed)
            chosen = train if split == "train" else test
            files, targets = [files[i] for i in chosen], [targets[i] for i in chosen]
        return files, targets

    def build(self, split: str) -> TensorArrayDataset:
        check_split(split)
        if split not in self._splits:
            files, targets = self._files(split)
            size = self.image_size
            samples = np.empty((len(files), self.in_channels, size, size, size), dtype=np.uint8)
            errors = []
            for i, path in enumerate(files):
                try:
                    volume = read_volume(path, self.in_channels, self.array_key)
                except CorruptDataError as err:
                    errors.append(str(err))
                    continue
                samples[i] = normalise_volume(volume, size, self.clip_percentiles)
            if errors:
                more = f" {len(errors) - 1} more cannot be read: {' '.join(errors[1:6])}"
                raise CorruptDataError(
                    f"{errors[0]}{more if len(errors) > 1 else ''} Remove or replace "
                    f"{'these files' if len(errors) > 1 else 'this file'}."
                )
            self._splits[split] = TensorArrayDataset(samples, targets)
        return self._splits[split]

    @cached_property
    def _train_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return channel_stats(self.build("train").samples, min_std=1e-3)

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of the train split's normalised voxels (reads it if needed)."""
        return self._train_stats[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of the train split's normalised voxels."""
        return self._train_stats[1]
