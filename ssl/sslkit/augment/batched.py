"""Views of a whole batch at once, on the device the batch is on, with per-image parameters.

The PIL path makes every view image by image in DataLoader workers; here one call turns a
``(B, C, H, W)`` uint8 batch into normalised float views with a handful of tensor operations,
so a GPU (or the CPU's vector units) makes the views instead of a Python loop. The random
parameters are drawn on the CPU from torch's global generator (or a given one) with the same
distributions as torchvision's and lightly's transforms, so a seed gives the same views on any
device and both paths draw from one distribution (tested statistically against the PIL path).

The order of operations is the PIL path's: random resized crop, horizontal and vertical flip,
rotation (one affine resampling for all four), colour jitter in a random order per image,
grayscale, Gaussian blur, solarisation, normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# torchvision's RandomResizedCrop: aspect ratios, and attempts before the centre-crop fallback.
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
# ITU-R 601 luma, as in PIL's convert("L") and torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)
SOLARIZE_THRESHOLD = 128 / 255
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
# n in the HSV-to-RGB formula of adjust_hue, for red, green and blue.
_HUE_OFFSETS = torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class ViewSpec:
    """The distribution of one augmented view; the PIL and batched paths both read it.

    Colour-jitter amplitudes are torchvision's (factors drawn from ``[max(0, 1 - a), 1 + a]``,
    hue shifts from ``[-hue, hue]``); probabilities are per image. The crop's area is a fraction
    in ``[min_scale, max_scale]`` of the image's; ``size`` is the view's side in pixels (None:
    the recipe's ``image_size``), so multi-crop's local crops are views of a smaller size.
    """

    min_scale: float
    cj_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    gray_prob: float
    blur_prob: float
    sigmas: tuple[float, float]
    solarize_prob: float
    hf_prob: float
    vf_prob: float
    rr_prob: float
    rr_degrees: float | tuple[float, float] | None
    max_scale: float = 1.0
    size: int | None = None


@dataclass
class ViewParams:
    """Random parameters of one view for ``n`` images (CPU tensors, one row per image).

    ``boxes`` are crops ``(top, left, height, width)`` in pixels; ``angle`` is the
    counter-clockwise rotation in degrees; ``factors`` hold the brightness, contrast and
    saturation factors and the hue shift, applied in ``order`` where ``jitter`` is set;
    ``sigma`` is the blur's standard deviation in pixels (0: no blur).
    """

    boxes: Tensor
    hflip: Tensor
    vflip: Tensor
    angle: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    sigma: Tensor
    solarize: Tensor


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _coin(n: int, p: float, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator) < p


def sample_crops(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """``(n, 4)`` crop boxes ``(top, left, height, width)`` drawn like torchvision's
    ``RandomResizedCrop.get_params``: area uniform in ``scale``, aspect ratio log-uniform in
    3/4..4/3, up to ten attempts to fit, else the largest centre crop of an allowed ratio."""
    area = height * width
    target = area * _uniform(n * CROP_ATTEMPTS, *scale, generator).view(n, CROP_ATTEMPTS)
    log_ratio = _uniform(n * CROP_ATTEMPTS, *map(math.log, CROP_RATIO), generator)
    aspect = log_ratio.view(n, CROP_ATTEMPTS).exp()
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1)
    found = fits.any(dim=1)
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        fallback = (round(width / CROP_RATIO[0]), width)
    elif in_ratio > CROP_RATIO[1]:
        fallback = (height, round(height * CROP_RATIO[1]))
    else:
        fallback = (height, width)
    h = torch.where(found, h, float(fallback[0]))
    w = torch.where(found, w, float(fallback[1]))
    top_u = torch.rand(n, generator=generator, dtype=torch.float64)
    left_u = torch.rand(n, generator=generator, dtype=torch.float64)
    top = torch.where(found, (top_u * (height - h + 1)).floor(), ((height - h) // 2))
    left = torch.where(found, (left_u * (width - w + 1)).floor(), ((width - w) // 2))
    return torch.stack([top, left, h, w], dim=1).float()


def sample_view(
    spec: ViewSpec,
    n: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
) -> ViewParams:
    """Random parameters of ``spec`` for ``n`` images of ``height x width`` pixels."""
    rotate = _coin(n, spec.rr_prob, generator)
    if spec.rr_degrees is None:
        angle = torch.full((n,), 90.0)
    else:
        low, high = (
            (-float(spec.rr_degrees), float(spec.rr_degrees))
            if isinstance(spec.rr_degrees, int | float)
            else (float(spec.rr_degrees[0]), float(spec.rr_degrees[1]))
        )
        angle = _uniform(n, low, high, generator).float()
    factors = torch.stack(
        [
            _uniform(n, max(0.0, 1 - spec.brightness), 1 + spec.brightness, generator),
            _uniform(n, max(0.0, 1 - spec.contrast), 1 + spec.contrast, generator),
            _uniform(n, max(0.0, 1 - spec.saturation), 1 + spec.saturation, generator),
            _uniform(n, -spec.hue, spec.hue, generator),
        ],
        dim=1,
    ).float()
    blur = _coin(n, spec.blur_prob, generator)
    sigma = _uniform(n, *spec.sigmas, generator).float()
    return ViewParams(
        boxes=sample_crops(n, height, width, (spec.min_scale, spec.max_scale), generator),
        hflip=_coin(n, spec.hf_prob, generator),
        vflip=_coin(n, spec.vf_prob, generator),
        angle=torch.where(rotate, angle, 0.0),
        jitter=_coin(n, spec.cj_prob, generator),
        factors=factors,
        order=torch.rand(n, len(JITTER_OPS), generator=generator).argsort(dim=1),
        gray=_coin(n, spec.gray_prob, generator),
        sigma=torch.where(blur, sigma, 0.0),
        solarize=_coin(n, spec.solarize_prob, generator),
    )


def _geometry(params: ViewParams, height: int, width: int) -> Tensor:
    """``(n, 2, 3)`` affine maps from output to input coordinates (``affine_grid``'s
    normalised, ``align_corners=False`` convention): crop, then flips, then rotation."""
    top, left, h, w = params.boxes.double().unbind(1)
    n = len(top)
    crop = torch.zeros(n, 3, 3, dtype=torch.float64)
    crop[:, 0, 0], crop[:, 0, 2] = w / width, (2 * left + w) / width - 1
    crop[:, 1, 1], crop[:, 1, 2] = h / height, (2 * top + h) / height - 1
    crop[:, 2, 2] = 1
    flips = torch.diag_embed(
        torch.stack(
            [1 - 2 * params.hflip.double(), 1 - 2 * params.vflip.double(), torch.ones(n)], dim=1
        )
    )
    radians = params.angle.double() * math.pi / 180
    cos, sin = radians.cos(), radians.sin()
    rotation = torch.zeros(n, 3, 3, dtype=torch.float64)
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
    rotation[:, 2, 2] = 1
    return (crop @ flips @ rotation)[:, :2].float()


def grayscale(x: Tensor) -> Tensor:
    """Luma ``(n, 1, H, W)`` of RGB images (grayscale images are returned as they are)."""
    if x.shape[1] == 1:
        return x
    # One new tensor, accumulated in place: each new batch-sized tensor costs page faults.
    gray = torch.mul(x[:, 0], LUMA[0]).add_(x[:, 1], alpha=LUMA[1]).add_(x[:, 2], alpha=LUMA[2])
    return gray.unsqueeze(1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotates the hue of RGB images in [0, 1] by ``shift`` (fractions of a turn, per image)
    in HSV space, as torchvision's ``adjust_hue`` does (same result within float rounding).

    Value and saturation are kept, so each channel is ``max - chroma * clamp(min(k, 4 - k),
    0, 1)`` with ``k = (n + 6 * hue) mod 6`` and ``n`` 5, 3, 1 for red, green, blue. Which
    channel holds the maximum is selected with 0/1 masks (``sign(max - channel)``) rather than
    ``torch.where``, which costs several times more on a CPU.
    """
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    chroma = maxc - minc
    not_red, not_green = torch.sign(maxc - r), torch.sign(maxc - g)  # 0 where it is the max
    # Hue in sextants times chroma: (g - b) if red is the max, else (b - r) + 2 chroma if
    # green is, else (r - g) + 4 chroma (red wins ties, then green, as in torchvision).
    red = g - b
    green = (b - r).add_(chroma, alpha=2.0)
    hue = (r - g).add_(chroma, alpha=4.0)
    hue = hue.sub_(green).mul_(not_green).add_(green).sub_(red).mul_(not_red).add_(red)
    nonzero = torch.sign(chroma).neg_().add_(1.0).add_(chroma)  # chroma, 1 where it is 0
    hue = hue.div_(nonzero).add_(6.0 * shift.view(-1, 1, 1).to(hue)).unsqueeze(1)
    k = torch.remainder(hue + _HUE_OFFSETS.to(hue), 6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    return torch.addcmul(maxc.unsqueeze(1), chroma.unsqueeze(1), k, value=-1.0)


def color_jitter(x: Tensor, params: ViewParams) -> Tensor:
    """torchvision's colour jitter with a factor set and an order of operations per image
    (``x`` in [0, 1] is overwritten).

    At each of the four positions every image takes one operation, with a clamp to [0, 1]
    after it. Brightness, contrast and saturation are all ``a x + g gray(x) + m mean(gray(x))``
    with per-image weights (``b x``; ``c x + (1 - c) mean``; ``s x + (1 - s) gray``), so one
    expression serves the three at a position; hue goes through HSV on its images only.
    """
    n, channels = x.shape[:2]
    factor = params.factors
    for position in range(len(JITTER_OPS)):
        op = torch.where(params.jitter, params.order[:, position], -1)
        if channels == 1:
            op = torch.where(op >= 2, -1, op)  # saturation and hue leave gray images as they are
        scale = torch.ones(n)
        scale = torch.where(op == 0, factor[:, 0], scale)
        scale = torch.where(op == 1, factor[:, 1], scale)
        scale = torch.where(op == 2, factor[:, 2], scale)
        to_gray = torch.where(op == 2, 1 - factor[:, 2], 0.0)
        to_mean = torch.where(op == 1, 1 - factor[:, 1], 0.0)
        if bool(((op >= 0) & (op <= 2)).any()):
            weights = torch.stack([scale, to_gray, to_mean]).to(x.device, non_blocking=True)
            a, g, m = weights.view(3, n, 1, 1, 1).unbind(0)
            # In place: new batch-sized tensors cost more than the arithmetic on a CPU.
            gray = grayscale(x)  # x itself when grayscale: the mean is taken before x changes
            offset = gray.mean(dim=(1, 2, 3), keepdim=True).mul_(m)
            if channels == 3:
                offset = gray.mul_(g).add_(offset)
            x = x.mul_(a).add_(offset).clamp_(0, 1)
        x = _apply(x, op == 3, lambda sub, idx: adjust_hue(sub, factor[idx, 3].to(sub.device)))
    return x


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a standard deviation per image (pixels), edges replicated;
    the kernel reaches three standard deviations of the largest ``sigma``."""
    n, channels, height, width = x.shape
    radius = max(1, min(math.ceil(3 * float(sigma.max())), height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma.to(x).view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    y = x.reshape(1, n * channels, height, width)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :],
                 groups=n * channels)  # fmt: skip
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None],
                 groups=n * channels)  # fmt: skip
    return y.view(n, channels, height, width)


def _apply(x: Tensor, where: Tensor, fn) -> Tensor:
    """``fn`` on the images selected by the CPU mask ``where``, in place (no device sync)."""
    index = where.nonzero().squeeze(1)
    if len(index) == 0:
        return x
    if len(index) == len(x):
        return fn(x, index)
    index_device = index.to(x.device, non_blocking=True)
    x[index_device] = fn(x[index_device], index)
    return x


def render_view(images: Tensor, params: ViewParams, size: int) -> Tensor:
    """One augmented view ``(B, C, size, size)`` in [0, 1] of a uint8 or [0, 1] float batch."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images
    n, channels, height, width = x.shape
    theta = _geometry(params, height, width).to(x.device, x.dtype, non_blocking=True)
    centres = (torch.arange(size, device=x.device, dtype=x.dtype) * 2 + 1) / size - 1
    u, v = centres.view(1, 1, size), centres.view(1, size, 1)
    t = theta.view(n, 6, 1, 1).unbind(1)
    # affine_grid's sampling points, without its batched matrix product; each coordinate is
    # written straight into its slot of the grid (stacking them costs three times more).
    grid = x.new_empty(n, size, size, 2)
    torch.add(t[0] * u + t[2], t[1] * v, out=grid[..., 0])
    torch.add(t[3] * u + t[5], t[4] * v, out=grid[..., 1])
    # Edge pixels are repeated inside the image (as when cropping first, then resizing);
    # what a rotation brings in from outside the image is black, as in torchvision's rotate.
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if bool((params.angle % 90 != 0).any()):
        inside = (grid.abs() <= 1).all(dim=-1).unsqueeze(1)
        x = x * inside
    if bool(params.jitter.any()):
        x = color_jitter(x, params)
    if channels == 3:
        # repeat, not expand: the steps after this one (and the normalisation) write in place,
        # which an expanded tensor refuses when every image of the batch was turned gray.
        x = _apply(x, params.gray, lambda sub, idx: grayscale(sub).repeat(1, 3, 1, 1))
    x = _apply(
        x,
        params.sigma > 0,
        lambda sub, idx: gaussian_blur(sub, params.sigma[idx].to(sub.device, non_blocking=True)),
    )
    return _apply(
        x,
        params.solarize,
        lambda sub, idx: torch.where(sub >= SOLARIZE_THRESHOLD, 1 - sub, sub),
    )
