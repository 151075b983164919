"""Masks that hide parts of a batch of images, for inpainting and masked image modelling.

Masks are made on batches, on the batch's device, after augmentation: corrupting the input is
part of the method, not of the data pipeline. Every mask is ``(B, 1, H, W)`` with 1 where a pixel
is hidden and 0 where it is visible, shared by all channels.
"""

from __future__ import annotations

import torch
from torch import Tensor

MODES = ("block", "patches")
BLOCK_POSITIONS = ("center", "random")


class MaskGenerator:
    """Hides one block or a ratio of patches in every image, reproducibly for a seed.

    Modes:
        ``block``: one rectangular hole per image of ``round(block_size * H)`` by
            ``round(block_size * W)`` pixels, at the centre (``block_position="center"``, as in
            Context Encoders) or at a uniformly random position per image.
        ``patches``: the image is cut into a grid of ``patch_size`` x ``patch_size`` patches and
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
        """The next masks for a batch ``(B, C, H, W)``, on its device and in its dtype."""
        if images.ndim != 4:
            raise ValueError(
                f"MaskGenerator expects a batch of images (B, C, H, W), got {tuple(images.shape)}"
            )
        batch, _, height, width = images.shape
        return self.generate(batch, height, width, images.device).to(images.dtype)

    def generate(
        self, batch_size: int, height: int, width: int, device: torch.device | str | None = None
    ) -> Tensor:
        """The next ``batch_size`` masks of ``height`` x ``width`` pixels, float, 1 = hidden."""
        if self.mode == "block":
            return self._blocks(batch_size, height, width, device)
        return self._patches(batch_size, height, width, device)

    def num_hidden_patches(self, height: int, width: int) -> int:
        """How many patches ``patches`` mode hides in each image of this size."""
        rows, cols = self._grid(height, width)
        hidden = round(self.ratio * rows * cols)
        if hidden < 1:
            raise ValueError(
                f"mask ratio {self.ratio} of {rows * cols} patches hides none; raise the ratio "
                "or lower the patch_size"
            )
        return hidden

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"images of {height}x{width} pixels cannot be cut into {p}x{p} patches; choose a "
                f"mask patch_size that divides both sides (e.g. method.mask.patch_size=4)"
            )
        return height // p, width // p

    def _patches(self, batch: int, height: int, width: int, device) -> Tensor:
        rows, cols = self._grid(height, width)
        hidden = self.num_hidden_patches(height, width)
        noise = torch.rand(batch, rows * cols, generator=self.generator).to(device)
        chosen = noise.argsort(dim=1)[:, :hidden]
        grid = torch.zeros(batch, rows * cols, device=device).scatter_(1, chosen, 1.0)
        p = self.patch_size
        grid = grid.view(batch, 1, rows, cols)
        return grid.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)

    def _blocks(self, batch: int, height: int, width: int, device) -> Tensor:
        block_h = max(1, round(self.block_size * height))
        block_w = max(1, round(self.block_size * width))
        if self.block_position == "center":
            top = torch.full((batch,), (height - block_h) // 2)
            left = torch.full((batch,), (width - block_w) // 2)
        else:
            top = torch.randint(0, height - block_h + 1, (batch,), generator=self.generator)
            left = torch.randint(0, width - block_w + 1, (batch,), generator=self.generator)
        top, left = top.to(device)[:, None], left.to(device)[:, None]
        rows = torch.arange(height, device=device)[None]
        cols = torch.arange(width, device=device)[None]
        in_rows = (rows >= top) & (rows < top + block_h)
        in_cols = (cols >= left) & (cols < left + block_w)
        return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1).float()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mode={self.mode!r}, ratio={self.ratio}, "
            f"patch_size={self.patch_size}, block_size={self.block_size}, "
            f"block_position={self.block_position!r}, seed={self.seed})"
        )
