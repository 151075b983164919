"""View pipelines: shapes and channels for RGB and grayscale input, randomness, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image, ImageOps

from sslkit.augment import byol_views, eval_transform, no_views, simclr_views
from tests.conftest import compose_config

RGB_STATS = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "in_channels": 3}
GRAY_STATS = {"mean": (0.3,), "std": (0.35,), "in_channels": 1}


def _image(mode: str, size: int = 28, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


@pytest.mark.parametrize(
    ("mode", "stats", "channels"),
    [("RGB", RGB_STATS, 3), ("L", GRAY_STATS, 1), ("RGBA", RGB_STATS, 3), ("RGB", GRAY_STATS, 1)],
)
def test_simclr_views_shapes_and_channels(mode, stats, channels):
    # Strong settings so jitter, grayscale and blur all run on every view.
    views = simclr_views(
        image_size=24,
        num_views=3,
        cj_prob=1.0,
        random_gray_scale=1.0,
        gaussian_blur=1.0,
        **stats,
    )
    torch.manual_seed(0)
    for _ in range(5):
        out = views(_image(mode))
        assert len(out) == 3
        for view in out:
            assert view.shape == (channels, 24, 24)
            assert view.dtype == torch.float32
            assert torch.isfinite(view).all()


@pytest.mark.parametrize(("mode", "stats"), [("RGB", RGB_STATS), ("L", GRAY_STATS)])
def test_simclr_views_differ_from_each_other(mode, stats):
    views = simclr_views(image_size=28, **stats)
    torch.manual_seed(0)
    a, b = views(_image(mode))
    assert not torch.equal(a, b)


def test_no_views_are_the_normalised_image():
    image = Image.new("RGB", (16, 16), (255, 0, 51))
    views = no_views(image_size=16, num_views=2, **RGB_STATS)
    a, b = views(image)
    assert torch.equal(a, b)
    expected = (torch.tensor([1.0, 0.0, 0.2]) - torch.tensor(RGB_STATS["mean"])) / torch.tensor(
        RGB_STATS["std"]
    )
    torch.testing.assert_close(a[:, 5, 5], expected)


def test_eval_transform_resizes_and_centre_crops():
    image = _image("RGB", size=40).crop((0, 0, 40, 20))
    out = eval_transform(image_size=16, **RGB_STATS)(image)
    assert out.shape == (3, 16, 16)


def test_statistics_must_match_channels():
    with pytest.raises(ValueError, match="one entry per channel"):
        simclr_views(image_size=32, mean=(0.5,), std=(0.5,), in_channels=3)
    with pytest.raises(ValueError, match="in_channels=2"):
        no_views(image_size=32, mean=(0.5, 0.5), std=(0.5, 0.5), in_channels=2)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("num_views", 0, "num_views"), ("min_scale", 0.0, "min_scale"), ("cj_prob", 1.5, "cj_prob")],
)
def test_simclr_views_rejects_bad_settings(key, value, message):
    with pytest.raises(ValueError, match=message):
        simclr_views(image_size=32, **RGB_STATS, **{key: value})


@pytest.mark.parametrize(("name", "num_views"), [("simclr", 2), ("byol", 2), ("none", 1)])
def test_configs_are_partials_completed_by_the_dataset(name, num_views):
    factory = instantiate(compose_config("train", [f"augment={name}"]).augment)
    views = factory(image_size=20, **GRAY_STATS)
    out = views(_image("L"))
    assert len(out) == num_views
    assert all(view.shape == (1, 20, 20) for view in out)


@pytest.mark.parametrize(
    ("mode", "stats", "channels"), [("RGB", RGB_STATS, 3), ("L", GRAY_STATS, 1)]
)
def test_byol_views_shapes_and_channels(mode, stats, channels):
    views = byol_views(image_size=24, gaussian_blur=(1.0, 1.0), solarization=(1.0, 1.0), **stats)
    torch.manual_seed(0)
    for _ in range(5):
        out = views(_image(mode))
        assert [view.shape for view in out] == [(channels, 24, 24)] * 2
        assert all(torch.isfinite(view).all() for view in out)


def test_byol_views_blur_and_solarise_each_view_with_its_own_probability():
    # Crop, flip and jitter off: the first view is only blurred, the second only solarised.
    image = _image("L", size=20)
    views = byol_views(
        image_size=20,
        min_scale=1.0,
        cj_prob=0.0,
        random_gray_scale=0.0,
        hf_prob=0.0,
        gaussian_blur=(1.0, 0.0),
        sigmas=(1.5, 2.0),  # a blur strong enough to see on every draw
        solarization=(0.0, 1.0),
        **GRAY_STATS,
    )
    blurred, solarised = views(image)

    def normalised(img: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(img)).float() / 255
        return ((pixels - GRAY_STATS["mean"][0]) / GRAY_STATS["std"][0]).unsqueeze(0)

    torch.testing.assert_close(solarised, normalised(ImageOps.solarize(image, 128)))
    plain = normalised(image)
    assert blurred.diff(dim=-1).abs().mean() < 0.5 * plain.diff(dim=-1).abs().mean()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("gaussian_blur", (1.0,), "one probability per view"),
        ("solarization", (0.0, 1.2), r"solarization\[1\]"),
        ("min_scale", 1.5, "min_scale"),
    ],
)
def test_byol_views_rejects_bad_settings(key, value, message):
    with pytest.raises(ValueError, match=message):
        byol_views(image_size=32, **RGB_STATS, **{key: value})
