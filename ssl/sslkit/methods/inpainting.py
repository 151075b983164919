"""Masked inpainting: learn features by filling in hidden parts of images.

The network sees an image with regions hidden and reconstructs them from context (Context
Encoders, Pathak et al. 2016; masked image modelling as in MAE, He et al. 2021, and SimMIM, Xie
et al. 2022). The hidden pixels are replaced by a mask value, the masked image goes through the
backbone's spatial feature map, a light convolutional decoder brings it back to image resolution,
and the loss counts hidden pixels only.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.augment.masking import MaskGenerator
from sslkit.distributed import is_distributed, world_size
from sslkit.losses import masked_mse
from sslkit.losses.hog import hog
from sslkit.losses.masked_mse import patch_statistics
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models.backbones import Backbone
from sslkit.models.decoder import ConvDecoder

log = logging.getLogger(__name__)

MASK_TOKENS = ("learned", "zero")
TARGETS = ("pixels", "hog")


class MaskToken(nn.Module):
    """Fills hidden pixels with one value per channel: learned, or a constant zero.

    Inputs are normalised, so zero is the dataset mean; the learned value starts there. It is
    stored as a vector so that weight decay leaves it alone, like other bias-like parameters.
    """

    def __init__(self, channels: int, learned: bool = True) -> None:
        super().__init__()
        if learned:
            self.value = nn.Parameter(torch.zeros(channels))
        else:
            self.register_buffer("value", torch.zeros(channels))

    def forward(self, images: Tensor, mask: Tensor) -> Tensor:
        """``images`` with the pixels where ``mask`` is 1 replaced by the mask value."""
        value = self.value.view(1, -1, *[1] * (images.ndim - 2))
        return images * (1 - mask) + value * mask


class MaskedInpainting(SSLMethod):
    """Backbone + light convolutional decoder trained to reconstruct hidden pixels.

    Args:
        backbone: the encoder; its spatial feature map feeds the decoder and its pooled
            features are what every evaluation uses.
        mask: which pixels to hide (``block`` or ``patches``, see :class:`MaskGenerator`).
        mask_token: ``learned`` (one value per channel) or ``zero`` for the hidden pixels.
        decoder_width: channels of the decoder's first stage (halved per upsampling stage).
        norm_pix: reconstruct per-patch normalised pixels (MAE), patches of
            ``mask.patch_size``.
        target: what is reconstructed where the mask hides the image: ``pixels``, or ``hog``,
            the histograms of oriented gradients of its ``mask.patch_size`` cells (MaskFeat,
            Wei et al. 2022; :func:`sslkit.losses.hog.hog`). Pixels reward remembering colours,
            gradients knowing where edges run: on the synthetic shapes, whose colours are
            random, only ``hog`` makes the pooled features tell the shapes apart.
        hog_bins: orientation bins of the ``hog`` target.
        eval_mask_seed: seed of the masks of the test-split evaluation, fixed so that runs are
            compared on the same holes.
        num_reconstructions: test images shown in ``reconstructions.png`` by the evaluation
            (:func:`sslkit.eval.inpainting.evaluate_inpainting`).
        **kwargs: optimiser, schedule, probe and batch settings of :class:`SSLMethod`.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask: MaskGenerator | None = None,
        mask_token: str = "learned",
        decoder_width: int = 128,
        norm_pix: bool = False,
        target: str = "pixels",
        hog_bins: int = 9,
        eval_mask_seed: int = 0,
        num_reconstructions: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if mask_token not in MASK_TOKENS:
            raise ValueError(
                f"method.mask_token must be one of {list(MASK_TOKENS)}, got {mask_token!r}"
            )
        if num_reconstructions < 1:
            raise ValueError(f"method.num_reconstructions must be >= 1, got {num_reconstructions}")
        self.mask_generator = mask if mask is not None else MaskGenerator()
        self.mask_token = MaskToken(backbone.in_channels, learned=mask_token == "learned")
        if target not in TARGETS:
            raise ValueError(f"method.target must be one of {list(TARGETS)}, got {target!r}")
        self.target = target
        self.hog_bins = hog_bins
        if target == "hog" and backbone.spatial_dims != 2:
            raise ValueError(
                "method.target=hog takes gradients of 2-D images; for volumes and clips use "
                "method.target=pixels"
            )
        if target == "hog" and norm_pix:
            raise ValueError(
                "method.norm_pix normalises pixel targets; with method.target=hog the targets "
                "are already normalised histograms: set method.norm_pix=false"
            )
        if hog_bins < 2:
            raise ValueError(f"method.hog_bins must be >= 2, got {hog_bins}")
        self.decoder = self.build_decoder(
            backbone, decoder_width, hog_bins if target == "hog" else None
        )
        self.norm_pix = norm_pix
        self.eval_mask_seed = eval_mask_seed
        self._restored_mask_states: list[Tensor] | None = None
        self.num_reconstructions = num_reconstructions

    def build_decoder(self, backbone: Backbone, width: int, out_channels: int | None) -> nn.Module:
        """The decoder from the backbone's feature map to image resolution (a light conv
        decoder; ``out_channels`` None: the image's channels)."""
        return ConvDecoder.for_backbone(backbone, width=width, out_channels=out_channels)

    def on_fit_start(self) -> None:
        # Under data parallelism every process draws its own masks, not copies of rank 0's.
        if self.global_rank:
            self.mask_generator = self.mask_generator.with_seed(
                self.mask_generator.seed + self.global_rank
            )
        # A resumed run continues each process's mask sequence where the checkpoint left it
        # (Lightning restores the checkpoint before on_fit_start).
        states, self._restored_mask_states = self._restored_mask_states, None
        if states is None:
            return
        if len(states) != self.trainer.world_size:
            log.warning(
                "the checkpoint holds the mask sequences of %d processes and this run has %d: "
                "the masks start new sequences from method.mask.seed, so this run does not "
                "repeat the masks an uninterrupted run would have drawn.",
                len(states),
                self.trainer.world_size,
            )
            return
        self.mask_generator.generator.set_state(states[self.global_rank])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also save every process's mask-generator state (``sslkit_mask_states``, one per rank),
        so that a resumed run draws the masks the uninterrupted run would have drawn."""
        super().on_save_checkpoint(checkpoint)
        state = self.mask_generator.generator.get_state()
        states = [state]
        if is_distributed():
            # Lightning builds the checkpoint on every process; rank 0 writes it.
            states = [torch.empty_like(state) for _ in range(world_size())]
            dist.all_gather(states, state)
        checkpoint["sslkit_mask_states"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_mask_states = checkpoint.get("sslkit_mask_states")

    def reconstruct(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder output for ``images`` with ``mask`` hidden, and the pooled features it saw."""
        feature_map = self.backbone.forward_spatial(self.mask_token(images, mask))
        prediction = self.decoder(feature_map, images.shape[2:])
        return prediction, self.backbone.pool(feature_map)

    @property
    def reconstructs_pixels(self) -> bool:
        """Whether the decoder predicts pixels (``target=pixels``), so images can be inpainted."""
        return self.target == "pixels"

    def reconstruction_loss(self, prediction: Tensor, images: Tensor, mask: Tensor) -> Tensor:
        """``masked_mse`` of the prediction on the hidden pixels, with this method's targets
        (with ``target=hog``: per-pixel predictions and the mask averaged over each cell)."""
        if self.target == "hog":
            cell = self.mask_generator.patch_size
            return masked_mse(
                F.avg_pool2d(prediction, cell),
                hog(images, cell, self.hog_bins),
                F.avg_pool2d(mask, cell),
            )
        return masked_mse(
            prediction,
            images,
            mask,
            norm_pix=self.norm_pix,
            patch_size=self.mask_generator.patch_size,
        )

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        (images,) = split_views(views, 1, "MaskedInpainting")
        mask = self.mask_generator(images)
        prediction, features = self.reconstruct(images, mask)
        loss = self.reconstruction_loss(prediction, images, mask)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        # The probe sees the pooled features of the masked image: no second forward pass.
        return loss + self.online_probe_loss(features, targets)

    @torch.no_grad()
    def inpaint(self, images: Tensor, mask: Tensor) -> Tensor:
        """``images`` with their hidden pixels replaced by the reconstruction (input space).

        With ``norm_pix`` the decoder predicts per-patch normalised pixels; they are mapped back
        with the statistics of the true patches, as MAE's visualisations do, so the result then
        borrows each hidden patch's mean and spread from the original.
        """
        if not self.reconstructs_pixels:
            raise ValueError(f"method.target={self.target} predicts no pixels: nothing to inpaint")
        prediction, _ = self.reconstruct(images, mask)
        if self.norm_pix:
            mean, std = patch_statistics(images, self.mask_generator.patch_size)
            prediction = prediction * std + mean
        return images * (1 - mask) + prediction * mask

    def hide(self, images: Tensor, mask: Tensor) -> Tensor:
        """The input the network sees: ``images`` with the pixels where ``mask`` is 1 hidden."""
        return self.mask_token(images, mask)

    def evaluation_masks(self) -> MaskGenerator:
        """The masks of the test-split evaluation: a fixed sequence, seeded by
        ``eval_mask_seed``, so that runs are compared on the same holes."""
        return self.mask_generator.with_seed(self.eval_mask_seed)
