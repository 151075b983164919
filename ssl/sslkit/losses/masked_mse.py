"""Mean squared error on hidden pixels only: the loss of masked inpainting (MAE, SimMIM)."""

from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "none")


def masked_mse(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    norm_pix: bool = False,
    patch_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Mean squared error over the hidden pixels (all channels) of a batch of images.

    With ``pred`` and ``target`` of shape ``(B, C, H, W)`` and ``mask`` of shape ``(B, 1, H, W)``
    (1 = hidden, 0 = visible; volumes and clips ``(B, C, D, H, W)`` with ``(B, 1, D, H, W)``),

        loss = sum(mask * (pred - target)**2) / (sum(mask) * C)

    so visible pixels neither count nor receive gradient: the network is judged only on what it
    could not see. ``reduction="none"`` gives the same ratio per image, shape ``(B,)``. A batch (or
    image) with nothing hidden has loss 0.

    ``norm_pix=True`` replaces the target by its per-patch normalisation, as MAE does: each
    ``patch_size`` x ``patch_size`` patch (cube for volumes; all channels together) has its mean subtracted and is
    divided by ``sqrt(var + 1e-6)`` (unbiased variance), which stresses local structure over
    absolute intensity.
    """
    _check_inputs(pred, target, mask, reduction)
    if norm_pix:
        if patch_size is None:
            raise ValueError("masked_mse with norm_pix=True needs the patch_size to normalise over")
        mean, std = patch_statistics(target, patch_size)
        target = (target - mean) / std
    squared = mask * (pred - target) ** 2
    channels = pred.shape[1]
    if reduction == "none":
        axes = tuple(range(1, pred.ndim))
        return squared.sum(dim=axes) / (mask.sum(dim=axes) * channels).clamp_min(1)
    return squared.sum() / (mask.sum() * channels).clamp_min(1)


def patch_statistics(images: Tensor, patch_size: int, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-patch mean and ``sqrt(var + eps)`` of ``(B, C, H, W)`` images (or ``(B, C, D, H, W)``
    volumes, cubic patches), broadcast to pixels.

    Statistics run over the ``C * patch_size**2`` (``**3``) values of each patch (unbiased
    variance, as in MAE); both results have shape ``(B, 1, *spatial)``, so
    ``(images - mean) / std`` normalises and ``x * std + mean`` undoes it.
    """
    batch, channels, *size = images.shape
    p = int(patch_size)
    if p < 1 or any(side % p for side in size):
        sides, patch = "x".join(map(str, size)), "x".join([str(p)] * len(size))
        raise ValueError(
            f"inputs of {sides} pixels cannot be cut into {patch} patches for norm_pix; "
            "choose a patch_size that divides every side"
        )
    grid = [side // p for side in size]
    split = [n for g in grid for n in (g, p)]
    patches = images.reshape(batch, channels, *split)
    dims = len(size)
    order = [0, *(2 + 2 * i for i in range(dims)), 1, *(3 + 2 * i for i in range(dims))]
    patches = patches.permute(order).reshape(batch, *grid, -1)
    mean = patches.mean(dim=-1)
    std = torch.sqrt(patches.var(dim=-1) + eps)

    def to_pixels(per_patch: Tensor) -> Tensor:
        for axis in range(1, per_patch.ndim):
            per_patch = per_patch.repeat_interleave(p, dim=axis)
        return per_patch.unsqueeze(1)

    return to_pixels(mean), to_pixels(std)


def _check_inputs(pred: Tensor, target: Tensor, mask: Tensor, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"masked_mse reduction must be one of {list(REDUCTIONS)}, got {reduction!r}"
        )
    if pred.ndim not in (4, 5) or pred.shape != target.shape:
        raise ValueError(
            "masked_mse expects pred and target as images (B, C, H, W) or volumes "
            f"(B, C, D, H, W) of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    expected = (pred.shape[0], 1, *pred.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"masked_mse expects a mask of shape {expected} (1 = hidden), got {tuple(mask.shape)}"
        )
