"""Views of a batch of volumes ``(B, C, D, H, W)``, made on the device the batch is on.

Volumes (MRI, CT, cryo-EM, generated solids) have no canonical orientation, so their views
move along all three axes: a 3-D random resized crop, a flip along each axis and a rotation
by multiples of 90 degrees are one affine resampling per batch (``F.affine_grid`` and
``F.grid_sample``); then intensity scaling and shift, Gaussian noise and a separable 3-D
Gaussian blur, then normalisation. Every random parameter is drawn per volume on the CPU, from
torch's global generator or a given one, so a seed gives the same views on any device.

:class:`VolumeViews` has the interface the DataModule expects of batched views (``backend``
``"batched"``, ``batch(uint8 batch) -> list of views``), so volumes need no special case there.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sslkit.augment.views import VIEW_ARGS, check_num_views, normalize_stats
from sslkit.configurable import configurable

# Per-axis aspect ratios of a crop, log-uniform in this range (torchvision's 2-D range).
CROP_RATIO = (3 / 4, 4 / 3)


def _proper_rotations() -> Tensor:
    """The 24 rotations of a cube: signed permutation matrices with determinant +1."""
    found = []
    for order in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = torch.zeros(3, 3, dtype=torch.float64)
            for row, (column, sign) in enumerate(zip(order, signs, strict=True)):
                matrix[row, column] = sign
            if torch.linalg.det(matrix) > 0:
                found.append(matrix)
    return torch.stack(found)


ROTATIONS = _proper_rotations()


@dataclass(frozen=True)
class VolumeViewSpec:
    """The distribution of one augmented volume view; probabilities are per volume.

    ``min_scale``: the crop holds a fraction of the volume uniform in ``[min_scale, 1]``, each
    side stretched by a log-uniform ratio in 3/4..4/3 (the product kept; a side that would
    leave the volume is cut to it and the others stretched alike); ``flip_prob``: each
    of the three axes is flipped with this probability; ``rotate_prob``: one of the 24
    rotations of a cube, uniformly; ``intensity_prob``: intensities times a factor uniform in
    ``[1 - intensity_scale, 1 + intensity_scale]`` plus a shift uniform in
    ``[-intensity_shift, intensity_shift]`` (in [0, 1] units); ``invert_prob``: intensities
    inverted (``1 - x``, so a bright solid on a dark background turns dark on bright);
    ``noise_prob``: Gaussian noise of
    a standard deviation uniform in ``[0, noise_std]``; ``blur_prob``: Gaussian blur of a
    standard deviation (voxels) uniform in ``sigmas``.
    """

    min_scale: float
    flip_prob: float
    rotate_prob: float
    intensity_prob: float
    intensity_scale: float
    intensity_shift: float
    invert_prob: float
    noise_prob: float
    noise_std: float
    blur_prob: float
    sigmas: tuple[float, float]


@dataclass
class VolumeViewParams:
    """Random parameters of one view for ``n`` volumes (CPU tensors, one row per volume).

    ``theta`` is the ``(n, 3, 4)`` affine of ``F.affine_grid`` (output to input coordinates,
    normalised to [-1, 1], axes in x=W, y=H, z=D order) holding crop, flips and rotation;
    ``scale`` and ``shift`` the intensity change, ``invert`` whether intensities are inverted,
    ``noise`` the noise's standard deviation
    and ``sigma`` the blur's (0: none).
    """

    theta: Tensor
    scale: Tensor
    shift: Tensor
    invert: Tensor
    noise: Tensor
    sigma: Tensor


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _coin(n: int, p: float, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator) < p


def sample_volume_view(
    spec: VolumeViewSpec, n: int, generator: torch.Generator | None = None
) -> VolumeViewParams:
    """Parameters of ``n`` views drawn from ``spec``, in a fixed order from ``generator``."""
    volume = _uniform(n, spec.min_scale, 1.0, generator)
    log_ratio = _uniform(3 * n, *map(math.log, CROP_RATIO), generator).view(n, 3)
    log_ratio = log_ratio - log_ratio.mean(dim=1, keepdim=True)  # keep the product
    sides = (volume.log()[:, None] / 3 + log_ratio).exp()
    for _ in range(3):  # a side longer than the volume: cut it, stretch the others alike
        free = sides < 1.0
        sides = sides.clamp(max=1.0)
        missing = volume / sides.prod(dim=1)
        stretch = missing ** (1 / free.sum(dim=1).clamp(min=1))
        sides = torch.where(free, sides * stretch[:, None], sides)
    sides = sides.clamp(max=1.0)
    centre = (2 * torch.rand(n, 3, generator=generator, dtype=torch.float64) - 1) * (1 - sides)
    flips = torch.rand(n, 3, generator=generator) < spec.flip_prob
    rotate = _coin(n, spec.rotate_prob, generator)
    which = torch.randint(len(ROTATIONS), (n,), generator=generator)
    rotation = torch.where(
        rotate[:, None, None], ROTATIONS[which], torch.eye(3, dtype=torch.float64)
    )
    signs = 1.0 - 2.0 * flips.double()
    linear = sides[:, :, None] * rotation * signs[:, None, :]
    theta = torch.cat([linear, centre[:, :, None]], dim=2).float()

    jitter = _coin(n, spec.intensity_prob, generator)
    scale = _uniform(n, 1 - spec.intensity_scale, 1 + spec.intensity_scale, generator)
    shift = _uniform(n, -spec.intensity_shift, spec.intensity_shift, generator)
    scale = torch.where(jitter, scale, 1.0).float()
    shift = torch.where(jitter, shift, 0.0).float()
    noisy = _coin(n, spec.noise_prob, generator)
    noise = torch.where(noisy, _uniform(n, 0.0, spec.noise_std, generator), 0.0).float()
    blurred = _coin(n, spec.blur_prob, generator)
    sigma = torch.where(blurred, _uniform(n, *spec.sigmas, generator), 0.0).float()
    # drawn last and only when used, so recipes without inversion keep their random stream
    invert = (
        _coin(n, spec.invert_prob, generator)
        if spec.invert_prob > 0
        else torch.zeros(n, dtype=torch.bool)
    )
    return VolumeViewParams(
        theta=theta, scale=scale, shift=shift, invert=invert, noise=noise, sigma=sigma
    )


def gaussian_blur_3d(volumes: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur of ``(B, C, D, H, W)`` volumes, standard deviation ``sigma[b]``
    voxels per volume (0 leaves a volume unchanged); kernels of radius ``ceil(3 max sigma)``,
    cut at the volume's size, reflect padding."""
    batch, channels, *size = volumes.shape
    largest = float(sigma.max()) if sigma.numel() else 0.0
    radius = min(math.ceil(3 * largest), min(size) - 1)
    if radius < 1:
        return volumes
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=volumes.device)
    sigma = sigma.to(volumes.device, torch.float32)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp_min(1e-6)) ** 2)
    kernel = torch.where(sigma > 0, kernel, (offsets == 0).float()[None])
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    x = volumes.reshape(1, batch * channels, *size)
    for axis in range(3):
        shape = [batch * channels, 1, 1, 1, 1]
        shape[2 + axis] = 2 * radius + 1
        padding = [0] * 6
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, padding, mode="reflect"), kernel.view(shape), groups=batch * channels)
    return x.view(batch, channels, *size)


