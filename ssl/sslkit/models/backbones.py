"""Backbones: encoders that expose both a spatial feature map and pooled features.

Every backbone reports ``in_channels`` (channels of the inputs it takes), ``feature_dim``
(channels of the map = size of the pooled vector), ``output_stride`` (how much smaller the map
is than the input along its spatial axes) and ``spatial_dims`` (2 for images ``(B, C, H, W)``,
3 for volumes and clips ``(B, C, D, H, W)``), so heads that need the map (the inpainting decoder)
and heads that need the vector (projectors, probes) are written once for all backbones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from sslkit.configurable import configurable


@configurable(runtime=("in_channels",))
class Backbone(nn.Module):
    """Base class: subclasses implement :meth:`forward_spatial` and set the three attributes."""

    in_channels: int
    feature_dim: int
    output_stride: int
    spatial_dims: int = 2

    def forward_spatial(self, x: Tensor) -> Tensor:
        """Feature map ``(B, feature_dim, H / output_stride, W / output_stride)`` (with a depth
        axis in front of H for 3-D backbones)."""
        raise NotImplementedError

    def pool(self, feature_map: Tensor) -> Tensor:
        """Pooled features ``(B, feature_dim)`` of a feature map: the global average over its
        spatial axes (two for images, three for volumes and clips)."""
        return feature_map.mean(dim=tuple(range(2, feature_map.ndim)))

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, feature_dim)`` of the spatial feature map."""
        return self.pool(self.forward_spatial(x))

    def export(self) -> tuple[dict[str, Tensor], dict[str, object]]:
        """The weights as a plain state dict for the library model of the same architecture,
        and how to build that model (``library``, ``constructor``, ``kwargs``, ``changes``:
        what to set on the model before ``load_state_dict``). Here: sslkit's own class with
        its own keys; the ResNet and ViT backbones name torchvision's and timm's models."""
        state = {key: value.detach().cpu().clone() for key, value in self.state_dict().items()}
        return state, {
            "library": "sslkit",
            "constructor": f"{type(self).__module__}.{type(self).__name__}",
            "kwargs": {"in_channels": self.in_channels},
            "changes": [],
        }

    def set_channels_last(self, enabled: bool) -> None:
        """Stores convolution weights channels-last (NHWC) when ``enabled``: convolutions then
        run, and hand their outputs on, in that layout, which is faster with tensor cores on
        GPUs and, through oneDNN, on CPUs in float32 as in bf16 (the 2-D ResNet and ConvNet
        default to it: ``experiments/throughput/bench_throughput.py --model-step-only`` measures
        the step in both layouts). Results are the same up to float rounding."""
        self.channels_last = bool(enabled)
        if self.channels_last:
            layout = torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d
            self.to(memory_format=layout)


def _check_in_channels(in_channels: int) -> None:
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")


