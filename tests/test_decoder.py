"""ConvDecoder turns every backbone's feature map back into images of exactly the input's size."""

from __future__ import annotations

import pytest
import torch

from sslkit.models import ConvDecoder, ConvNet, ResNet

BACKBONES = {
    "convnet": lambda c: ConvNet(c),
    "convnet_tiny": lambda c: ConvNet(c, widths=[8, 16]),
    "resnet18": lambda c: ResNet(18, c, small_input=True),
    "resnet18_imagenet_stem": lambda c: ResNet(18, c, small_input=False),
    "resnet50": lambda c: ResNet(50, c, small_input=True),
    "resnet50_imagenet_stem": lambda c: ResNet(50, c, small_input=False),
    "resnet18_imagenet_stem_last_stride_1": lambda c: ResNet(
        18, c, small_input=False, last_stride=1
    ),
    "resnet50_imagenet_stem_last_stride_1": lambda c: ResNet(
        50, c, small_input=False, last_stride=1
    ),
}
# Image sizes of the data configs and presets: tests (16), Fashion-MNIST (28), synthetic and
# CIFAR (32), STL-10 (96); 28 is not a multiple of the stride of any of these backbones.
IMAGE_SIZES = [16, 28, 32, 96]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_decoder_output_has_the_input_shape(name):
    # On the meta device only shapes are computed: the real modules, at no compute cost.
    with torch.device("meta"):
        backbone = BACKBONES[name](3)
        decoder = ConvDecoder.for_backbone(backbone, width=64)
        for size in IMAGE_SIZES:
            images = torch.empty(2, 3, size, size)
            assert decoder(backbone.forward_spatial(images), (size, size)).shape == images.shape
            rectangular = torch.empty(2, 3, size, size + 4)
            out = decoder(backbone.forward_spatial(rectangular), rectangular.shape[-2:])
            assert out.shape == rectangular.shape


def test_decoder_on_real_grayscale_images_keeps_images_apart():
    backbone = ConvNet(1, widths=[8, 16, 32, 64]).eval()
    decoder = ConvDecoder.for_backbone(backbone, width=32).eval()
    images = torch.randn(2, 1, 28, 28, requires_grad=True)
    out = decoder(backbone.forward_spatial(images), images.shape[-2:])
    assert out.shape == images.shape and torch.isfinite(out).all()
    out[0, 0, 27, 27].backward()
    assert images.grad[0].abs().sum() > 0 and images.grad[1].abs().sum() == 0


def test_bad_decoder_settings_are_refused():
    with pytest.raises(ValueError, match="output_stride must be >= 1"):
        ConvDecoder(16, 3, output_stride=0, width=8)


@pytest.mark.parametrize("depth", [18, 50])
def test_last_stride_1_keeps_the_last_stage_at_the_resolution_before_it(depth):
    with torch.device("meta"):
        images = torch.empty(2, 1, 64, 64)
        default = ResNet(depth, 1, small_input=False)
        kept = ResNet(depth, 1, small_input=False, last_stride=1)
        assert (default.output_stride, kept.output_stride) == (32, 16)
        assert default.forward_spatial(images).shape[-2:] == (2, 2)
        assert kept.forward_spatial(images).shape[-2:] == (4, 4)
        assert kept(images).shape == (2, kept.feature_dim)
    # The same weights: torchvision checkpoints still load into either.
    assert {k: v.shape for k, v in default.state_dict().items()} == {
        k: v.shape for k, v in kept.state_dict().items()
    }


@pytest.mark.parametrize("stride", [0, 3, True, 2.0])
def test_bad_last_stride_is_refused(stride):
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        ResNet(18, 1, last_stride=stride)