def render_volume_view(
    volumes: Tensor, params: VolumeViewParams, generator: torch.Generator | None = None
) -> Tensor:
    """A view of a ``(B, C, D, H, W)`` batch (uint8, or float in [0, 1]) in [0, 1] units
    before normalisation, at the batch's size, on its device. Noise is drawn on the CPU from
    ``generator`` so that it, too, is the same on every device."""
    device = volumes.device
    x = volumes.float() / 255 if volumes.dtype == torch.uint8 else volumes.float()
    grid = F.affine_grid(params.theta.to(device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    broadcast = (-1, 1, 1, 1, 1)
    x = x * params.scale.to(device).view(broadcast) + params.shift.to(device).view(broadcast)
    if bool(params.invert.any()):
        x = torch.where(params.invert.to(device).view(broadcast), 1 - x, x)
    if bool((params.noise > 0).any()):
        noise = torch.randn(x.shape, generator=generator) * params.noise.view(broadcast)
        x = x + noise.to(device)
    return gaussian_blur_3d(x, params.sigma)


class VolumeViews:
    """The views of one volume recipe: one :class:`VolumeViewSpec` per view, made per batch.

    :meth:`batch` turns a ``(B, C, D, H, W)`` batch into one normalised batch per view on the
    batch's device. Volumes are always held in memory, so ``backend`` is ``"batched"``.
    """

    backend = "batched"

    def __init__(
        self,
        specs: Sequence[VolumeViewSpec],
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        in_channels: int,
    ) -> None:
        check_num_views(len(specs))
        self.specs = list(specs)
        self.image_size = int(image_size)
        self.mean, self.std = normalize_stats(mean, std, in_channels)
        self.in_channels = in_channels

    def __len__(self) -> int:
        return len(self.specs)

    def __call__(self, sample: object) -> list[Tensor]:
        raise TypeError(
            "volume views are made per batch on the training device (views.batch); the "
            "dataset must be held in memory as one (N, C, D, H, W) uint8 array"
        )

    def batch(self, volumes: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """Normalised views of a ``(B, C, D, H, W)`` batch, each with its own parameters per
        volume, drawn from ``generator`` (default: torch's global CPU generator)."""
        if volumes.ndim != 5 or volumes.shape[1] != self.in_channels:
            raise ValueError(
                f"volume views expect a (B, {self.in_channels}, D, H, W) batch, got "
                f"{tuple(volumes.shape)}; images need an image recipe such as augment=simclr."
            )
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.mean, device=volumes.device).view(shape)
        std = torch.tensor(self.std, device=volumes.device).view(shape)
        views = []
        for spec in self.specs:
            params = sample_volume_view(spec, len(volumes), generator)
            views.append(render_volume_view(volumes, params, generator).sub_(mean).div_(std))
        return views

    def __repr__(self) -> str:
        return f"{type(self).__name__}(specs={self.specs})"


def volume_view_spec(
    *,
    gaussian_blur: float,
    noise: float,
    min_scale: float = 0.25,
    flip_prob: float = 0.5,
    rotate_prob: float = 1.0,
    intensity_prob: float = 0.8,
    intensity_scale: float = 0.4,
    intensity_shift: float = 0.2,
    invert_prob: float = 0.0,
    noise_std: float = 0.1,
    sigmas: Sequence[float] = (0.1, 1.5),
    suffix: str = "",
) -> VolumeViewSpec:
    """One volume view's distribution, with the defaults every volume recipe shares (see
    :class:`VolumeViewSpec`); ``gaussian_blur`` and ``noise`` are the probabilities of blur and
    noise. ``suffix`` names the view in error messages (e.g. ``[1]``)."""
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale is a fraction of the volume in (0, 1], got {min_scale}.")
    probabilities = {
        "flip_prob": flip_prob,
        "rotate_prob": rotate_prob,
        "intensity_prob": intensity_prob,
        "invert_prob": invert_prob,
        f"gaussian_blur{suffix}": gaussian_blur,
        f"noise{suffix}": noise,
    }
    for key, value in probabilities.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} is a probability in [0, 1], got {value}.")
    for key, value in {
        "intensity_scale": intensity_scale,
        "intensity_shift": intensity_shift,
        "noise_std": noise_std,
    }.items():
        if value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}.")
    low, high = float(sigmas[0]), float(sigmas[1])
    if not 0 < low <= high:
        raise ValueError(f"sigmas is a range (min, max) of positive blur radii, got {[low, high]}.")
    return VolumeViewSpec(
        min_scale=float(min_scale),
        flip_prob=float(flip_prob),
        rotate_prob=float(rotate_prob),
        intensity_prob=float(intensity_prob),
        intensity_scale=float(intensity_scale),
        intensity_shift=float(intensity_shift),
        invert_prob=float(invert_prob),
        noise_prob=float(noise),
        noise_std=float(noise_std),
        blur_prob=float(gaussian_blur),
        sigmas=(low, high),
    )


