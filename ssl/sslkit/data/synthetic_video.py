"""Moving shapes: a labelled video dataset generated on the fly, for demos and tests.

The label is the kind of motion, which no single frame shows: ``translation`` (a straight line
in any direction, bouncing off the borders), ``rotation`` (in place, either sense), ``scaling``
(in place, growing and shrinking) and ``orbit`` (a circle around a point, either sense, without
turning). Shape, colours, position, orientation, size, direction, speed and phase are nuisances
drawn per video, and every class draws the size, position and orientation of the shape in any
one frame from about the same distribution, so a single frame says next to nothing about the
class. The classes survive every clip view: flips and rotations of a whole clip turn a
translation into another translation, a clockwise turn or orbit into a counter-clockwise one,
and a later clip of the same video moves the same way. So the views may rotate clips, which
takes the orientation of the shape and the direction of motion away as instance cues that the
two clips of a video would otherwise share.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from sslkit.data.sources.base import TensorArrayDataset, channel_stats
from sslkit.data.synthetic import (
    NOISE_STD,
    SHAPES,
    GeneratedSource,
    _sample_colours,
    _shape_mask,
)

MOTIONS = ("translation", "rotation", "scaling", "orbit")
#: Shapes whose rotation is visible (no circle or ring) and that differ from each other.
CLIP_SHAPES = ("triangle", "arrow", "l_shape", "t_shape")
MIN_RADIUS, MAX_RADIUS = 0.18, 0.25  # of the frame side
SPEED = (0.06, 0.1)  # translation per frame, of the frame side
TURN = (12.0, 24.0)  # rotation per frame, degrees
SCALE_PERIOD = (8.0, 14.0)  # frames per grow-and-shrink cycle
SCALE_AMPLITUDE = 0.4  # of the mean radius
ORBIT_RADIUS = (0.06, 0.12)  # of the frame side
ORBIT_TURN = (20.0, 35.0)  # degrees along the orbit per frame
#: Grey levels of the shape and of the two ends of the background gradient without colours.
PLAIN_COLOURS = (220.0, 40.0, 60.0)


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
    colours: bool = True,
) -> np.ndarray:
    """One ``(3, F, H, W)`` uint8 video per motion id in ``labels``; randomness from ``rng``.
    ``colours=False``: every video has the same colours (:data:`PLAIN_COLOURS`)."""
    n, size, frames = len(labels), image_size, num_frames
    specs = [SHAPES[name]() for name in shapes]
    kind = rng.integers(0, len(specs), n)
    if colours:
        fg, bg0, bg1 = _sample_colours(rng, n)
    else:
        fg, bg0, bg1 = (np.full((n, 3), value) for value in PLAIN_COLOURS)
    base = rng.uniform(MIN_RADIUS, MAX_RADIUS, n) * size
    reach = base * (1 + SCALE_AMPLITUDE)  # no shape ever leaves the frame
    orbit = rng.uniform(*ORBIT_RADIUS, n) * size
    start = reach[:, None] + rng.uniform(0, 1, (n, 2)) * (size - 2 * reach[:, None])
    heading = rng.uniform(0, 2 * np.pi, n)
    speed = rng.uniform(*SPEED, n) * size
    sense = rng.choice([-1.0, 1.0], n)
    turn = np.deg2rad(rng.uniform(*TURN, n)) * sense
    orbit_turn = np.deg2rad(rng.uniform(*ORBIT_TURN, n)) * sense
    period = rng.uniform(*SCALE_PERIOD, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    angle0 = rng.uniform(0, 2 * np.pi, n)
    gradient = rng.uniform(0, 2 * np.pi, n)
    t = np.arange(frames, dtype=np.float64)

    motion = np.asarray(MOTIONS)[np.asarray(labels)]
    moving = (motion == "translation")[:, None, None]
    step = np.where(moving[:, 0], np.stack([np.cos(heading), np.sin(heading)], 1), 0.0)
    low, high = reach[:, None, None], size - reach[:, None, None]
    centre = _bounce(
        start[:, None] + t[None, :, None] * (speed[:, None] * step)[:, None], low, high
    )
    # An orbit's centre keeps the whole circle inside the frame.
    circling = (motion == "orbit")[:, None]
    around = np.clip(start, reach[:, None] + orbit[:, None], size - reach[:, None] - orbit[:, None])
    along = phase[:, None] + orbit_turn[:, None] * t
    ring = np.stack([np.cos(along), np.sin(along)], axis=-1) * orbit[:, None, None]
    centre = np.where(circling[..., None], around[:, None] + ring, centre)
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
        slope = np.cos(gradient[i]) * xs + np.sin(gradient[i]) * ys
        mix = np.clip(slope / np.sqrt(0.5) / 2 + 0.5, 0, 1)[..., None]
        background = bg0[i] * (1 - mix) + bg1[i] * mix
        noisy = background + rng.normal(0, NOISE_STD, (frames, size, size, 3))
        video = noisy * (1 - alpha) + fg[i] * alpha
        videos[i] = np.clip(np.rint(video), 0, 255).astype(np.uint8).transpose(3, 0, 1, 2)
    return videos


class SyntheticClips(GeneratedSource):
    """Balanced videos of ``num_classes`` motions (the first of ``MOTIONS``), RGB.

    ``colours``: random colours per video (shape, background and its gradient), a nuisance;
    ``False`` paints every video alike (light-grey shape on a dark-grey gradient).

    Each video has ``num_frames`` frames of ``image_size`` px, long enough for two clips at
    different times. Deterministic for a ``seed``; train and test are drawn from different
    derived seeds and generated once, on first use, into one uint8 tensor per split.
    """

    spatial_dims = 3

    name = "synthetic_video"
    in_channels = 3

    seed_salt = 11

    def __init__(
        self,
        num_train: int = 1024,
        num_test: int = 512,
        image_size: int = 32,
        num_frames: int = 16,
        num_classes: int = len(MOTIONS),
        shapes: Sequence[str] = CLIP_SHAPES,
        colours: bool = True,
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
        self._set_sizes(num_train, num_test, num_classes, seed)
        if image_size < 8 or num_frames < 2:
            raise ValueError(
                f"videos need image_size >= 8 and num_frames >= 2, got {image_size} and "
                f"{num_frames}."
            )
        self.image_size = int(image_size)
        self.num_frames = int(num_frames)
        self.shapes = list(shapes)
        self.colours = bool(colours)
        self.class_names = list(MOTIONS[: self.num_classes])

    def generate(self, labels: np.ndarray, rng: np.random.Generator) -> TensorArrayDataset:
        videos = render_motions(
            labels,
            image_size=self.image_size,
            num_frames=self.num_frames,
            shapes=self.shapes,
            rng=rng,
            colours=self.colours,
        )
        return TensorArrayDataset(videos, labels.tolist())

    @cached_property
    def _train_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return channel_stats(self.build("train").samples)
