"""Multi-view recipes: what each view's distribution is, made either per image with PIL in
DataLoader workers or per batch on the training device.

A view factory is called by the DataModule with the dataset's geometry and statistics
(``image_size``, ``mean``, ``std``, ``in_channels``) and returns :class:`Views`: one
:class:`~sslkit.augment.batched.ViewSpec` per view (``None`` for an un-augmented view), which
turns one PIL image into a list of normalised tensors (lightly's transforms) or a uint8 batch into
a list of normalised batches (:mod:`sslkit.augment.batched`). ``backend`` says which path
the DataModule takes: ``auto`` (batched when the dataset is held in memory, else PIL), ``batched``
or ``pil``. Hydra configs hold the factories as partials with only the tunable keys, so the same
``augment=simclr`` works on every dataset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightly.transforms import BYOLView1Transform
from PIL import Image
from torch import Tensor
from torchvision import transforms as transforms_v1
from torchvision.transforms import v2 as T

from sslkit.augment.batched import ViewSpec, render_view, sample_view
from sslkit.configurable import configurable

ImageTransform = Callable[[Image.Image], torch.Tensor]
ViewTransform = Callable[[Image.Image], list[torch.Tensor]]
ViewFactory = Callable[..., "Views"]

BACKENDS = ("auto", "batched", "pil")

#: What a DataModule passes every view factory: the dataset's size, statistics and channels.
VIEW_ARGS = ("image_size", "mean", "std", "in_channels")

_MODES = {1: "L", 3: "RGB"}


def image_mode(in_channels: int) -> str:
    """PIL mode for a channel count, so every image reaches the network with that many channels."""
    if in_channels not in _MODES:
        raise ValueError(
            f"in_channels={in_channels} is not supported: images are grayscale (1) or RGB (3)."
        )
    return _MODES[in_channels]


class ConvertMode:
    """Converts a PIL image to a fixed mode (e.g. RGBA or palette files in an RGB dataset).

    A class rather than a lambda so that transforms pickle into DataLoader worker processes.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def normalize_stats(
    mean: Sequence[float], std: Sequence[float], in_channels: int
) -> tuple[list[float], list[float]]:
    """Validates per-channel statistics: one entry per channel and a positive std."""
    mean_list, std_list = [float(m) for m in mean], [float(s) for s in std]
    if len(mean_list) != in_channels or len(std_list) != in_channels:
        raise ValueError(
            f"mean {mean_list} and std {std_list} need one entry per channel "
            f"(in_channels={in_channels})."
        )
    if any(s <= 0 for s in std_list):
        raise ValueError(f"std must be positive per channel, got {std_list}.")
    return mean_list, std_list


def _check_image_size(image_size: int) -> None:
    if int(image_size) < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")


def check_num_views(num_views: int) -> None:
    if int(num_views) < 1:
        raise ValueError(f"num_views must be at least 1, got {num_views}.")


def _check_crop_and_probabilities(min_scale: float, probabilities: Mapping[str, float]) -> None:
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale is a fraction of the image area in (0, 1], got {min_scale}.")
    for key, value in probabilities.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} is a probability in [0, 1], got {value}.")


def _rotation_degrees(
    rr_degrees: float | Sequence[float] | None,
) -> float | tuple[float, ...] | None:
    """lightly takes a number or a tuple; Hydra hands over lists."""
    if rr_degrees is None or isinstance(rr_degrees, int | float):
        return rr_degrees
    return tuple(rr_degrees)


def eval_transform(
    *, image_size: int, mean: Sequence[float], std: Sequence[float], in_channels: int
) -> ImageTransform:
    """The un-augmented view used by every evaluation: resize, centre-crop, normalise.

    Evaluation (kNN, linear probe, online probe) must see the same deterministic pixels in
    every pass, so this transform has no randomness.
    """
    _check_image_size(image_size)
    mean_list, std_list = normalize_stats(mean, std, in_channels)
    return T.Compose(
        [
            ConvertMode(image_mode(in_channels)),
            T.Resize(int(image_size)),
            T.CenterCrop(int(image_size)),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=mean_list, std=std_list),
        ]
    )


