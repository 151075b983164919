"""Batched views: the same distributions as the PIL path, the same operations as torchvision,
and the same views for the same seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from scipy import stats
from torchvision import transforms as T

from sslkit.augment import byol_views, simclr_views
from sslkit.augment.batched import (
    adjust_hue,
    color_jitter,
    gaussian_blur,
    render_view,
    sample_crops,
    sample_view,
)

N = 20_000
RGB = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "in_channels": 3}
GRAY = {"mean": (0.5,), "std": (0.25,), "in_channels": 1}


def _spec(**kwargs):
    return simclr_views(image_size=28, **RGB, **kwargs).specs[0]


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(28, 28, (0.08, 1.0)), (32, 48, (0.3, 1.0)), (28, 28, (0.05, 0.4))],  # the last: local crops
)
def test_crop_area_and_aspect_ratio_follow_torchvision(height, width, scale):
    torch.manual_seed(0)
    ours = sample_crops(N, height, width, scale)
    image = torch.zeros(1, height, width)
    theirs = torch.tensor(
        [T.RandomResizedCrop.get_params(image, scale, (3 / 4, 4 / 3)) for _ in range(N)],
        dtype=torch.float32,
    )
    for boxes in (ours, theirs):
        top, left, h, w = boxes.unbind(1)
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= height).all() and (left + w <= width).all()
    for statistic in (
        lambda b: b[:, 2] * b[:, 3] / (height * width),  # area fraction
        lambda b: (b[:, 3] / b[:, 2]).log(),  # aspect ratio
        lambda b: (b[:, 0] + b[:, 2] / 2) / height,  # vertical centre
        lambda b: (b[:, 1] + b[:, 3] / 2) / width,  # horizontal centre
    ):
        result = stats.ks_2samp(statistic(ours).numpy(), statistic(theirs).numpy())
        assert result.statistic < 0.03, result


def test_flip_rotation_grayscale_blur_and_solarisation_rates():
    spec = byol_views(
        image_size=28, **RGB, hf_prob=0.5, vf_prob=0.2, rr_prob=0.3, random_gray_scale=0.2,
        gaussian_blur=(0.4, 0.1), solarization=(0.0, 0.25),
    ).specs[1]  # fmt: skip
    params = sample_view(spec, N, 28, 28, torch.Generator().manual_seed(1))
    tolerance = 4 * math.sqrt(0.25 / N)
    for observed, expected in (
        (params.hflip, 0.5),
        (params.vflip, 0.2),
        (params.angle != 0, 0.3),
        (params.jitter, 0.8),
        (params.gray, 0.2),
        (params.sigma > 0, 0.1),
        (params.solarize, 0.25),
    ):
        assert abs(observed.float().mean().item() - expected) < tolerance
    assert set(params.angle.unique().tolist()) == {0.0, 90.0}  # rr_degrees=None: quarter turns
    sigma = params.sigma[params.sigma > 0]
    assert stats.kstest(sigma.numpy(), stats.uniform(0.1, 1.9).cdf).statistic < 0.05


def test_jitter_factors_and_order_follow_torchvision():
    spec = _spec(cj_strength=0.5)  # brightness, contrast, saturation 0.4, hue 0.1
    params = sample_view(spec, N, 28, 28, torch.Generator().manual_seed(2))
    jitter = T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    theirs = [
        T.ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
        for _ in range(5000)
    ]
    for column in range(4):
        reference = np.array([draw[column + 1] for draw in theirs])
        assert stats.ks_2samp(params.factors[:, column].numpy(), reference).statistic < 0.04
    assert params.factors[:, :3].min() >= 0.6 and params.factors[:, :3].max() <= 1.4
    assert params.factors[:, 3].abs().max() <= 0.1
    # Every order of the four operations is equally likely, as torchvision's randperm(4).
    orders = torch.unique(params.order, dim=0, return_counts=True)[1]
    assert len(orders) == 24 and orders.min() > 0.8 * N / 24


def test_geometry_matches_torchvision_for_fixed_parameters():
    images = torch.rand(2, 3, 28, 28)
    params = sample_view(_spec(min_scale=1.0, cj_prob=0.0, random_gray_scale=0.0), 2, 28, 28)
    params.boxes = torch.tensor([[3.0, 5.0, 14.0, 10.0], [0.0, 0.0, 28.0, 28.0]])
    params.hflip = torch.tensor([True, False])
    params.angle = torch.tensor([0.0, 90.0])
    out = render_view(images, params, 28)
    crop = TF.horizontal_flip(TF.resized_crop(images[:1], 3, 5, 14, 10, [28, 28]))
    # Away from the crop's border, where torchvision interpolates inside the crop only.
    torch.testing.assert_close(out[:1, :, 2:-2, 2:-2], crop[..., 2:-2, 2:-2])
    torch.testing.assert_close(out[1:], TF.rotate(images[1:], 90.0))


def test_arbitrary_rotations_fill_the_corners_with_black():
    images = torch.ones(1, 1, 28, 28)
    params = sample_view(_spec(min_scale=1.0, cj_prob=0.0, hf_prob=0.0), 1, 28, 28)
    params.boxes = torch.tensor([[0.0, 0.0, 28.0, 28.0]])
    params.angle = torch.tensor([45.0])
    out = render_view(images, params, 28)
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 14, 14] == 1


def test_jitter_applies_torchvision_operations_in_each_images_order():
    images = torch.rand(6, 3, 16, 16)
    params = sample_view(_spec(cj_prob=1.0), 6, 16, 16, torch.Generator().manual_seed(3))
    out = color_jitter(images.clone(), params)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(6):
        expected = images[i]
        for op in params.order[i].tolist():
            expected = ops[op](expected, float(params.factors[i, op]))
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=0)


def test_hue_matches_torchvision():
    images = torch.rand(5, 3, 8, 8)
    images[0] = 0.5  # gray: no hue
    images[1] = (images[1] * 3).round() / 3  # four levels: channels tie for the maximum
    images[2, 1] = images[2, 0]  # red and green tie
    shifts = torch.tensor([0.3, -0.5, -0.1, 0.25, 0.5])
    out = adjust_hue(images, shifts)
    for i, shift in enumerate(shifts.tolist()):
        torch.testing.assert_close(out[i], TF.adjust_hue(images[i], shift), atol=1e-5, rtol=0)


def test_blur_matches_a_gaussian_kernel_of_each_images_sigma():
    images = torch.rand(2, 1, 32, 32)
    out = gaussian_blur(images, torch.tensor([0.6, 1.5]))
    for i, sigma in enumerate((0.6, 1.5)):
        expected = TF.gaussian_blur(images[i], [13, 13], [sigma, sigma])
        torch.testing.assert_close(
            out[i, :, 6:-6, 6:-6], expected[:, 6:-6, 6:-6], atol=2e-4, rtol=0
        )


@pytest.mark.parametrize("stats_", [RGB, GRAY], ids=["rgb", "gray"])
def test_average_view_matches_the_pil_path(stats_):
    """Same distribution, end to end: the mean and spread of many views of one image agree.

    The PIL path rounds to uint8 after every operation, which shifts its mean by about one grey
    level (0.016 in normalised units here); the tolerances allow that and the sampling noise
    of 1,500 views, not a wrong crop scale, flip rate or jitter strength.
    """
    rng = np.random.default_rng(0)
    channels = stats_["in_channels"]
    pixels = rng.integers(0, 256, (20, 20, channels), dtype=np.uint8)
    pixels[5:15, 8:12] = 255  # structure that crops and flips move around
    views = simclr_views(image_size=20, **stats_, hf_prob=0.3, random_gray_scale=0.3)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    torch.manual_seed(0)
    pil = torch.stack([views(image)[0] for _ in range(1500)])
    batch = torch.from_numpy(pixels).permute(2, 0, 1).expand(1500, -1, -1, -1).contiguous()
    batched = views.batch(batch, torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(batched.mean(0), pil.mean(0), atol=0.15, rtol=0)
    assert abs(batched.std() - pil.std()) < 0.05 * pil.std()
    for dim in (2, 3):  # the average image is symmetric in the same way (flips)
        profile_b, profile_p = batched.mean(dim=(0, 1, dim)), pil.mean(dim=(0, 1, dim))
        torch.testing.assert_close(profile_b, profile_p, atol=0.08, rtol=0)


def test_a_seed_gives_the_same_views():
    views = byol_views(image_size=16, **RGB)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    first = views.batch(images, torch.Generator().manual_seed(5))
    again = views.batch(images, torch.Generator().manual_seed(5))
    other = views.batch(images, torch.Generator().manual_seed(6))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    torch.manual_seed(7)
    global_a = views.batch(images)
    torch.manual_seed(7)
    global_b = views.batch(images)
    assert all(torch.equal(a, b) for a, b in zip(global_a, global_b, strict=True))


@pytest.mark.parametrize("blur", [0.0, 0.5, 1.0])
def test_a_batch_turned_gray_entirely_can_be_written_in_place(blur):
    """Every image gray (a draw of probability 0.2**4 at batch 4): the later steps and the
    normalisation write into the view, so it must not share memory across its channels."""
    views = simclr_views(image_size=16, **RGB, random_gray_scale=1.0, gaussian_blur=blur,
                         solarization=0.5)  # fmt: skip
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    for view in views.batch(images, torch.Generator().manual_seed(0)):
        assert view.shape == (4, 3, 16, 16) and torch.isfinite(view).all()
        assert torch.equal(view[:, 0], view[:, 1]) and torch.equal(view[:, 1], view[:, 2])


def test_batch_checks_its_input():
    views = simclr_views(image_size=16, **RGB)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        views.batch(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="augment.backend"):
        simclr_views(image_size=16, **RGB, backend="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_views_on_the_gpu_equal_views_on_the_cpu():
    views = byol_views(image_size=32, **RGB)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    cpu = views.batch(images, torch.Generator().manual_seed(0))
    gpu = views.batch(images.cuda(), torch.Generator().manual_seed(0))
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)