class ResNet(Backbone):
    """torchvision ResNet-18/34/50 without its classifier.

    ``small_input=True`` swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 stem, the
    usual choice for 28-96 px images (CIFAR, Fashion-MNIST, STL-10), where the ImageNet stem
    would throw away most of the resolution in its first two layers. ``last_stride``: the
    stride of the last stage (``layer4``), 2 as in torchvision; 1 keeps that stage at the
    resolution of the one before (a 2x2 instead of a 1x1 map for 28 px images with the ImageNet
    stem, at a higher cost per step; experiments/fashion_mnist has the runs) and halves
    ``output_stride``.
    ``channels_last``: see :meth:`Backbone.set_channels_last` (on by default).
    """

    _builders = {
        18: torchvision.models.resnet18,
        34: torchvision.models.resnet34,
        50: torchvision.models.resnet50,
    }

    def __init__(
        self,
        depth: int = 18,
        in_channels: int = 3,
        small_input: bool = True,
        last_stride: int = 2,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if depth not in self._builders:
            raise ValueError(f"ResNet depth must be one of {sorted(self._builders)}, got {depth}")
        if type(last_stride) is not int or last_stride not in (1, 2):
            raise ValueError(f"backbone.last_stride must be 1 or 2, got {last_stride!r}.")
        _check_in_channels(in_channels)
        net = self._builders[depth](weights=None)
        if small_input:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if last_stride == 1:
            # The strided convolutions of layer4's first block: the 3x3 one (conv1 in a basic
            # block, conv2 in a bottleneck) and the 1x1 of its shortcut.
            for conv in net.layer4[0].modules():
                if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
                    conv.stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.in_channels = in_channels
        self.feature_dim = net.fc.in_features
        self.output_stride = (8 if small_input else 32) * last_stride // 2
        self.depth = depth
        self.set_channels_last(channels_last)

    def forward_spatial(self, x: Tensor) -> Tensor:
        return self.layers(self.stem(x))

    def export(self) -> tuple[dict[str, Tensor], dict[str, object]]:
        """torchvision's ``resnet<depth>`` keys (``conv1``, ``bn1``, ``layer1``..``layer4``),
        no ``fc``: load into ``torchvision.models.resnet<depth>()`` after ``fc = Identity()``
        (and, for the small-input stem or other channels, the ``conv1`` / ``maxpool`` listed
        in ``changes``); its output is then this backbone's pooled features."""
        names = {"stem.0.": "conv1.", "stem.1.": "bn1."}
        names |= {f"layers.{i}.": f"layer{i + 1}." for i in range(4)}
        state = {}
        for key, value in self.state_dict().items():
            prefix = next(p for p in names if key.startswith(p))
            state[names[prefix] + key[len(prefix) :]] = value.detach().cpu().clone()
        conv1 = self.stem[0]
        changes = ["fc = torch.nn.Identity()"]
        if conv1.kernel_size != (7, 7) or conv1.in_channels != 3:
            k, st, pad = conv1.kernel_size[0], conv1.stride[0], conv1.padding[0]
            changes.append(
                f"conv1 = torch.nn.Conv2d({conv1.in_channels}, 64, kernel_size={k}, "
                f"stride={st}, padding={pad}, bias=False)"
            )
        if isinstance(self.stem[3], nn.Identity):
            changes.append("maxpool = torch.nn.Identity()")
        strides = [m.stride for m in self.layers[3][0].modules() if isinstance(m, nn.Conv2d)]
        if (2, 2) not in strides:
            changes.append(
                "layer4[0]: the stride-2 convolutions (conv1/conv2, downsample[0]) at stride 1"
            )
        return state, {
            "library": "torchvision",
            "constructor": f"torchvision.models.resnet{self.depth}",
            "kwargs": {"weights": None},
            "changes": changes,
        }


class ConvNet(Backbone):
    """A small VGG-style convnet for CPU runs: per stage conv-BN-ReLU twice, then stride 2.
    (Per-sample standardisation of its inputs is a data step, ``data.standardize``.)
    Channels-last by default (:meth:`Backbone.set_channels_last`)."""

    # Convolution and normalisation of a stage; the 3-D subclass swaps them.
    _layers: tuple[type[nn.Module], type[nn.Module]] = (nn.Conv2d, nn.BatchNorm2d)

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        _check_in_channels(in_channels)
        if not widths:
            raise ValueError(f"{type(self).__name__} needs at least one stage width")
        self.stages = _conv_stages(*self._layers, in_channels, widths)
        self.in_channels = in_channels
        self.feature_dim = int(widths[-1])
        self.output_stride = 2 ** (len(widths) - 1)
        self.set_channels_last(channels_last)

    def forward_spatial(self, x: Tensor) -> Tensor:
        return self.stages(x)


def _conv_stages(
    conv: type[nn.Module], norm: type[nn.Module], in_channels: int, widths: Sequence[int]
) -> nn.Sequential:
    """Per width: conv-BN-ReLU twice (3-wide kernels), the first conv of every stage after the
    first with stride 2. ``conv``/``norm`` pick the dimensionality (2-D or 3-D)."""
    stages: list[nn.Module] = []
    prev = in_channels
    for i, width in enumerate(widths):
        stride = 1 if i == 0 else 2
        stages.append(
            nn.Sequential(
                conv(prev, width, 3, stride=stride, padding=1, bias=False),
                norm(width),
                nn.ReLU(inplace=True),
                conv(width, width, 3, padding=1, bias=False),
                norm(width),
                nn.ReLU(inplace=True),
            )
        )
        prev = width
    return nn.Sequential(*stages)


class ConvNet3d(ConvNet):
    """The 3-D twin of :class:`ConvNet` for volumes and clips ``(B, C, D, H, W)`` on CPU:
    per stage conv-BN-ReLU twice with 3x3x3 kernels, then stride 2 along all three axes.

    Channels-last by default: on CPUs (oneDNN) its 3-D convolutions train faster in that layout
    than in the contiguous one (experiments/video_volumes; :meth:`Backbone.set_channels_last`)."""

    spatial_dims = 3
    _layers = (nn.Conv3d, nn.BatchNorm3d)

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        channels_last: bool = True,
    ) -> None:
        super().__init__(in_channels, widths, channels_last)


