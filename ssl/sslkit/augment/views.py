"""Multi-view pipelines that run per image in the DataLoader workers (PIL in, tensors out).

A view factory is called by the DataModule with the dataset's geometry and statistics
(``image_size``, ``mean``, ``std``, ``in_channels``) and returns a transform that turns one PIL
image into a list of normalised tensors, one per view. Hydra configs hold the factories as
partials with only the tunable keys, so the same ``augment=simclr`` works on every dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from lightly.transforms import BYOLView1Transform, BYOLView2Transform, SimCLRViewTransform
from lightly.transforms.multi_view_transform import MultiViewTransform
from PIL import Image
from torchvision.transforms import v2 as T

ImageTransform = Callable[[Image.Image], torch.Tensor]
ViewTransform = Callable[[Image.Image], list[torch.Tensor]]
ViewFactory = Callable[..., ViewTransform]

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


def _normalize_stats(
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


def _check_num_views(num_views: int) -> None:
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
    mean_list, std_list = _normalize_stats(mean, std, in_channels)
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


def no_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    num_views: int = 1,
) -> ViewTransform:
    """``num_views`` identical un-augmented views, for methods that corrupt inputs themselves
    (inpainting masks on device) and for debugging a pipeline without augmentation noise."""
    _check_num_views(num_views)
    view = eval_transform(image_size=image_size, mean=mean, std=std, in_channels=in_channels)
    return MultiViewTransform([view] * int(num_views))


def simclr_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    num_views: int = 2,
    min_scale: float = 0.08,
    cj_prob: float = 0.8,
    cj_strength: float = 0.5,
    cj_bright: float = 0.8,
    cj_contrast: float = 0.8,
    cj_sat: float = 0.8,
    cj_hue: float = 0.2,
    random_gray_scale: float = 0.2,
    gaussian_blur: float = 0.0,
    sigmas: Sequence[float] = (0.1, 2.0),
    hf_prob: float = 0.5,
    vf_prob: float = 0.0,
    rr_prob: float = 0.0,
    rr_degrees: float | Sequence[float] | None = None,
) -> ViewTransform:
    """SimCLR's view distribution (random resized crop, flips, colour jitter, grayscale, blur).

    Each of the ``num_views`` views is drawn independently from the same distribution; the
    positives of a contrastive loss are the views of one image. Defaults follow the small-image
    (CIFAR) recipe: jitter strength 0.5 and no blur (blur wipes out 32-pixel images). Grayscale
    images (``in_channels=1``) stay single-channel: jitter only changes brightness and contrast.
    """
    _check_image_size(image_size)
    _check_num_views(num_views)
    _check_crop_and_probabilities(
        min_scale,
        {
            "cj_prob": cj_prob,
            "random_gray_scale": random_gray_scale,
            "gaussian_blur": gaussian_blur,
            "hf_prob": hf_prob,
            "vf_prob": vf_prob,
            "rr_prob": rr_prob,
        },
    )
    mean_list, std_list = _normalize_stats(mean, std, in_channels)
    view = T.Compose(
        [
            ConvertMode(image_mode(in_channels)),
            SimCLRViewTransform(
                input_size=int(image_size),
                cj_prob=cj_prob,
                cj_strength=cj_strength,
                cj_bright=cj_bright,
                cj_contrast=cj_contrast,
                cj_sat=cj_sat,
                cj_hue=cj_hue,
                min_scale=min_scale,
                random_gray_scale=random_gray_scale,
                gaussian_blur=gaussian_blur,
                sigmas=(float(sigmas[0]), float(sigmas[1])),
                vf_prob=vf_prob,
                hf_prob=hf_prob,
                rr_prob=rr_prob,
                rr_degrees=_rotation_degrees(rr_degrees),
                normalize={"mean": mean_list, "std": std_list},
            ),
        ]
    )
    return MultiViewTransform([view] * int(num_views))


def byol_views(
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    min_scale: float = 0.08,
    cj_prob: float = 0.8,
    cj_strength: float = 1.0,
    cj_bright: float = 0.4,
    cj_contrast: float = 0.4,
    cj_sat: float = 0.2,
    cj_hue: float = 0.1,
    random_gray_scale: float = 0.2,
    gaussian_blur: Sequence[float] = (1.0, 0.1),
    solarization: Sequence[float] = (0.0, 0.2),
    sigmas: Sequence[float] = (0.1, 2.0),
    hf_prob: float = 0.5,
    vf_prob: float = 0.0,
    rr_prob: float = 0.0,
    rr_degrees: float | Sequence[float] | None = None,
) -> ViewTransform:
    """BYOL's two asymmetric views: the same crops, flips and jitter, but blur and solarisation
    drawn with a different probability per view (``gaussian_blur`` and ``solarization`` hold
    one probability for the first and one for the second view; BYOL uses blur 1.0 / 0.1 and
    solarisation 0.0 / 0.2).

    The jitter is BYOL's (weaker than SimCLR's). Grayscale images (``in_channels=1``) stay
    single-channel: jitter changes brightness and contrast, solarisation inverts bright pixels.
    """
    _check_image_size(image_size)
    per_view = {"gaussian_blur": gaussian_blur, "solarization": solarization}
    for key, value in per_view.items():
        if len(value) != 2:
            raise ValueError(
                f"{key} holds one probability per view (first, second), got {list(value)}."
            )
    _check_crop_and_probabilities(
        min_scale,
        {
            "cj_prob": cj_prob,
            "random_gray_scale": random_gray_scale,
            "hf_prob": hf_prob,
            "vf_prob": vf_prob,
            "rr_prob": rr_prob,
            **{f"{key}[{i}]": value[i] for key, value in per_view.items() for i in range(2)},
        },
    )
    mean_list, std_list = _normalize_stats(mean, std, in_channels)
    shared = {
        "input_size": int(image_size),
        "cj_prob": cj_prob,
        "cj_strength": cj_strength,
        "cj_bright": cj_bright,
        "cj_contrast": cj_contrast,
        "cj_sat": cj_sat,
        "cj_hue": cj_hue,
        "min_scale": min_scale,
        "random_gray_scale": random_gray_scale,
        "sigmas": (float(sigmas[0]), float(sigmas[1])),
        "vf_prob": vf_prob,
        "hf_prob": hf_prob,
        "rr_prob": rr_prob,
        "rr_degrees": _rotation_degrees(rr_degrees),
        "normalize": {"mean": mean_list, "std": std_list},
    }
    views = [
        transform(**shared, gaussian_blur=gaussian_blur[i], solarization_prob=solarization[i])
        for i, transform in enumerate((BYOLView1Transform, BYOLView2Transform))
    ]
    mode = ConvertMode(image_mode(in_channels))
    return MultiViewTransform([T.Compose([mode, view]) for view in views])
