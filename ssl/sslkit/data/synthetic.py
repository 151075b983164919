"""Synthetic shapes: a labelled image dataset generated on the fly, for demos and tests.

The label is the kind of shape; everything else is a nuisance drawn at random per image:
foreground and background colour, a background gradient with pixel noise, position, scale
and rotation. Raw pixels therefore carry little about the class while the shape stays
clearly visible even at 32x32, so methods that learn invariances beat the pixel baseline.
Shapes are chosen to stay distinct under any rotation (no square *and* diamond).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from sslkit.data.sources.base import (
    ArrayDataset,
    DatasetSource,
    channel_stats,
    check_split,
    multi_hot,
)

# A shape is a list of (polygon, fill) in unit coordinates (x right, y down, radius about 1);
# fill 0 cuts a hole into the polygons drawn before it.
Polygon = np.ndarray
ShapeSpec = list[tuple[Polygon, int]]

SUPERSAMPLING = 4
MIN_RADIUS, MAX_RADIUS = 0.26, 0.42  # of the image side
MIN_LUMINANCE_GAP = 60.0  # between foreground and background, in 0..255 units
GRADIENT_RANGE = 50.0  # the background's second colour is within this of the first
NOISE_STD = 6.0


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> Polygon:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _box(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def _circle() -> ShapeSpec:
    return [(_regular(64), 255)]


def _square() -> ShapeSpec:
    return [(_box(-0.72, -0.72, 0.72, 0.72), 255)]


def _triangle() -> ShapeSpec:
    return [(_regular(3) + [0.0, 0.18], 255)]


def _cross() -> ShapeSpec:
    a, w = 0.95, 0.27
    return [
        (
            np.array(
                [
                    [-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w],
                    [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w],
                ]
            ),
            255,
        )
    ]  # fmt: skip


def _star() -> ShapeSpec:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42, phase=-np.pi / 2 + np.pi / 5)
    points = np.empty((10, 2))
    points[0::2], points[1::2] = outer, inner
    return [(points + [0.0, 0.08], 255)]


def _ring() -> ShapeSpec:
    return [(_regular(64), 255), (_regular(64, 0.55), 0)]


def _heart() -> ShapeSpec:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y + 2.5], axis=1) / 16.5, 255)]


def _arrow() -> ShapeSpec:
    points = [[-1, -0.22], [0.1, -0.22], [0.1, -0.62], [1, 0], [0.1, 0.62], [0.1, 0.22], [-1, 0.22]]
    return [(np.array(points, dtype=float), 255)]


def _l_shape() -> ShapeSpec:
    points = [[-0.6, -0.9], [-0.12, -0.9], [-0.12, 0.42], [0.75, 0.42], [0.75, 0.9], [-0.6, 0.9]]
    return [((np.array(points, dtype=float) - [0.07, 0.0]) * 0.92, 255)]


def _crescent() -> ShapeSpec:
    return [(_regular(64), 255), (_regular(64, 0.82) + [0.45, -0.1], 0)]


def _frame() -> ShapeSpec:
    return [(_box(-0.75, -0.75, 0.75, 0.75), 255), (_box(-0.4, -0.4, 0.4, 0.4), 0)]


def _t_shape() -> ShapeSpec:
    return [(_box(-0.78, -0.8, 0.78, -0.36), 255), (_box(-0.22, -0.4, 0.22, 0.85), 255)]


def _semicircle() -> ShapeSpec:
    angles = np.linspace(0, np.pi, 33)
    arc = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return [(arc - [0.0, 0.42], 255)]


SHAPES: dict[str, Callable[[], ShapeSpec]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "star": _star,
    "ring": _ring,
    "heart": _heart,
    "arrow": _arrow,
    "l_shape": _l_shape,
    "crescent": _crescent,
    "frame": _frame,
    "t_shape": _t_shape,
    "semicircle": _semicircle,
}
SHAPE_NAMES = list(SHAPES)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _sample_colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Foreground, background and background-gradient colours with a luminance gap, so the
    shape stays visible in colour and in grayscale."""
    fg, bg0, bg1 = (np.empty((n, 3)) for _ in range(3))
    pending = np.arange(n)
    while pending.size:
        k = pending.size
        f = rng.uniform(0, 255, (k, 3))
        b0 = rng.uniform(0, 255, (k, 3))
        b1 = np.clip(b0 + rng.uniform(-GRADIENT_RANGE, GRADIENT_RANGE, (k, 3)), 0, 255)
        gap = np.minimum(
            np.abs(_luminance(f) - _luminance(b0)), np.abs(_luminance(f) - _luminance(b1))
        )
        ok = gap >= MIN_LUMINANCE_GAP
        fg[pending[ok]], bg0[pending[ok]], bg1[pending[ok]] = f[ok], b0[ok], b1[ok]
        pending = pending[~ok]
    return fg, bg0, bg1