class Views:
    """The views of one recipe for one dataset: a list of specs, rendered by either path.

    Called on a PIL image, returns one normalised ``(C, H, W)`` tensor per view (lightly's
    transforms, per image); :meth:`batch` turns a ``(B, C, H, W)`` uint8 batch into one
    normalised ``(B, C, image_size, image_size)`` batch per view, on the batch's device.
    """

    def __init__(
        self,
        specs: Sequence[ViewSpec | None],
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        in_channels: int,
        backend: str = "auto",
    ) -> None:
        _check_image_size(image_size)
        check_num_views(len(specs))
        if backend not in BACKENDS:
            raise ValueError(
                f"augment.backend must be one of {', '.join(BACKENDS)}, got {backend!r}."
            )
        self.specs = list(specs)
        self.image_size = int(image_size)
        self.mean, self.std = normalize_stats(mean, std, in_channels)
        self.in_channels = in_channels
        self.backend = backend
        self._pil = [self._pil_view(spec) for spec in self.specs]

    def _pil_view(self, spec: ViewSpec | None) -> ImageTransform:
        mode = ConvertMode(image_mode(self.in_channels))
        if spec is None:
            return eval_transform(
                image_size=self.image_size,
                mean=self.mean,
                std=self.std,
                in_channels=self.in_channels,
            )
        # lightly multiplies each amplitude by cj_strength; the spec holds the products.
        view = BYOLView1Transform(
            input_size=self.size_of(spec),
            cj_prob=spec.cj_prob,
            cj_strength=1.0,
            cj_bright=spec.brightness,
            cj_contrast=spec.contrast,
            cj_sat=spec.saturation,
            cj_hue=spec.hue,
            min_scale=spec.min_scale,
            random_gray_scale=spec.gray_prob,
            gaussian_blur=spec.blur_prob,
            solarization_prob=spec.solarize_prob,
            sigmas=spec.sigmas,
            vf_prob=spec.vf_prob,
            hf_prob=spec.hf_prob,
            rr_prob=spec.rr_prob,
            rr_degrees=spec.rr_degrees,
            normalize={"mean": self.mean, "std": self.std},
        )
        if spec.max_scale < 1.0:  # lightly's view crops up to the whole image; cap the area
            kinds = (T.RandomResizedCrop, transforms_v1.RandomResizedCrop)
            crops = [t for t in view.transform.transforms if isinstance(t, kinds)]
            if len(crops) != 1:
                raise RuntimeError(
                    "lightly's view transform no longer holds one RandomResizedCrop; the "
                    "crop's max_scale cannot be set on the PIL path."
                )
            crops[0].scale = (spec.min_scale, spec.max_scale)
        return T.Compose([mode, view])

    def size_of(self, spec: ViewSpec | None) -> int:
        """The side in pixels of the view ``spec`` makes: its own ``size``, else the recipe's."""
        return self.image_size if spec is None or spec.size is None else spec.size

    @property
    def sizes(self) -> list[int]:
        """The side of every view, in order (multi-crop: the global crops', then the local)."""
        return [self.size_of(spec) for spec in self.specs]

    def __len__(self) -> int:
        return len(self.specs)

    def __call__(self, image: Image.Image) -> list[Tensor]:
        return [view(image) for view in self._pil]

    def batch(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """Normalised views of a ``(B, C, H, W)`` uint8 batch, each with its own parameters
        per image, drawn from ``generator`` (default: torch's global CPU generator)."""
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a (B, {self.in_channels}, H, W) batch, got {tuple(images.shape)}; "
                "volumes (B, C, D, H, W) need a volume recipe such as augment=volumes."
            )
        n, _, height, width = images.shape
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        views = []
        for spec in self.specs:
            if spec is None:
                view = images.float().div_(255)
                if (height, width) != (self.image_size, self.image_size):
                    size = (self.image_size, self.image_size)
                    view = F.interpolate(view, size=size, mode="bilinear", antialias=True)
            else:
                params = sample_view(spec, n, height, width, generator)
                view = render_view(images, params, self.size_of(spec))
            views.append(view.sub_(mean).div_(std))
        return views

    def __repr__(self) -> str:
        return f"{type(self).__name__}(specs={self.specs}, backend={self.backend!r})"


@configurable(runtime=VIEW_ARGS)
def no_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    num_views: int = 1,
    backend: str = "auto",
) -> Views:
    """``num_views`` identical un-augmented views, for methods that corrupt inputs themselves
    (inpainting masks on device) and for debugging a pipeline without augmentation noise."""
    check_num_views(num_views)
    return Views(
        [None] * int(num_views),
        image_size=image_size,
        mean=mean,
        std=std,
        in_channels=in_channels,
        backend=backend,
    )


