"""Moving shapes: a labelled video dataset generated on the fly, for demos and tests.

The label is the kind of motion, which no single frame shows: ``horizontal``, ``vertical`` and
``diagonal`` translation (bouncing off the borders, either way along the axis), ``rotation``
(either sense, in place) and ``scaling`` (in place, growing and shrinking). Shape, colours,
start position, orientation, size, speed and phase are nuisances drawn per video, and every
class draws the size, position and orientation of the shape in any one frame from the same
distribution, so a single frame says nothing about the class. The classes are chosen to survive
the clip views: a horizontal flip turns left into right, clockwise into counter-clockwise and
one diagonal into the other, and a later clip of the same video moves along the same axis, so
flips and temporal offsets keep the class (vertical flips and rotations would not keep
horizontal vs vertical, so the clip views leave them off).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch

from sslkit.data.sources.base import DatasetSource, TensorArrayDataset, check_split
from sslkit.data.synthetic import NOISE_STD, SHAPES, _sample_colours, _shape_mask

MOTIONS = ("horizontal", "vertical", "diagonal", "rotation", "scaling")
#: Shapes whose rotation is visible (no circle or ring) and that differ from each other.
CLIP_SHAPES = ("triangle", "arrow", "l_shape", "t_shape")
MIN_RADIUS, MAX_RADIUS = 0.2, 0.3  # of the frame side
SPEED = (0.045, 0.09)  # translation per frame, of the frame side
TURN = (10.0, 22.0)  # rotation per frame, degrees
SCALE_PERIOD = (8.0, 16.0)  # frames per grow-and-shrink cycle
SCALE_AMPLITUDE = 0.35  # of the mean radius


def _bounce(position: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Free positions reflected into ``[low, high]``, as a ball bouncing between walls."""
    span = high - low
    x = np.mod(position - low, 2 * span)
    return np.where(x > span, 2 * span - x, x) + low


