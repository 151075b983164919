"""MaskGenerator: exact counts and shapes, reproducible for a seed, different across images."""

from __future__ import annotations

import pytest
import torch

from sslkit.augment import MaskGenerator


def _images(batch: int = 8, size: int = 32, channels: int = 3) -> torch.Tensor:
    return torch.zeros(batch, channels, size, size)


@pytest.mark.parametrize(
    ("size", "patch_size", "ratio"),
    [(16, 4, 0.6), (28, 4, 0.75), (28, 7, 0.5), (32, 8, 0.6), (96, 16, 0.75)],
)
def test_patches_hide_exactly_round_ratio_of_patches_in_every_image(size, patch_size, ratio):
    images = _images(6, size)
    mask = MaskGenerator("patches", ratio=ratio, patch_size=patch_size, seed=0)(images)
    assert mask.shape == (6, 1, size, size) and mask.dtype == images.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    grid = size // patch_size
    patches = mask.view(6, grid, patch_size, grid, patch_size).transpose(2, 3)
    patches = patches.reshape(6, grid * grid, patch_size**2)
    # Whole patches only: every patch is entirely hidden or entirely visible.
    assert torch.equal(patches.amin(dim=-1), patches.amax(dim=-1))
    hidden = patches[..., 0].sum(dim=1)
    assert hidden.tolist() == [round(ratio * grid * grid)] * 6


def test_patch_masks_differ_between_images_and_between_calls():
    generator = MaskGenerator("patches", ratio=0.5, patch_size=4, seed=0)
    first = generator(_images(8, 16))
    second = generator(_images(8, 16))
    assert len({tuple(m.flatten().tolist()) for m in first}) == 8
    assert not torch.equal(first, second)


@pytest.mark.parametrize("mode", ["patches", "block"])
def test_same_seed_gives_same_mask_sequence(mode):
    a, b = MaskGenerator(mode, seed=3), MaskGenerator(mode, seed=3)
    for _ in range(3):
        assert torch.equal(a(_images()), b(_images()))
    assert not torch.equal(
        MaskGenerator(mode, seed=4)(_images()), MaskGenerator(mode, seed=3)(_images())
    )


def test_with_seed_restarts_the_sequence_with_the_same_settings():
    generator = MaskGenerator("block", block_size=0.25, seed=1)
    generator(_images())
    replay = generator.with_seed(1)
    assert (replay.mode, replay.block_size, replay.seed) == ("block", 0.25, 1)
    assert torch.equal(
        replay(_images()), MaskGenerator("block", block_size=0.25, seed=1)(_images())
    )


def test_default_seed_follows_torch_seed_and_masks_leave_global_rng_alone():
    torch.manual_seed(5)
    a = MaskGenerator()
    torch.manual_seed(5)
    b = MaskGenerator()
    assert a.seed == b.seed
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a(_images())
    assert torch.equal(torch.rand(3), expected)


def test_center_block_is_the_central_square():
    mask = MaskGenerator("block", block_size=0.5, block_position="center")(_images(2, 28, 1))
    expected = torch.zeros(2, 1, 28, 28)
    expected[:, :, 7:21, 7:21] = 1
    assert torch.equal(mask, expected)


def test_random_blocks_are_one_rectangle_each_at_different_places():
    mask = MaskGenerator("block", block_size=0.25, block_position="random", seed=0)(_images(16, 32))
    corners = set()
    for image in mask[:, 0]:
        rows, cols = image.nonzero(as_tuple=True)
        assert image.sum() == 8 * 8
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        corners.add((rows.min().item(), cols.min().item()))
    assert len(corners) > 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mode", ["patches", "block"])
def test_masks_are_made_on_the_batch_device_and_match_cpu(mode):
    images = _images().cuda()
    on_gpu = MaskGenerator(mode, seed=0)(images)
    assert on_gpu.device == images.device
    assert torch.equal(on_gpu.cpu(), MaskGenerator(mode, seed=0)(images.cpu()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "holes"}, "mask mode must be one of"),
        ({"ratio": 0.0}, "mask ratio"),
        ({"block_size": 1.5}, "block_size"),
        ({"block_position": "corner"}, "block_position"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskGenerator(**kwargs)


def test_patch_size_that_does_not_divide_the_image_is_refused():
    with pytest.raises(ValueError, match="patch_size that divides"):
        MaskGenerator("patches", patch_size=8)(_images(2, 28))


def test_ratio_that_hides_no_patch_is_refused():
    with pytest.raises(ValueError, match="hides none"):
        MaskGenerator("patches", ratio=0.1, patch_size=8)(_images(2, 16))