@configurable(
    runtime=VIEW_ARGS, exclude=("sigmas", "solarization", "suffix"), shared=f"{__name__}.view_spec"
)
def simclr_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    num_views: int = 2,
    cj_strength: float = 0.5,
    cj_bright: float = 0.8,
    cj_contrast: float = 0.8,
    cj_sat: float = 0.8,
    cj_hue: float = 0.2,
    gaussian_blur: float = 0.0,
    backend: str = "auto",
    **shared: Any,
) -> Views:
    """SimCLR's view distribution (random resized crop, flips, colour jitter, grayscale, blur).

    Each of the ``num_views`` views is drawn independently from the same distribution; the
    positives of a contrastive loss are the views of one image. Defaults follow the small-image
    (CIFAR) recipe: jitter strength 0.5 and no blur (blur wipes out 32-pixel images). Grayscale
    images (``in_channels=1``) stay single-channel: jitter only changes brightness and contrast.
    ``shared``: the keys every recipe shares, with their defaults, see :func:`view_spec`.
    """
    check_num_views(num_views)
    jitter = _jitter(cj_strength, cj_bright, cj_contrast, cj_sat, cj_hue)
    spec = view_spec(**jitter, gaussian_blur=gaussian_blur, **shared)
    geometry = _geometry(image_size, mean, std, in_channels)
    return Views([spec] * int(num_views), **geometry, backend=backend)


@configurable(runtime=VIEW_ARGS, exclude=("rr_degrees", "suffix"), shared=f"{__name__}.view_spec")
def byol_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    cj_strength: float = 1.0,
    gaussian_blur: Sequence[float] = (1.0, 0.1),
    solarization: Sequence[float] = (0.0, 0.2),
    backend: str = "auto",
    **shared: Any,
) -> Views:
    """BYOL's two asymmetric views: the same crops, flips and jitter, but blur and solarisation
    drawn with a different probability per view (``gaussian_blur`` and ``solarization`` hold
    one probability for the first and one for the second view; BYOL uses blur 1.0 / 0.1 and
    solarisation 0.0 / 0.2).

    The jitter is BYOL's (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, times
    ``cj_strength``; weaker than SimCLR's). Grayscale images (``in_channels=1``) stay
    single-channel: jitter changes brightness and contrast, solarisation inverts bright pixels.
    ``shared``: the keys every recipe shares, with their defaults, see :func:`view_spec`.
    """
    for key, value in {"gaussian_blur": gaussian_blur, "solarization": solarization}.items():
        if len(value) != 2:
            raise ValueError(
                f"{key} holds one probability per view (first, second), got {list(value)}."
            )
    jitter = _jitter(cj_strength, *BYOL_JITTER)
    specs = [
        view_spec(
            **jitter,
            gaussian_blur=gaussian_blur[i],
            solarization=solarization[i],
            suffix=f"[{i}]",
            **shared,
        )
        for i in range(2)
    ]
    return Views(specs, **_geometry(image_size, mean, std, in_channels), backend=backend)