class VideoResNet(Backbone):
    """torchvision's 3-D ResNets ``r3d_18`` and ``r2plus1d_18`` without their classifier, for
    volumes and clips ``(B, C, D, H, W)``; untrained (no pretrained weights are loaded).

    ``small_input=True`` swaps the stem (stride 2 in H and W) for a 3x3x3 stride-1 convolution,
    the choice for inputs of a few dozen voxels per side, where torchvision's stem and three
    stride-2 stages would leave a map of one voxel. ``in_channels`` other than 3 replace the
    stem's first convolution. ``output_stride`` is the reduction along H and W (the depth axis
    is reduced 8x by the stages either way).
    """

    spatial_dims = 3
    _builders = {
        "r3d_18": torchvision.models.video.r3d_18,
        "r2plus1d_18": torchvision.models.video.r2plus1d_18,
    }

    def __init__(
        self,
        arch: str = "r3d_18",
        in_channels: int = 3,
        small_input: bool = True,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if arch not in self._builders:
            raise ValueError(
                f"VideoResNet arch must be one of {sorted(self._builders)}, got {arch!r}"
            )
        _check_in_channels(in_channels)
        net = self._builders[arch](weights=None)
        if small_input:
            net.stem = nn.Sequential(
                nn.Conv3d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False),
                nn.BatchNorm3d(64),
                nn.ReLU(inplace=True),
            )
        elif in_channels != 3:
            first = net.stem[0]
            net.stem[0] = nn.Conv3d(
                in_channels,
                first.out_channels,
                kernel_size=first.kernel_size,
                stride=first.stride,
                padding=first.padding,
                bias=False,
            )
        self.stem = net.stem
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.in_channels = in_channels
        self.feature_dim = net.fc.in_features
        self.output_stride = 8 if small_input else 16
        self.arch = arch
        self.set_channels_last(channels_last)

    def forward_spatial(self, x: Tensor) -> Tensor:
        return self.layers(self.stem(x))


@torch.no_grad()
def describe(backbone: Backbone) -> dict[str, object]:
    """What identifies a backbone's architecture, used to refuse mismatched checkpoints."""
    return {
        "class": type(backbone).__name__,
        "feature_dim": backbone.feature_dim,
        "output_stride": backbone.output_stride,
        "num_parameters": sum(p.numel() for p in backbone.parameters()),
    }


def load_torchvision_weights(backbone: Backbone, name: str) -> Backbone:
    """Copy torchvision's pretrained weights ``name`` into a :class:`ResNet` backbone.

    ``name`` is a torchvision weights enum member such as ``ResNet18_Weights.IMAGENET1K_V1``
    (or ``ResNet50_Weights.DEFAULT``); the file is read from torch's hub cache
    (``torch.hub.get_dir()/checkpoints``) or downloaded there. The weights fit the ImageNet
    stem, so the backbone needs ``small_input=false``; on grayscale data the first
    convolution's kernels are summed over the RGB channels. Returns the backbone.
    """
    if not isinstance(backbone, ResNet):
        raise ValueError(
            f"torchvision weights are available here for ResNet backbones only, not "
            f"{type(backbone).__name__}; use eval.weights=random or backbone=resnet18/resnet50"
        )
    try:
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ValueError(
            f"unknown torchvision weights {name!r}; name an enum member such as "
            f"ResNet{backbone.depth}_Weights.IMAGENET1K_V1"
        ) from None
    expected = f"ResNet{backbone.depth}_Weights"
    if type(weights).__name__ != expected:
        raise ValueError(
            f"{name} are not weights of the configured ResNet-{backbone.depth}; "
            f"use {expected}.<name> or the matching backbone"
        )
    stem = backbone.stem[0]
    if stem.kernel_size != (7, 7):
        raise ValueError(
            f"{name} fit the ImageNet stem (7x7 convolution, stride 2): "
            "set backbone.small_input=false to evaluate them"
        )
    try:
        state = weights.get_state_dict(progress=False)
    except OSError as exc:
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise FileNotFoundError(
            f"could not load the torchvision weights {name} ({exc}); without network access, "
            f"put {Path(weights.url).name} (from {weights.url}) at {file}"
        ) from None
    conv1 = state["conv1.weight"]
    if stem.in_channels != conv1.shape[1]:
        conv1 = conv1.sum(dim=1, keepdim=True)
    renamed = {"stem.0.weight": conv1}
    for key, value in state.items():
        if key.startswith("bn1."):
            renamed[f"stem.1.{key.removeprefix('bn1.')}"] = value
        elif key.startswith("layer"):
            index, rest = key.removeprefix("layer").split(".", 1)
            renamed[f"layers.{int(index) - 1}.{rest}"] = value
    backbone.load_state_dict(renamed)
    return backbone
