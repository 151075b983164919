"""MAE (He et al. 2021): a ViT encodes the visible patches of an image only, a light transformer
decoder reconstructs the hidden ones; masked inpainting on a transformer.

It is :class:`~sslkit.methods.inpainting.MaskedInpainting` with the encoder and decoder MAE
uses: the masks (:class:`~sslkit.augment.MaskGenerator` in ``patches`` mode, the ViT's patch
size), the loss (per-patch normalised pixels on the hidden patches, ``masked_mse``), the mask
state in checkpoints and the reconstructions grid of the evaluation are the inpainting
method's.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from lightly.models.utils import initialize_positional_embedding
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from sslkit.augment.masking import MaskGenerator
from sslkit.configurable import configurable
from sslkit.methods.base import METHOD_RUNTIME_ARGS
from sslkit.methods.inpainting import MaskedInpainting
from sslkit.models.backbones import Backbone
from sslkit.models.vit import INITS, ViT


class MAEDecoder(nn.Module):
    """MAE's decoder: the visible tokens projected to ``width``, a shared learned mask token in
    every hidden patch's place, learned position embeddings (resampled for another grid),
    ``depth`` transformer blocks, and a linear map of each patch token to its pixels.

    Args:
        embed_dim: width of the encoder's tokens.
        width: width of the decoder's tokens (512 in MAE; a fraction of the encoder's here).
        depth: decoder blocks (8 in MAE).
        num_heads: attention heads per block; must divide ``width``.
        patch_size: side of a patch in pixels.
        in_channels: channels of the images.
        grid: the patch grid ``(rows, columns)`` the position embeddings are learnt for.
        init: ``"timm"`` (learnt position embeddings, truncated normal; the blocks as timm's
            ``Block`` builds them) or ``"mae"`` (MAE's: fixed 2-D sine-cosine position
            embeddings, Xavier-uniform linear layers with zero biases; lightly's helpers).
    """

    def __init__(
        self,
        embed_dim: int,
        width: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        in_channels: int,
        grid: tuple[int, int],
        init: str = "timm",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"method.decoder_init must be one of {INITS}, got {init!r}.")
        if width < 1 or depth < 1 or num_heads < 1 or width % num_heads:
            raise ValueError(
                f"the MAE decoder needs width, depth and heads >= 1 with the heads dividing the "
                f"width (method.decoder_width={width}, method.decoder_depth={depth}, "
                f"method.decoder_heads={num_heads})."
            )
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.grid = tuple(grid)
        self.embed = nn.Linear(embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], width))
        self.blocks = nn.Sequential(
            *[Block(width, num_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(width)
        self.predict = nn.Linear(width, patch_size * patch_size * in_channels)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        if init == "mae":
            self.apply(init_weights)
            initialize_positional_embedding(self.pos_embed, "sincos", 1)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "mask_token"}

    def forward(self, tokens: Tensor, keep: Tensor, grid: tuple[int, int]) -> Tensor:
        """Pixels ``(B, C, rows * p, columns * p)`` of every patch from the encoder's ``tokens``
        ``(B, 1 + V, embed_dim)`` (class token, then the visible patches at the grid indices
        ``keep`` ``(B, V)``)."""
        x = self.embed(tokens)
        batch, width = x.shape[0], x.shape[-1]
        count = grid[0] * grid[1]
        patches = self.mask_token.expand(batch, count, width).to(x.dtype)
        patches = torch.scatter(patches, 1, keep[..., None].expand(-1, -1, width), x[:, 1:])
        x = torch.cat([x[:, :1], patches], dim=1)
        pos_embed = self.pos_embed
        if tuple(grid) != self.grid:
            pos_embed = resample_abs_pos_embed(pos_embed, list(grid), list(self.grid), 1)
        x = self.norm(self.blocks(x + pos_embed))
        pixels = self.predict(x[:, 1:])  # (B, rows * columns, p * p * C)
        p, c = self.patch_size, self.in_channels
        pixels = pixels.view(batch, grid[0], grid[1], p, p, c).permute(0, 5, 1, 3, 2, 4)
        return pixels.reshape(batch, c, grid[0] * p, grid[1] * p)


@configurable(
    runtime=METHOD_RUNTIME_ARGS,
    # MaskedInpainting's keys that MAE fixes: its masks, and no mask token in the pixels.
    exclude=("mask", "mask_token"),
)
class MAE(MaskedInpainting):
    """A ViT encoder on the visible patches, MAE's transformer decoder, and the inpainting
    method's masks, loss and evaluation.

    Every image hides ``mask_ratio`` of its patches (75 % by default), the same number in each
    (``MaskGenerator`` in ``patches`` mode, with the ViT's patch size, seeded by ``mask_seed``;
    None: from the run's seed). The encoder (the
    backbone's patch embedding, position embeddings, blocks and final norm) runs on the class
    token and the visible patch tokens only; the decoder (:class:`MAEDecoder`) fills in the
    hidden ones and predicts every patch's pixels; the loss is the mean squared error on the
    hidden pixels of per-patch normalised targets (``norm_pix``, as MAE). The online probe reads
    the class token of the visible tokens; every evaluation reads the backbone on whole images.

    Args:
        backbone: a :class:`~sslkit.models.vit.ViT` (``backbone=vit_*``).
        mask_ratio: fraction of the patches hidden in every image (0.75 in MAE).
        mask_seed: seed of the masks' sequence (None: drawn from the run's seed).
        decoder_width: width of the decoder's tokens.
        decoder_depth: decoder blocks.
        decoder_heads: attention heads of each decoder block.
        decoder_init: the decoder's initialisation, ``"timm"`` or ``"mae"`` (fixed sine-cosine
            position embeddings, Xavier-uniform linear layers; see :class:`MAEDecoder`).
        norm_pix: reconstruct per-patch normalised pixels (MAE's default; pixel targets only).
        target: ``pixels`` (MAE) or ``hog``, the hidden patches' histograms of oriented
            gradients (MaskFeat; the inpainting method's targets): where colours are noise,
            pixels teach colours, gradients shapes.
        hog_bins: orientation bins of the ``hog`` target.
        eval_mask_seed: seed of the test-split evaluation's masks.
        num_reconstructions: test images in ``reconstructions.png``.
        **kwargs: optimiser, schedule, probe and batch settings of ``SSLMethod``.
    """

    #: MAE needs a ViT (generic tests build it around a tiny one).
    backbone_kind = ViT

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask_ratio: float = 0.75,
        mask_seed: int | None = None,
        decoder_width: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        decoder_init: str = "timm",
        norm_pix: bool = True,
        target: str = "pixels",
        hog_bins: int = 9,
        eval_mask_seed: int = 0,
        num_reconstructions: int = 8,
        **kwargs: Any,
    ) -> None:
        if not isinstance(backbone, self.backbone_kind):
            raise ValueError(
                f"MAE encodes the visible patch tokens of a vision transformer; got a "
                f"{type(backbone).__name__} backbone: set backbone=vit_cpu (or another vit_*), or "
                "use method=inpainting on a conv net."
            )
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(
                f"method.mask_ratio is the fraction of patches hidden, in (0, 1) (MAE: 0.75), "
                f"got {mask_ratio}."
            )
        mask = MaskGenerator(
            mode="patches", ratio=mask_ratio, patch_size=backbone.patch_size, seed=mask_seed
        )
        self._decoder_shape = (decoder_depth, decoder_heads, decoder_init)  # build_decoder
        super().__init__(
            backbone,
            mask=mask,
            mask_token="zero",  # the encoder never sees hidden patches; only the plot does
            decoder_width=decoder_width,
            norm_pix=norm_pix and target == "pixels",
            target=target,
            hog_bins=hog_bins,
            eval_mask_seed=eval_mask_seed,
            num_reconstructions=num_reconstructions,
            **kwargs,
        )

    def build_decoder(self, backbone: Backbone, width: int, out_channels: int | None) -> nn.Module:
        depth, heads, init = self._decoder_shape
        grid = backbone.model.patch_embed.grid_size
        return MAEDecoder(
            backbone.feature_dim,
            width,
            depth,
            heads,
            backbone.patch_size,
            out_channels or backbone.in_channels,
            (int(grid[0]), int(grid[1])),
            init,
        )

    def encode_visible(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's tokens ``(B, 1 + V, D)`` of the class token and the patches ``mask``
        leaves visible, and those patches' grid indices ``(B, V)`` (in grid order)."""
        p = self.backbone.patch_size
        hidden = mask[:, 0, ::p, ::p].flatten(1) > 0.5  # (B, rows * columns)
        visible = (~hidden).sum(dim=1)
        if visible.numel() and not bool((visible == visible[0]).all()):
            raise ValueError("MAE needs the same number of visible patches in every image.")
        keep = torch.sort((~hidden).float(), dim=1, descending=True, stable=True).indices
        keep = keep[:, : int(visible[0]) if visible.numel() else 0].sort(dim=1).values
        model = self.backbone.model
        x = model._pos_embed(model.patch_embed(images))  # (B, 1 + N, D), position added
        x = model.norm_pre(x)
        patches = torch.gather(x[:, 1:], 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        x = model.norm(model.blocks(torch.cat([x[:, :1], patches], dim=1)))
        return x, keep

    def reconstruct(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted pixels of every patch from the visible ones, and the class token the
        encoder gave (what the online probe reads)."""
        tokens, keep = self.encode_visible(images, mask)
        p = self.backbone.patch_size
        grid = (images.shape[-2] // p, images.shape[-1] // p)
        return self.decoder(tokens, keep, grid), tokens[:, 0]
