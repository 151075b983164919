"""Synthetic volumes: generated 3-D solids, one channel, for demos and tests of 3-D encoders.

The label is the solid; everything else is a nuisance drawn at random per volume: orientation
(a uniformly random rotation), size, position, the solid's and the background's intensity, a
background gradient and voxel noise. Every solid is mirror-symmetric and none turns into
another under a rotation, a flip or a moderate stretch, so the views of
:mod:`sslkit.augment.volumes` keep the class. Solids are drawn from signed distances with a
one-voxel soft edge (anti-aliased), so small volumes (16-24 voxels per side) stay clear.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from sslkit.data.sources.base import TensorArrayDataset, channel_stats
from sslkit.data.synthetic import GeneratedSource

MIN_RADIUS, MAX_RADIUS = 0.45, 0.75  # of the half side (coordinates in [-1, 1])
MIN_CONTRAST = 0.35  # between the solid's and the background's intensity, in 0..1 units
GRADIENT_RANGE = 0.15
NOISE_STD = 0.04


def _length(*parts: np.ndarray) -> np.ndarray:
    return np.sqrt(sum(p * p for p in parts))


def _sphere(p: np.ndarray) -> np.ndarray:
    return _length(*p) - 0.95


def _cube(p: np.ndarray) -> np.ndarray:
    q = np.abs(p) - 0.65
    return _length(*np.maximum(q, 0)) + np.minimum(q.max(axis=0), 0)


def _cylinder(p: np.ndarray) -> np.ndarray:
    x, y, z = p
    d = np.stack([_length(x, y) - 0.55, np.abs(z) - 0.95])
    return _length(*np.maximum(d, 0)) + np.minimum(d.max(axis=0), 0)


def _cone(p: np.ndarray) -> np.ndarray:
    x, y, z = p
    height, base = 0.95, 0.8  # apex at z = +height, base disc of radius `base` at z = -height
    slope = base / (2 * height)
    side = (_length(x, y) - slope * (height - z)) / np.sqrt(1 + slope**2)
    return np.maximum(side, np.abs(z) - height)


def _torus(p: np.ndarray) -> np.ndarray:
    x, y, z = p
    return _length(_length(x, y) - 0.65, z) - 0.3


def _shell(p: np.ndarray) -> np.ndarray:
    return np.abs(_length(*p) - 0.75) - 0.2


def _octahedron(p: np.ndarray) -> np.ndarray:
    return (np.abs(p).sum(axis=0) - 1.0) / np.sqrt(3)


#: Signed distance (negative inside) of each solid at points ``(3, ...)`` of its own frame,
#: radius about 1.
SOLIDS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sphere": _sphere,
    "cube": _cube,
    "cylinder": _cylinder,
    "cone": _cone,
    "torus": _torus,
    "shell": _shell,
    "octahedron": _octahedron,
}
SOLID_NAMES = list(SOLIDS)


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rotation matrices drawn uniformly (QR of Gaussian matrices, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def _intensities(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Solid and background intensities in [0, 1], at least ``MIN_CONTRAST`` apart."""
    solid, background = np.empty(n), np.empty(n)
    pending = np.arange(n)
    while pending.size:
        s, b = rng.uniform(0, 1, pending.size), rng.uniform(0, 1, pending.size)
        ok = np.abs(s - b) >= MIN_CONTRAST
        solid[pending[ok]], background[pending[ok]] = s[ok], b[ok]
        pending = pending[~ok]
    return solid, background


def render_volumes(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(1, size, size, size)`` uint8 volume per label (a solid id); randomness from
    ``rng``. Returns ``(N, 1, size, size, size)``."""
    n = len(labels)
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS, n)
    centre = rng.uniform(-1, 1, (n, 3)) * (1 - radius)[:, None]
    rotation = _random_rotations(rng, n)
    solid, background = _intensities(rng, n)
    gradient = rng.normal(size=(n, 3))
    gradient *= (
        rng.uniform(0, GRADIENT_RANGE, n)[:, None] / np.linalg.norm(gradient, axis=1)[:, None]
    )
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij")).reshape(3, -1)  # (3, V)
    voxel = 2 / size
    volumes = np.empty((n, 1, size, size, size), dtype=np.uint8)
    solids = list(SOLIDS.values())
    for i in range(n):
        local = rotation[i].T @ (grid - centre[i][:, None]) / radius[i]
        distance = solids[labels[i]](local) * radius[i]
        alpha = np.clip(0.5 - distance / voxel, 0, 1)
        back = background[i] + gradient[i] @ grid
        value = back * (1 - alpha) + solid[i] * alpha + rng.normal(0, NOISE_STD, alpha.shape)
        volumes[i, 0] = np.clip(np.rint(value * 255), 0, 255).reshape(size, size, size)
    return volumes


class SyntheticVolumes(GeneratedSource):
    """Balanced volumes of ``num_classes`` solids (the first of ``SOLID_NAMES``), one channel,
    ``image_size`` voxels per side.

    Deterministic for a ``seed``; train and test are drawn from different derived seeds and
    generated once, on first use, into one ``(N, 1, D, H, W)`` uint8 array per split.
    """

    spatial_dims = 3

    name = "synthetic_volumes"
    in_channels = 1

    def __init__(
        self,
        num_train: int = 2048,
        num_test: int = 512,
        image_size: int = 20,
        num_classes: int = 6,
        seed: int = 0,
    ) -> None:
        if not 2 <= num_classes <= len(SOLIDS):
            raise ValueError(
                f"num_classes must be between 2 and {len(SOLIDS)} (the solids available: "
                f"{', '.join(SOLID_NAMES)}), got {num_classes}."
            )
        self._set_sizes(num_train, num_test, num_classes, seed)
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 voxels, got {image_size}.")
        self.image_size = int(image_size)
        self.class_names = SOLID_NAMES[: self.num_classes]

    def generate(self, labels: np.ndarray, rng: np.random.Generator) -> TensorArrayDataset:
        return TensorArrayDataset(render_volumes(labels, self.image_size, rng), labels.tolist())

    @cached_property
    def _train_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return channel_stats(self.build("train").samples)