def render_motions(
    labels: np.ndarray,
    *,
    image_size: int,
    num_frames: int,
    shapes: Sequence[str],
    rng: np.random.Generator,
) -> np.ndarray:
    """One ``(3, F, H, W)`` uint8 video per motion id in ``labels``; randomness from ``rng``."""
    n, size, frames = len(labels), image_size, num_frames
    specs = [SHAPES[name]() for name in shapes]
    kind = rng.integers(0, len(specs), n)
    fg, bg0, bg1 = _sample_colours(rng, n)
    base = rng.uniform(MIN_RADIUS, MAX_RADIUS, n) * size
    reach = base * (1 + SCALE_AMPLITUDE)  # no shape ever leaves the frame
    start = reach[:, None] + rng.uniform(0, 1, (n, 2)) * (size - 2 * reach[:, None])
    speed = rng.uniform(*SPEED, n) * size * rng.choice([-1.0, 1.0], n)
    turn = np.deg2rad(rng.uniform(*TURN, n)) * rng.choice([-1.0, 1.0], n)
    period = rng.uniform(*SCALE_PERIOD, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    angle0 = rng.uniform(0, 2 * np.pi, n)
    diagonal_sign = rng.choice([-1.0, 1.0], n)
    gradient = rng.uniform(0, 2 * np.pi, n)
    t = np.arange(frames, dtype=np.float64)

    motion = np.asarray(MOTIONS)[np.asarray(labels)]
    step = np.zeros((n, 2))
    step[motion == "horizontal", 0] = speed[motion == "horizontal"]
    step[motion == "vertical", 1] = speed[motion == "vertical"]
    diag = motion == "diagonal"
    step[diag, 0] = speed[diag] / np.sqrt(2)
    step[diag, 1] = diagonal_sign[diag] * speed[diag] / np.sqrt(2)
    low, high = reach[:, None, None], size - reach[:, None, None]
    centre = _bounce(start[:, None] + t[None, :, None] * step[:, None], low, high)
    angle = angle0[:, None] + np.where(motion == "rotation", turn, 0.0)[:, None] * t
    # Every class draws its radius from the same distribution in any one frame: the scaling
    # class moves along the pulse, the others keep the value of one random point of it.
    scaling = (motion == "scaling")[:, None]
    pulse = np.sin(2 * np.pi * np.where(scaling, t, 0.0) / period[:, None] + phase[:, None])
    radius = base[:, None] * (1 + SCALE_AMPLITUDE * pulse)

    coords = (np.arange(size) + 0.5) / size - 0.5
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    videos = np.empty((n, 3, frames, size, size), dtype=np.uint8)
    for i in range(n):
        alpha = (
            np.stack(
                [
                    _shape_mask(specs[kind[i]], size, centre[i, f], radius[i, f], angle[i, f])
                    for f in range(frames)
                ]
            ).astype(np.float32)[..., None]
            / 255
        )
        along = np.cos(gradient[i]) * xs + np.sin(gradient[i]) * ys
        mix = np.clip(along / np.sqrt(0.5) / 2 + 0.5, 0, 1)[..., None]
        background = bg0[i] * (1 - mix) + bg1[i] * mix
        noisy = background + rng.normal(0, NOISE_STD, (frames, size, size, 3))
        video = noisy * (1 - alpha) + fg[i] * alpha
        videos[i] = np.clip(np.rint(video), 0, 255).astype(np.uint8).transpose(3, 0, 1, 2)
    return videos


class SyntheticClips(DatasetSource):
    """Balanced videos of ``num_classes`` motions (the first of ``MOTIONS``), RGB.

    Each video has ``num_frames`` frames of ``image_size`` px, long enough for two clips at
    different times. Deterministic for a ``seed``; train and test are drawn from different
    derived seeds and generated once, on first use, into one uint8 tensor per split.
    """

    name = "synthetic_video"
    in_channels = 3

    def __init__(
        self,
        num_train: int = 1024,
        num_test: int = 512,
        image_size: int = 32,
        num_frames: int = 16,
        num_classes: int = len(MOTIONS),
        shapes: Sequence[str] = CLIP_SHAPES,
        seed: int = 0,
    ) -> None:
        if not 2 <= num_classes <= len(MOTIONS):
            raise ValueError(
                f"num_classes must be between 2 and {len(MOTIONS)} (the motions: "
                f"{', '.join(MOTIONS)}), got {num_classes}."
            )
        unknown = sorted(set(shapes) - set(SHAPES))
        if unknown or not shapes:
            raise ValueError(f"shapes must be a non-empty list of {sorted(SHAPES)}, got {shapes}.")
        if min(num_train, num_test) < num_classes:
            raise ValueError(
                f"num_train={num_train} and num_test={num_test} must each be at least "
                f"num_classes={num_classes} so that every class appears in both splits."
            )
        if image_size < 8 or num_frames < 2:
            raise ValueError(
                f"videos need image_size >= 8 and num_frames >= 2, got {image_size} and "
                f"{num_frames}."
            )
        self.num_train = int(num_train)
        self.num_test = int(num_test)
        self.image_size = int(image_size)
        self.num_frames = int(num_frames)
        self.num_classes = int(num_classes)
        self.shapes = list(shapes)
        self.seed = int(seed)
        self.class_names = list(MOTIONS[: self.num_classes])
        self._splits: dict[str, TensorArrayDataset] = {}

    def build(self, split: str) -> TensorArrayDataset:
        check_split(split)
        if split not in self._splits:
            size = self.num_train if split == "train" else self.num_test
            rng = np.random.default_rng([self.seed, 11 + (split == "test")])
            labels = rng.permutation(np.arange(size) % self.num_classes)
            videos = render_motions(
                labels,
                image_size=self.image_size,
                num_frames=self.num_frames,
                shapes=self.shapes,
                rng=rng,
            )
            self._splits[split] = TensorArrayDataset(videos, labels.tolist())
        return self._splits[split]

    @cached_property
    def _train_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        videos = torch.from_numpy(self.build("train").samples)
        pixels = videos.transpose(0, 1).reshape(3, -1).double() / 255
        mean, std = pixels.mean(dim=1), pixels.std(dim=1)
        return tuple(mean.round(decimals=4).tolist()), tuple(std.round(decimals=4).tolist())

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of the train split (generates it if needed)."""
        return self._train_stats[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of the train split (generates it if needed)."""
        return self._train_stats[1]
