"""Histograms of oriented gradients: colour-blind reconstruction targets (MaskFeat).

Reconstructing raw pixels rewards an encoder for remembering colours; predicting the local
gradient orientations of the hidden regions instead (MaskFeat, Wei et al. 2022) rewards it for
knowing where edges run, which is what shapes are made of.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def oriented_gradients(images: Tensor, bins: int = 9) -> Tensor:
    """Per-pixel gradient magnitudes split over ``bins`` unsigned orientations, ``(B, bins, H, W)``.

    The gradient of the channel mean is taken with Sobel filters (borders replicated); its
    orientation is folded to [0, pi) so that an edge counts the same whichever side is brighter,
    and its magnitude is shared between the two nearest of ``bins`` equally spaced orientation
    centres, linearly in angle.
    """
    if images.ndim != 4:
        raise ValueError(
            f"oriented_gradients expects images (B, C, H, W), got {tuple(images.shape)}"
        )
    if bins < 2:
        raise ValueError(f"oriented_gradients needs at least 2 orientation bins, got {bins}")
    gray = F.pad(images.float().mean(dim=1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=gray.device)
    gradients = F.conv2d(gray, torch.stack([sobel, sobel.T]).unsqueeze(1))
    gx, gy = gradients[:, :1], gradients[:, 1:]
    magnitude = torch.hypot(gx, gy)
    position = torch.remainder(torch.atan2(gy, gx), math.pi) * (bins / math.pi) - 0.5
    lower = torch.floor(position)
    upper_weight = position - lower
    lower_bin = torch.remainder(lower, bins).long()
    upper_bin = torch.remainder(lower_bin + 1, bins)
    histogram = torch.zeros(gray.shape[0], bins, *images.shape[-2:], device=images.device)
    histogram.scatter_add_(1, lower_bin, magnitude * (1 - upper_weight))
    histogram.scatter_add_(1, upper_bin, magnitude * upper_weight)
    return histogram


def cell_histograms(per_pixel: Tensor, cell_size: int, eps: float = 1e-6) -> Tensor:
    """Sum ``(B, bins, H, W)`` per-pixel histograms over ``cell_size`` cells and scale each
    image's cells so that their mean L2 norm is 1, shape ``(B, bins, H / c, W / c)``.

    One scale per image (rather than per cell, as HOG does for natural images) keeps cells
    without edges near zero instead of amplifying their pixel noise to unit length."""
    height, width = per_pixel.shape[-2:]
    if cell_size < 1 or height % cell_size or width % cell_size:
        raise ValueError(
            f"images of {height}x{width} pixels cannot be cut into {cell_size}x{cell_size} cells; "
            "choose a patch_size that divides both sides"
        )
    cells = F.avg_pool2d(per_pixel, cell_size) * cell_size**2
    norms = cells.norm(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    return cells / (norms + eps)


def hog(images: Tensor, cell_size: int, bins: int = 9, eps: float = 1e-6) -> Tensor:
    """Cell histograms of oriented gradients of ``(B, C, H, W)`` images:
    :func:`oriented_gradients` summed and normalised by :func:`cell_histograms`."""
    return cell_histograms(oriented_gradients(images, bins), cell_size, eps)