@configurable(runtime=VIEW_ARGS, exclude=("suffix",), shared=f"{__name__}.volume_view_spec")
def simclr_volume_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    num_views: int = 2,
    gaussian_blur: float = 0.5,
    noise: float = 0.5,
    **shared: object,
) -> VolumeViews:
    """SimCLR-style volume views: ``num_views`` views drawn independently from one
    distribution (3-D crop, flips, 90-degree rotations, intensity, noise, blur).
    ``shared``: the keys every volume recipe shares, see :func:`volume_view_spec`."""
    check_num_views(num_views)
    spec = volume_view_spec(gaussian_blur=gaussian_blur, noise=noise, **shared)
    return VolumeViews(
        [spec] * int(num_views),
        image_size=image_size,
        mean=mean,
        std=std,
        in_channels=in_channels,
    )


@configurable(runtime=VIEW_ARGS, exclude=("suffix",), shared=f"{__name__}.volume_view_spec")
def byol_volume_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    gaussian_blur: Sequence[float] = (1.0, 0.1),
    noise: Sequence[float] = (0.0, 0.5),
    **shared: object,
) -> VolumeViews:
    """BYOL's two asymmetric views for volumes: the same crops, flips, rotations and intensity
    changes, but blur and noise with a different probability per view (``gaussian_blur`` and
    ``noise`` hold the first and the second view's, as BYOL does with blur and solarisation).
    ``shared``: the keys every volume recipe shares, see :func:`volume_view_spec`."""
    for key, value in {"gaussian_blur": gaussian_blur, "noise": noise}.items():
        if len(value) != 2:
            raise ValueError(
                f"{key} holds one probability per view (first, second), got {list(value)}."
            )
    specs = [
        volume_view_spec(gaussian_blur=gaussian_blur[i], noise=noise[i], suffix=f"[{i}]", **shared)
        for i in range(2)
    ]
    return VolumeViews(specs, image_size=image_size, mean=mean, std=std, in_channels=in_channels)