def _shape_mask(
    spec: ShapeSpec, size: int, centre: np.ndarray, radius: float, angle: float
) -> np.ndarray:
    """Anti-aliased coverage (0..255) of a shape, drawn supersampled and box-filtered down."""
    big = size * SUPERSAMPLING
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for polygon, fill in spec:
        points = (polygon @ rotation.T * radius + centre) * SUPERSAMPLING
        draw.polygon([tuple(p) for p in points], fill=fill)
    return np.asarray(mask.resize((size, size), Image.Resampling.BOX))


def render_shapes(
    labels: np.ndarray | Sequence[Sequence[int]],
    image_size: int,
    rng: np.random.Generator,
    *,
    grid: int = 1,
) -> np.ndarray:
    """Renders one image per label as a (N, H, W, 3) uint8 array; all randomness from ``rng``.

    ``labels`` holds one shape id per image, or one sequence of distinct shape ids per image
    (multi-label). With ``grid > 1`` the image is cut into ``grid x grid`` cells and each shape
    of an image gets a cell of its own, drawn at random, so shapes never overlap; the shapes of
    an image share its foreground colour.
    """
    shape_sets = [[int(s)] if np.ndim(s) == 0 else [int(x) for x in s] for s in labels]
    n, size = len(shape_sets), image_size
    if any(len(shapes) > grid * grid for shapes in shape_sets):
        raise ValueError(f"an image holds more shapes than the {grid}x{grid} grid has cells")
    owner = np.repeat(np.arange(n), [len(shapes) for shapes in shape_sets])
    kinds = [kind for shapes in shape_sets for kind in shapes]
    cell = size / grid
    fg, bg0, bg1 = _sample_colours(rng, n)
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS, len(kinds)) * cell
    centre = radius[:, None] + rng.uniform(0, 1, (len(kinds), 2)) * (cell - 2 * radius[:, None])
    angle = rng.uniform(0, 2 * np.pi, len(kinds))
    direction = rng.uniform(0, 2 * np.pi, n)
    if grid > 1:
        cells = np.concatenate(
            [rng.permutation(grid * grid)[: len(shapes)] for shapes in shape_sets]
        )
        centre += np.stack([cells % grid, cells // grid], axis=1) * cell
    specs = [spec() for spec in SHAPES.values()]

    images = np.empty((n, size, size, 3), dtype=np.uint8)
    coords = (np.arange(size) + 0.5) / size - 0.5
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    for start in range(0, n, 512):
        stop = min(start + 512, n)
        idx = np.arange(start, stop)
        alpha = np.zeros((stop - start, size, size), dtype=np.float32)
        for i in np.flatnonzero((owner >= start) & (owner < stop)):
            mask = _shape_mask(specs[kinds[i]], size, centre[i], radius[i], angle[i])
            np.maximum(alpha[owner[i] - start], mask / np.float32(255), out=alpha[owner[i] - start])
        alpha = alpha[..., None]
        along = (
            np.cos(direction[idx])[:, None, None] * xs + np.sin(direction[idx])[:, None, None] * ys
        )
        t = np.clip(along / np.sqrt(0.5) / 2 + 0.5, 0, 1)[..., None]
        background = bg0[idx, None, None] * (1 - t) + bg1[idx, None, None] * t
        background += rng.normal(0, NOISE_STD, background.shape)
        image = background * (1 - alpha) + fg[idx, None, None] * alpha
        images[start:stop] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return images


class GeneratedSource(DatasetSource):
    """What the generated datasets share: a check that every class fits in both splits, one
    balanced, shuffled draw of labels per split from a seed derived from ``seed`` (train and
    test from different ones), each split generated once on first use by :meth:`generate`, and
    ``mean``/``std`` from the train split (:meth:`_train_stats`)."""

    # The train split draws from [seed, seed_salt], the test split from [seed, seed_salt + 1].
    seed_salt = 1

    def _set_sizes(self, num_train: int, num_test: int, num_classes: int, seed: int) -> None:
        if min(num_train, num_test) < num_classes:
            raise ValueError(
                f"num_train={num_train} and num_test={num_test} must each be at least "
                f"num_classes={num_classes} so that every class appears in both splits."
            )
        self.num_train = int(num_train)
        self.num_test = int(num_test)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self._splits: dict[str, Dataset] = {}

    def build(self, split: str) -> Dataset:
        check_split(split)
        if split not in self._splits:
            size = self.num_train if split == "train" else self.num_test
            rng = np.random.default_rng([self.seed, self.seed_salt + (split == "test")])
            labels = rng.permutation(np.arange(size) % self.num_classes)
            self._splits[split] = self.generate(labels, rng)
        return self._splits[split]

    @abstractmethod
    def generate(self, labels: np.ndarray, rng: np.random.Generator) -> Dataset:
        """The samples of one split, class ``labels[i]`` for sample ``i``, drawn from ``rng``."""

    @abstractmethod
    def _train_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the train split, in [0, 1] units."""

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of the train split (generates it if needed)."""
        return self._train_stats[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of the train split (generates it if needed)."""
        return self._train_stats[1]


class SyntheticShapes(GeneratedSource):
    """Balanced images of ``num_classes`` shape kinds (the first of ``SHAPE_NAMES``), RGB.

    Deterministic for a ``seed``; train and test are drawn from different derived seeds.
    Images are generated once, on first use, into one uint8 array per split.

    ``multilabel=True`` draws 1 to ``max_shapes_per_image`` distinct shapes per image (uniformly
    many), each in its own cell of a grid, and the label is the set of shapes present, as a
    multi-hot row. Every class is the first shape of an equal share of the images, so every
    class appears in both splits.
    """

    name = "synthetic"
    in_channels = 3

    def __init__(
        self,
        num_train: int = 4096,
        num_test: int = 1024,
        image_size: int = 32,
        num_classes: int = 10,
        seed: int = 0,
        multilabel: bool = False,
        max_shapes_per_image: int = 3,
    ) -> None:
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(
                f"num_classes must be between 2 and {len(SHAPES)} (the shapes available: "
                f"{', '.join(SHAPE_NAMES)}), got {num_classes}."
            )
        self._set_sizes(num_train, num_test, num_classes, seed)
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}.")
        self.multilabel = bool(multilabel)
        self.max_shapes_per_image = int(max_shapes_per_image) if self.multilabel else 1
        self.grid = math.ceil(math.sqrt(self.max_shapes_per_image))
        if not 1 <= self.max_shapes_per_image <= num_classes:
            raise ValueError(
                f"max_shapes_per_image must be between 1 and num_classes={num_classes} "
                f"(the shapes of an image are distinct), got {max_shapes_per_image}."
            )
        if image_size < 8 * self.grid:
            raise ValueError(
                f"max_shapes_per_image={max_shapes_per_image} places shapes on a "
                f"{self.grid}x{self.grid} grid, which needs image_size >= {8 * self.grid}, "
                f"got {image_size}."
            )
        self.image_size = int(image_size)
        self.class_names = SHAPE_NAMES[: self.num_classes]

    def generate(self, labels: np.ndarray, rng: np.random.Generator) -> ArrayDataset:
        if not self.multilabel:
            return ArrayDataset(render_shapes(labels, self.image_size, rng), labels.tolist())
        shape_sets = self._shape_sets(labels, rng)
        images = render_shapes(shape_sets, self.image_size, rng, grid=self.grid)
        return ArrayDataset(images, multi_hot(shape_sets, self.num_classes))

    def _shape_sets(self, first: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        """``first[i]`` plus up to ``max_shapes_per_image - 1`` other distinct random shapes."""
        counts = rng.integers(1, self.max_shapes_per_image + 1, len(first))
        keys = rng.random((len(first), self.num_classes))
        keys[np.arange(len(first)), first] = np.inf
        others = keys.argsort(axis=1)
        return [
            [int(f), *others[i, : c - 1].tolist()]
            for i, (f, c) in enumerate(zip(first, counts, strict=True))
        ]

    @cached_property
    def _train_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return channel_stats(self.build("train").images, channel_axis=-1)
