"""Vision transformers from timm as sslkit backbones (random weights, nothing downloaded)."""

from __future__ import annotations

import torch
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from lightly.models.utils import initialize_positional_embedding
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from sslkit.models.backbones import Backbone, _check_in_channels

POOLS = ("cls", "mean")
INITS = ("timm", "mae")
POS_EMBEDS = ("learned", "sincos")


class ViT(Backbone):
    """timm's ``VisionTransformer`` with the ``Backbone`` contract.

    The input is cut into ``patch_size`` patches, each a token of width ``embed_dim``, behind a
    class token; ``depth`` pre-norm blocks of ``num_heads`` heads follow. ``forward_spatial``
    gives the patch tokens as a map ``(B, embed_dim, H / patch_size, W / patch_size)`` (the
    decoders' input); the pooled features (``forward``) are the class token or the mean of the
    patch tokens (``pool``), after the final norm. Inputs of any size that ``patch_size``
    divides are taken: the position embeddings, learnt for an ``image_size`` grid, are
    resampled to the input's grid (bicubic, timm's ``resample_abs_pos_embed``), so local crops
    of multi-crop views need no second model. Position embeddings and the class token are
    exempt from weight decay, as norms and biases are (timm's ``no_weight_decay()`` names them;
    ``sslkit.optim.parameter_groups`` reads it).

    Args:
        in_channels: channels of the input images (set by the builders from the data).
        image_size: the side of the grid the position embeddings are learnt for; the views'
            size (``data.input_size``) is what a run trains on.
        patch_size: side of a square patch; must divide the input's height and width.
        embed_dim: token width, the pooled feature size (192 tiny, 384 small, 768 base).
        depth: number of transformer blocks.
        num_heads: attention heads per block; must divide ``embed_dim``.
        mlp_ratio: hidden width of each block's MLP over ``embed_dim``.
        pool: ``"cls"`` (the class token) or ``"mean"`` (the mean of the patch tokens).
        drop_path_rate: stochastic depth rate of the last block (0 turns it off).
        freeze_patch_embed: keep the patch projection at its random initialisation (no
            gradient, so no update and no weight decay): MoCo v3's recipe for a stable ViT.
        init: ``"timm"`` (timm's ViT initialisation: truncated normal, std 0.02, for linear
            layers and position embeddings) or ``"mae"`` (MAE's: Xavier-uniform linear layers
            and patch projection, zero biases, lightly's ``init_weights``).
        pos_embed: ``"learned"`` position embeddings, or ``"sincos"``: MAE's fixed 2-D
            sine-cosine embeddings (lightly's; no gradient, so never updated, fine-tuning
            included), resampled like learnt ones for another grid.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
        drop_path_rate: float = 0.0,
        freeze_patch_embed: bool = False,
        init: str = "timm",
        pos_embed: str = "learned",
    ) -> None:
        super().__init__()
        _check_in_channels(in_channels)
        if pool not in POOLS:
            raise ValueError(f"backbone.pool must be one of {POOLS}, got {pool!r}.")
        if init not in INITS:
            raise ValueError(f"backbone.init must be one of {INITS}, got {init!r}.")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"backbone.pos_embed must be one of {POS_EMBEDS}, got {pos_embed!r}.")
        for key, value in (("patch_size", patch_size), ("image_size", image_size)):
            if value < 1:
                raise ValueError(f"backbone.{key} must be >= 1, got {value}.")
        if image_size % patch_size:
            raise ValueError(
                f"backbone.patch_size={patch_size} does not divide backbone.image_size="
                f"{image_size}; pick a patch size that divides it."
            )
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(
                f"backbone.num_heads={num_heads} must divide backbone.embed_dim={embed_dim} "
                "(each head takes an equal slice of the token)."
            )
        self.model = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,
            global_pool="token",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            dynamic_img_size=True,
        )
        if init == "mae":
            _mae_init(self.model)
        if pos_embed == "sincos":
            initialize_positional_embedding(
                self.model.pos_embed, "sincos", self.model.num_prefix_tokens
            )
        if freeze_patch_embed:
            self.model.patch_embed.requires_grad_(False)
        self.in_channels = in_channels
        self.feature_dim = embed_dim
        self.output_stride = patch_size
        self.patch_size = patch_size
        self.pool_mode = pool

    def tokens(self, x: Tensor) -> Tensor:
        """Every token after the final norm, ``(B, 1 + H / p * W / p, embed_dim)``: the class
        token first, then the patches row by row."""
        return self.model.forward_features(self._checked(x))

    def _checked(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"backbone.patch_size={self.patch_size} does not divide the {height}x{width} "
                "input; pick a patch size that divides data.input_size (e.g. 4 or 7 at 28 px, "
                "4 or 8 at 32 px) or set data.input_size to a multiple of it."
            )
        return x

    def _patch_map(self, tokens: Tensor, height: int, width: int) -> Tensor:
        patches = tokens[:, self.model.num_prefix_tokens :]
        grid = (height // self.patch_size, width // self.patch_size)
        return patches.transpose(1, 2).reshape(tokens.shape[0], self.feature_dim, *grid)

    def forward_spatial(self, x: Tensor) -> Tensor:
        return self._patch_map(self.tokens(x), *x.shape[-2:])

    def export(self) -> tuple[dict[str, Tensor], dict[str, object]]:
        """timm's keys: loads strictly into ``timm.create_model`` of the ``kwargs`` given
        (``vit_*`` of this width, depth, heads, patch and grid, ``num_classes=0``); with
        ``global_pool`` set to this backbone's pooling, its output is these pooled features."""
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        model = self.model
        return state, {
            "library": "timm",
            "constructor": "timm.models.vision_transformer.VisionTransformer",
            "kwargs": {
                "img_size": model.patch_embed.img_size[0],
                "patch_size": self.patch_size,
                "in_chans": self.in_channels,
                "num_classes": 0,
                "global_pool": "token" if self.pool_mode == "cls" else "avg",
                "fc_norm": False,  # the final norm on every token, before pooling (as here)
                "embed_dim": self.feature_dim,
                "depth": len(model.blocks),
                "num_heads": model.blocks[0].attn.num_heads,
                "mlp_ratio": model.blocks[0].mlp.fc1.out_features / self.feature_dim,
                "dynamic_img_size": True,
            },
            "changes": [],
        }

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> Tensor:
        """The last block's attention of the class token to every patch, per head:
        ``(B, num_heads, H / patch_size, W / patch_size)``, each head's map summing to at most
        1 (the rest is the class token's attention to itself). What DINO shows of a ViT."""
        model = self.model
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(self._checked(x))))
        for block in model.blocks[:-1]:
            tokens = block(tokens)
        last = model.blocks[-1]
        attn = last.attn
        batch, count, _ = tokens.shape
        qkv = attn.qkv(last.norm1(tokens)).reshape(batch, count, 3, attn.num_heads, -1)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        weights = ((attn.q_norm(q) * attn.scale) @ attn.k_norm(k).transpose(-2, -1)).softmax(-1)
        patches = weights[:, :, 0, model.num_prefix_tokens :]
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return patches.reshape(batch, attn.num_heads, *grid)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, embed_dim)``: the class token or the patch tokens' mean."""
        tokens = self.tokens(x)
        if self.pool_mode == "cls":
            return tokens[:, 0]
        return tokens[:, self.model.num_prefix_tokens :].mean(dim=1)


def _mae_init(model: VisionTransformer) -> None:
    """MAE's initialisation of a timm ViT, as lightly's ``MaskedVisionTransformerTIMM`` does:
    the patch projection Xavier-uniform over its flattened kernel, the class token normal
    (std 0.02), every linear layer Xavier-uniform with zero bias and every LayerNorm the
    identity."""
    weight = model.patch_embed.proj.weight.data
    nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
    if model.cls_token is not None:
        nn.init.normal_(model.cls_token, std=0.02)
    model.apply(init_weights)
