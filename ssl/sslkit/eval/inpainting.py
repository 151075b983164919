"""Reconstruction quality of a model that inpaints hidden pixels, and the image of it.

A method computes (``inpaint``); this module measures: masked-region error and PSNR on the
test split and ``reconstructions.png``, for anything that offers what :class:`Inpainter` names
(:class:`~sslkit.methods.MaskedInpainting` does).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import save_image

from sslkit.augment.masking import MaskGenerator
from sslkit.losses import masked_mse

GRID_FILE = "reconstructions.png"
# Tiles of the reconstruction grid are enlarged (nearest neighbour) to at least this many pixels.
MIN_TILE_PX = 64


@runtime_checkable
class Inpainter(Protocol):
    """What the inpainting evaluation needs of a model."""

    num_reconstructions: int
    reconstructs_pixels: bool

    def inpaint(self, images: Tensor, mask: Tensor) -> Tensor:
        """``images`` with the pixels where ``mask`` is 1 reconstructed (input space)."""

    def hide(self, images: Tensor, mask: Tensor) -> Tensor:
        """The input the model sees: ``images`` with the masked pixels hidden."""

    def evaluation_masks(self) -> MaskGenerator:
        """A seeded mask generator, the same for every run compared."""


@torch.no_grad()
def evaluate_inpainting(
    model: Inpainter, datamodule: Any, output_dir: Path, device: torch.device
) -> dict[str, float]:
    """Masked-region MSE and PSNR on the test split, and ``<output_dir>/reconstructions.png``.

    Every test image is masked with the model's fixed evaluation masks and inpainted; errors
    are measured in image space (pixels in [0, 1], reconstruction clamped to that range) on the
    hidden pixels only. ``inpainting/masked_mse`` is the mean over all hidden pixels of the
    split, ``inpainting/psnr`` the mean over images of ``10 log10(1 / mse)`` in dB. The grid
    has one column per test image (``model.num_reconstructions`` of them) and three rows:
    original, masked input, inpainted (visible pixels kept, hidden ones reconstructed). The
    model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval().to(device)
    masks = model.evaluation_masks()
    channels = len(datamodule.mean)
    mean = torch.tensor(datamodule.mean, device=device)
    std = torch.tensor(datamodule.std, device=device)

    def to_pixels(x: Tensor) -> Tensor:
        shape = (1, channels, *[1] * (x.ndim - 2))
        return (x * std.view(shape) + mean.view(shape)).clamp(0.0, 1.0)

    squared_error = hidden_values = psnr_sum = 0.0
    num_images = 0
    shown: list[Tensor] = []
    try:
        for images, _ in datamodule.eval_dataloader("test"):
            images = images.to(device)
            mask = masks(images)
            original, inpainted = to_pixels(images), to_pixels(model.inpaint(images, mask))
            per_image = masked_mse(inpainted, original, mask, reduction="none")
            hidden = mask.sum(dim=tuple(range(1, mask.ndim))) * images.shape[1]
            squared_error += float((per_image * hidden).sum())
            hidden_values += float(hidden.sum())
            psnr_sum += float((-10.0 * torch.log10(per_image.clamp_min(1e-10))).sum())
            missing = model.num_reconstructions - num_images
            if missing > 0:
                masked = to_pixels(model.hide(images, mask))
                shown.append(torch.stack([original, masked, inpainted])[:, :missing])
            num_images += len(images)
    finally:
        model.train(was_training)
    if num_images == 0:
        raise ValueError(f"the {datamodule.name} test split is empty: nothing to inpaint")
    save_reconstruction_grid(torch.cat(shown, dim=1), Path(output_dir) / GRID_FILE)
    return {
        "inpainting/masked_mse": squared_error / max(hidden_values, 1.0),
        "inpainting/psnr": psnr_sum / num_images,
    }


def save_reconstruction_grid(rows: Tensor, path: Path) -> Path:
    """Write images ``(num_rows, num_columns, C, H, W)`` in [0, 1] as a PNG grid; volumes
    ``(num_rows, num_columns, C, D, H, W)`` are shown by their middle slice along D.

    Small images are enlarged (nearest neighbour) so that the PNG is readable.
    """
    while rows.ndim > 5:
        rows = rows.select(3, rows.shape[3] // 2)
    num_rows, num_columns = rows.shape[:2]
    grid = rows.reshape(num_rows * num_columns, *rows.shape[2:])
    scale = math.ceil(MIN_TILE_PX / min(grid.shape[-2:]))
    if scale > 1:
        grid = F.interpolate(grid, scale_factor=scale, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid.cpu(), path, nrow=num_columns, padding=2, pad_value=1.0)
    return path
