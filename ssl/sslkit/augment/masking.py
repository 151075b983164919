"""Masks that hide parts of a batch of images, for inpainting and masked image modelling.

Masks are made on batches, on the batch's device, after augmentation: corrupting the input is
part of the method, not of the data pipeline. Every mask is ``(B, 1, H, W)`` (``(B, 1, D, H, W)``
for volumes and clips) with 1 where a pixel (voxel) is hidden and 0 where it is visible, shared by
all channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

MODES = ("block", "patches")
BLOCK_POSITIONS = ("center", "random")


class MaskGenerator:
    """Hides one block or a ratio of patches in every image, reproducibly for a seed.

    Modes:
        ``block``: one rectangular hole per image of ``round(block_size * H)`` by
            ``round(block_size * W)`` pixels (a box of ``block_size`` of every side for volumes), at the centre (``block_position="center"``, as in
            Context Encoders) or at a uniformly random position per image.
        ``patches``: the image is cut into a grid of ``patch_size`` x ``patch_size`` patches
            (cubes of ``patch_size`` voxels for volumes) and
            every image hides exactly ``round(ratio * num_patches)`` of them, the ones with the
            smallest random noise (argsort of noise, as in MAE), so the count never varies.

    The random numbers come from the generator's own ``torch.Generator`` on the CPU, seeded with
    ``seed`` (``None``: a seed drawn from torch's global generator, which ``seed_everything``
    controls). One seed therefore gives the same sequence of masks on every device, and drawing
    masks never disturbs other random streams.

    Args:
        mode: ``block`` or ``patches``.
        ratio: fraction of the patches hidden per image (``patches``), in (0, 1].
        patch_size: side of a patch in pixels (``patches``); must divide the image size.
        block_size: side of the hole as a fraction of the image side (``block``), in (0, 1].
        block_position: ``center`` or ``random`` (``block``).
        seed: seed of the mask sequence.
    """

    def __init__(
        self,
        mode: str = "patches",
        ratio: float = 0.6,
        patch_size: int = 4,
        block_size: float = 0.5,
        block_position: str = "random",
        seed: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mask mode must be one of {list(MODES)}, got {mode!r}")
        if not 0.0 < ratio <= 1.0:
            raise ValueError(
                f"mask ratio is the fraction of patches hidden, in (0, 1]; got {ratio}"
            )
        if patch_size < 1:
            raise ValueError(f"mask patch_size must be >= 1 pixel, got {patch_size}")
        if not 0.0 < block_size <= 1.0:
            raise ValueError(
                f"mask block_size is a fraction of the image side, in (0, 1]; got {block_size}"
            )
        if block_position not in BLOCK_POSITIONS:
            raise ValueError(
                f"mask block_position must be one of {list(BLOCK_POSITIONS)}, got {block_position!r}"
            )
        self.mode = mode
        self.ratio = float(ratio)
        self.patch_size = int(patch_size)
        self.block_size = float(block_size)
        self.block_position = block_position
        self.seed = int(torch.randint(2**62, ())) if seed is None else int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def with_seed(self, seed: int) -> MaskGenerator:
        """A generator with the same settings and its own sequence, starting from ``seed``."""
        return MaskGenerator(
            mode=self.mode,
            ratio=self.ratio,
            patch_size=self.patch_size,
            block_size=self.block_size,
            block_position=self.block_position,
            seed=seed,
        )

    def __call__(self, images: Tensor) -> Tensor:
        """The next masks for a batch of images ``(B, C, H, W)`` or of volumes or clips
        ``(B, C, D, H, W)``, on its device and in its dtype: ``(B, 1, H, W)`` or
        ``(B, 1, D, H, W)``; blocks and patches are cubes for volumes."""
        if images.ndim not in (4, 5):
            raise ValueError(
                "MaskGenerator expects a batch of images (B, C, H, W) or volumes (B, C, D, H, W), "
                f"got {tuple(images.shape)}"
            )
        batch, _, *size = images.shape
        return self.generate(batch, *size, device=images.device).to(images.dtype)

    def generate(
        self, batch_size: int, *size: int, device: torch.device | str | None = None
    ) -> Tensor:
        """The next ``batch_size`` masks of spatial ``size`` (``height, width`` or
        ``depth, height, width``), float ``(B, 1, *size)``, 1 = hidden."""
        if self.mode == "block":
            return self._blocks(batch_size, size, device)
        return self._patches(batch_size, size, device)

    def num_hidden_patches(self, *size: int) -> int:
        """How many patches ``patches`` mode hides in each image (volume) of this size."""
        grid = self._grid(size)
        count = math.prod(grid)
        hidden = round(self.ratio * count)
        if hidden < 1:
            raise ValueError(
                f"mask ratio {self.ratio} of {count} patches hides none; raise the ratio "
                "or lower the patch_size"
            )
        return hidden

    def _grid(self, size: Sequence[int]) -> tuple[int, ...]:
        p = self.patch_size
        if any(side % p for side in size):
            sides = "x".join(map(str, size))
            patch = "x".join([str(p)] * len(size))
            raise ValueError(
                f"inputs of {sides} pixels cannot be cut into {patch} patches; choose a "
                f"mask patch_size that divides every side (e.g. method.mask.patch_size=4)"
            )
        return tuple(side // p for side in size)

    def _patches(self, batch: int, size: Sequence[int], device) -> Tensor:
        grid = self._grid(size)
        hidden = self.num_hidden_patches(*size)
        noise = torch.rand(batch, math.prod(grid), generator=self.generator).to(device)
        chosen = noise.argsort(dim=1)[:, :hidden]
        mask = torch.zeros(batch, math.prod(grid), device=device).scatter_(1, chosen, 1.0)
        mask = mask.view(batch, 1, *grid)
        for axis in range(2, mask.ndim):
            mask = mask.repeat_interleave(self.patch_size, dim=axis)
        return mask

    def _blocks(self, batch: int, size: Sequence[int], device) -> Tensor:
        mask = torch.ones(batch, 1, *size, dtype=torch.bool, device=device)
        for axis, side in enumerate(size):
            block = max(1, round(self.block_size * side))
            if self.block_position == "center":
                start = torch.full((batch,), (side - block) // 2)
            else:
                start = torch.randint(0, side - block + 1, (batch,), generator=self.generator)
            start = start.to(device)[:, None]
            position = torch.arange(side, device=device)[None]
            inside = (position >= start) & (position < start + block)
            shape = [batch] + [1] * (len(size) + 1)
            shape[axis + 2] = side
            mask &= inside.view(shape)
        return mask.float()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mode={self.mode!r}, ratio={self.ratio}, "
            f"patch_size={self.patch_size}, block_size={self.block_size}, "
            f"block_position={self.block_position!r}, seed={self.seed})"
        )