@configurable(
    runtime=VIEW_ARGS,
    exclude=("min_scale", "sigmas", "suffix"),
    shared=f"{__name__}.view_spec",
)
def multicrop_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    global_crops: int = 2,
    local_crops: int = 6,
    local_size: int | None = None,
    global_scale: Sequence[float] = (0.4, 1.0),
    local_scale: Sequence[float] = (0.05, 0.4),
    cj_strength: float = 0.5,
    cj_bright: float = 0.8,
    cj_contrast: float = 0.8,
    cj_sat: float = 0.4,
    cj_hue: float = 0.2,
    gaussian_blur: Sequence[float] = (1.0, 0.1, 0.5),
    solarization: Sequence[float] = (0.0, 0.2, 0.0),
    backend: str = "auto",
    **shared: Any,
) -> Views:
    """Multi-crop views (SwAV, DINO): ``global_crops`` crops at the input size and
    ``local_crops`` smaller crops of ``local_size`` pixels, each crop's area drawn from its own
    range (``global_scale``, ``local_scale``: fractions of the image, as ``(min, max)``).

    The views come grouped by size: the global crops first, then the local ones, so a method
    reads ``views[:global_crops]`` and ``views[global_crops:]`` (the method contract). Every
    crop takes the same flips and colour jitter (DINO's amplitudes by default: brightness 0.4,
    contrast 0.4, saturation 0.2, hue 0.1 at ``cj_strength`` 0.5); blur and solarisation are
    drawn with a probability for the first global crop, one for the other global crops and one
    for the local crops (``gaussian_blur`` and ``solarization``; DINO's 1.0 / 0.1 / 0.5 and
    0 / 0.2 / 0; small images want no blur). ``local_size`` defaults to DINO's ratio, 96 of
    224 pixels, of ``image_size``; a ViT needs it (as the input size) to be a multiple of its
    patch. ``shared``: the keys every recipe shares, with their defaults, see :func:`view_spec`.
    """
    if int(global_crops) < 1 or int(local_crops) < 0:
        raise ValueError(
            f"multi-crop needs global_crops >= 1 and local_crops >= 0, got {global_crops} and "
            f"{local_crops}."
        )
    for key, value in {"gaussian_blur": gaussian_blur, "solarization": solarization}.items():
        if len(value) != 3:
            raise ValueError(
                f"{key} holds three probabilities (first global crop, other global crops, local "
                f"crops), got {list(value)}."
            )
    if local_size is None:
        local_size = max(1, round(int(image_size) * 96 / 224))
    if not 1 <= int(local_size) <= int(image_size):
        raise ValueError(
            f"local_size must be a side in pixels from 1 to image_size ({image_size}), got "
            f"{local_size}."
        )
    scales = {"global_scale": global_scale, "local_scale": local_scale}
    for key, (low, high) in scales.items():
        if not 0.0 < float(low) <= float(high) <= 1.0:
            raise ValueError(
                f"{key} is a range (min, max) of fractions of the image area in (0, 1], got "
                f"{[low, high]}."
            )
    jitter = _jitter(cj_strength, cj_bright, cj_contrast, cj_sat, cj_hue)

    def crop(kind: int, scale: Sequence[float], size: int | None) -> ViewSpec:
        spec = view_spec(
            **jitter,
            gaussian_blur=gaussian_blur[kind],
            solarization=solarization[kind],
            min_scale=float(scale[0]),
            suffix=f"[{kind}]",
            **shared,
        )
        return dataclasses.replace(spec, max_scale=float(scale[1]), size=size)

    specs = [crop(min(i, 1), global_scale, None) for i in range(int(global_crops))]
    specs += [crop(2, local_scale, int(local_size))] * int(local_crops)
    return Views(specs, **_geometry(image_size, mean, std, in_channels), backend=backend)


#: BYOL's colour-jitter amplitudes: brightness, contrast, saturation, hue.
BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


def _jitter(strength: float, bright: float, contrast: float, sat: float, hue: float) -> dict:
    """Colour-jitter amplitudes as ``view_spec`` takes them (each times ``strength``)."""
    return {
        "brightness": strength * bright,
        "contrast": strength * contrast,
        "saturation": strength * sat,
        "hue": strength * hue,
    }


def _geometry(
    image_size: int, mean: Sequence[float], std: Sequence[float], in_channels: int
) -> dict[str, object]:
    return {"image_size": image_size, "mean": mean, "std": std, "in_channels": in_channels}


def view_spec(
    *,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    gaussian_blur: float,
    solarization: float = 0.0,
    min_scale: float = 0.08,
    cj_prob: float = 0.8,
    random_gray_scale: float = 0.2,
    sigmas: Sequence[float] = (0.1, 2.0),
    hf_prob: float = 0.5,
    vf_prob: float = 0.0,
    rr_prob: float = 0.0,
    rr_degrees: float | Sequence[float] | None = None,
    suffix: str = "",
) -> ViewSpec:
    """One view's distribution, with the defaults every recipe shares.

    Random resized crop from ``min_scale`` of the area, colour jitter with probability
    ``cj_prob`` (the amplitudes as given), grayscale, Gaussian blur of radius in ``sigmas``,
    solarisation, flips and rotation by ``rr_degrees`` with their probabilities. ``suffix``
    names the view in error messages (e.g. ``[1]``).
    """
    _check_crop_and_probabilities(
        min_scale,
        {
            "cj_prob": cj_prob,
            "random_gray_scale": random_gray_scale,
            "hf_prob": hf_prob,
            "vf_prob": vf_prob,
            "rr_prob": rr_prob,
            f"gaussian_blur{suffix}": gaussian_blur,
            f"solarization{suffix}": solarization,
        },
    )
    low, high = float(sigmas[0]), float(sigmas[1])
    if not 0 < low <= high:
        raise ValueError(f"sigmas is a range (min, max) of positive blur radii, got {[low, high]}.")
    return ViewSpec(
        min_scale=float(min_scale),
        cj_prob=float(cj_prob),
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        hue=hue,
        gray_prob=float(random_gray_scale),
        blur_prob=float(gaussian_blur),
        sigmas=(low, high),
        solarize_prob=float(solarization),
        hf_prob=float(hf_prob),
        vf_prob=float(vf_prob),
        rr_prob=float(rr_prob),
        rr_degrees=_rotation_degrees(rr_degrees),
    )
