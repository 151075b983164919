"""The shared 3-D core: backbones, in-memory samples, masks, decoder and loss on (B, C, D, H, W)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslkit.augment import MaskGenerator
from sslkit.data import TensorArrayDataset
from sslkit.data.datamodule import TensorImages, tensor_images
from sslkit.eval.plots import preview_image
from sslkit.losses import masked_mse
from sslkit.losses.masked_mse import patch_statistics
from sslkit.models import ConvDecoder, ConvNet3d, VideoResNet

BACKBONES = {
    "conv3d": (lambda c: ConvNet3d(c, widths=[8, 16, 32]), 32, 4),
    "r3d_18": (lambda c: VideoResNet("r3d_18", c), 512, 8),
    "r2plus1d_18": (lambda c: VideoResNet("r2plus1d_18", c), 512, 8),
    "r3d_18_video_stem": (lambda c: VideoResNet("r3d_18", c, small_input=False), 512, 16),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("channels", [1, 3])
def test_3d_backbones_give_a_map_and_pooled_features(name, channels):
    build, feature_dim, stride = BACKBONES[name]
    with torch.device("meta"):  # shapes only, at no compute cost
        backbone = build(channels)
        volumes = torch.empty(2, channels, 16, 32, 32)
        feature_map = backbone.forward_spatial(volumes)
        assert feature_map.shape[:2] == (2, feature_dim)
        assert feature_map.ndim == 5 and feature_map.shape[-1] == 32 // stride
        assert backbone(volumes).shape == (2, feature_dim)
    assert (backbone.feature_dim, backbone.output_stride) == (feature_dim, stride)
    assert backbone.spatial_dims == 3 and backbone.in_channels == channels


def test_conv3d_pools_the_mean_of_its_map():
    backbone = ConvNet3d(1, widths=[4, 8]).eval()
    volumes = torch.randn(3, 1, 8, 8, 8)
    feature_map = backbone.forward_spatial(volumes)
    assert torch.allclose(backbone(volumes), feature_map.mean(dim=(2, 3, 4)))


def test_unknown_video_resnet_is_refused():
    with pytest.raises(ValueError, match="r2plus1d_18"):
        VideoResNet("r3d_50")


def test_decoder_brings_a_3d_map_back_to_the_volume_size():
    with torch.device("meta"):
        for backbone in (ConvNet3d(2, widths=[8, 16, 32]), VideoResNet("r3d_18", 2)):
            decoder = ConvDecoder.for_backbone(backbone, width=32)
            for size in [(16, 16, 16), (12, 20, 20)]:
                volumes = torch.empty(2, 2, *size)
                out = decoder(backbone.forward_spatial(volumes), volumes.shape[2:])
                assert out.shape == volumes.shape


def test_tensor_images_gathers_and_normalises_volumes_per_channel():
    samples = torch.randint(0, 256, (5, 2, 4, 6, 6), dtype=torch.uint8)
    targets = torch.arange(5)
    raw, labels = TensorImages(samples, targets).__getitems__([3, 1])
    assert raw.dtype == torch.uint8 and torch.equal(raw, samples[[3, 1]])
    assert torch.equal(labels, torch.tensor([3, 1]))
    normalised, _ = TensorImages(samples, targets, mean=(0.5, 0.25), std=(0.5, 0.1))[2]
    expected = (
        samples[2].float() / 255 - torch.tensor([0.5, 0.25]).view(2, 1, 1, 1)
    ) / torch.tensor([0.5, 0.1]).view(2, 1, 1, 1)
    assert normalised.shape == (2, 4, 6, 6)
    assert torch.allclose(normalised, expected, atol=1e-5)


def test_tensor_images_of_an_in_memory_volume_dataset_share_its_memory():
    samples = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8, 8), dtype=np.uint8)
    dataset = TensorArrayDataset(samples, [0, 1, 0, 1])
    images, targets = tensor_images(dataset, image_size=8)
    assert images.shape == (4, 1, 8, 8, 8) and images.data_ptr() == samples.ctypes.data
    assert targets.tolist() == [0, 1, 0, 1]
    assert tensor_images(dataset, image_size=16) is None
    volume, label = dataset[1]
    assert torch.equal(volume, torch.from_numpy(samples[1])) and label == 1


def test_a_volume_is_previewed_by_its_middle_slice():
    volume = torch.zeros(1, 5, 6, 6, dtype=torch.uint8)
    volume[0, 2] = 200
    image = preview_image(volume)
    assert image.size == (6, 6) and np.asarray(image).min() == 200


@pytest.mark.parametrize("mode", ["patches", "block"])
def test_3d_masks_hide_cubes_shared_by_all_channels(mode):
    volumes = torch.zeros(4, 2, 8, 8, 8)
    mask = MaskGenerator(mode, ratio=0.5, patch_size=4, block_size=0.5, seed=0)(volumes)
    assert mask.shape == (4, 1, 8, 8, 8)
    # patches: half of the eight 4x4x4 cubes; block: a 4x4x4 box (half of every side)
    hidden = 256.0 if mode == "patches" else 64.0
    assert torch.equal(mask.sum(dim=(1, 2, 3, 4)), torch.full((4,), hidden))
    if mode == "patches":  # whole 4x4x4 cubes: constant within each cube
        cubes = mask.view(4, 2, 4, 2, 4, 2, 4)
        assert torch.equal(cubes.amax(dim=(2, 4, 6)), cubes.amin(dim=(2, 4, 6)))


def test_masked_mse_and_patch_statistics_on_volumes():
    pred, target = torch.zeros(2, 1, 4, 4, 4), torch.ones(2, 1, 4, 4, 4)
    mask = torch.zeros(2, 1, 4, 4, 4)
    mask[0, :, :2] = 1
    assert masked_mse(pred, target, mask, reduction="none").tolist() == [1.0, 0.0]
    volumes = torch.randn(2, 3, 4, 4, 4)
    mean, std = patch_statistics(volumes, 2)
    assert mean.shape == (2, 1, 4, 4, 4)
    cube = volumes[1, :, 2:4, 0:2, 2:4]
    assert torch.allclose(mean[1, 0, 3, 1, 2], cube.mean())
    assert torch.allclose(std[1, 0, 2, 0, 3], torch.sqrt(cube.var() + 1e-6))
