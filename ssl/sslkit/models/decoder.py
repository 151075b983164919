"""A light convolutional decoder from a backbone's feature map back to image resolution.

Reconstruction methods (masked inpainting) need pixels out of the encoder. The decoder is kept
small on purpose: the pretext task should be solved by the encoder, whose features are what
gets evaluated, not by a powerful decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.models.backbones import Backbone

MIN_WIDTH = 16
# Convolution, normalisation and upsampling mode per number of spatial axes.
_LAYERS = {
    2: (nn.Conv2d, nn.BatchNorm2d, "bilinear"),
    3: (nn.Conv3d, nn.BatchNorm3d, "trilinear"),
}


class ConvDecoder(nn.Module):
    """Feature map ``(B, in_dim, h, w)`` -> image ``(B, out_channels, H, W)`` of a given size
    (with ``spatial_dims=3``: ``(B, in_dim, d, h, w)`` -> volume ``(B, out_channels, D, H, W)``,
    3x3x3 convolutions and trilinear upsampling).

    A 1x1 convolution to ``width`` channels, then one stage per factor of two in
    ``output_stride`` (bilinear upsampling, 3x3 convolution, BatchNorm, ReLU; channels halved per
    stage, at least 16), then a 3x3 convolution to ``out_channels``. Stage ``i`` of ``n``
    upsamples to ``ceil(H / 2**(n-1-i))``, the sizes the encoder went through on the way down,
    so the output has exactly the input's size even when it is not a multiple of the stride
    (28 px with stride 8: 4 -> 7 -> 14 -> 28). The output is linear, in the input's
    (normalised) space.
    """

    def __init__(
        self, in_dim: int, out_channels: int, output_stride: int, width: int, spatial_dims: int = 2
    ):
        super().__init__()
        if spatial_dims not in _LAYERS:
            raise ValueError(f"ConvDecoder spatial_dims must be 2 or 3, got {spatial_dims}")
        conv, norm, self.mode = _LAYERS[spatial_dims]
        for name, value in (
            ("in_dim", in_dim),
            ("out_channels", out_channels),
            ("output_stride", output_stride),
            ("width", width),
        ):
            if value < 1:
                raise ValueError(f"ConvDecoder {name} must be >= 1, got {value}")
        self.output_stride = output_stride
        self.project = conv(in_dim, width, kernel_size=1)
        stages: list[nn.Module] = []
        channels = width
        for _ in range(math.ceil(math.log2(output_stride))):
            out = max(channels // 2, MIN_WIDTH)
            stages.append(
                nn.Sequential(
                    conv(channels, out, kernel_size=3, padding=1, bias=False),
                    norm(out),
                    nn.ReLU(inplace=True),
                )
            )
            channels = out
        self.stages = nn.ModuleList(stages)
        self.head = conv(channels, out_channels, kernel_size=3, padding=1)

    @classmethod
    def for_backbone(
        cls, backbone: Backbone, width: int, out_channels: int | None = None
    ) -> ConvDecoder:
        """A decoder from ``backbone``'s feature map to its input's resolution, with
        ``out_channels`` per pixel or voxel (default: the input's channels, i.e. images)."""
        return cls(
            backbone.feature_dim,
            backbone.in_channels if out_channels is None else out_channels,
            backbone.output_stride,
            width,
            spatial_dims=backbone.spatial_dims,
        )

    def forward(self, feature_map: Tensor, size: Sequence[int]) -> Tensor:
        """Decode ``feature_map`` into images of spatial ``size`` ``(H, W)`` (volumes of
        ``(D, H, W)``)."""
        size = tuple(int(side) for side in size)
        x = self.project(feature_map)
        for i, stage in enumerate(self.stages):
            factor = 2 ** (len(self.stages) - 1 - i)
            target = tuple(math.ceil(side / factor) for side in size)
            x = stage(F.interpolate(x, size=target, mode=self.mode, align_corners=False))
        if tuple(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode=self.mode, align_corners=False)
        return self.head(x)
