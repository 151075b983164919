"""Multi-crop views: global crops at the input size first, then local crops of their own size,
each with its own area range, alike on the batched and the PIL path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.augment import multicrop_views
from tests.conftest import compose_config

RGB = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "in_channels": 3}


def test_global_crops_come_first_then_the_local_ones_on_both_paths() -> None:
    views = multicrop_views(image_size=28, **RGB, global_crops=2, local_crops=3, local_size=14)
    assert views.sizes == [28, 28, 14, 14, 14]
    images = torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8)
    batched = views.batch(images, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in batched] == [(4, 3, 28, 28)] * 2 + [(4, 3, 14, 14)] * 3
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    pil = views(Image.fromarray(pixels))
    assert [tuple(v.shape) for v in pil] == [(3, 28, 28)] * 2 + [(3, 14, 14)] * 3


def test_each_kind_of_crop_draws_its_area_from_its_own_range() -> None:
    views = multicrop_views(
        image_size=28, **RGB, local_crops=1, global_scale=(0.4, 1.0), local_scale=(0.05, 0.3)
    )
    first, second, local = views.specs
    assert (first.min_scale, first.max_scale) == (0.4, 1.0) == (second.min_scale, second.max_scale)
    assert (local.min_scale, local.max_scale) == (0.05, 0.3)
    assert local.size == 12  # DINO's 96 of 224 pixels, at 28
    # DINO's blur and solarisation: 1.0 / 0.1 / 0.5 and 0 / 0.2 / 0.
    assert [s.blur_prob for s in views.specs] == [1.0, 0.1, 0.5]
    assert [s.solarize_prob for s in views.specs] == [0.0, 0.2, 0.0]
    # The PIL path crops from the same range: lightly's crop has its maximum set.
    crop = [t for t in views._pil[2].transforms[1].transform.transforms if hasattr(t, "scale")]
    assert crop[0].scale == (0.05, 0.3) and crop[0].size in ([12, 12], (12, 12))


def test_a_local_crop_of_the_pil_path_and_the_batched_path_agree_on_average() -> None:
    """One distribution on both paths: the mean local crop of an image with a bright bar (the
    crops' area range decides how much of the bar the average shows)."""
    pixels = np.zeros((28, 28, 3), dtype=np.uint8)
    pixels[4:24, 12:16] = 255
    views = multicrop_views(
        image_size=28, **RGB, global_crops=1, local_crops=1, local_size=12,
        cj_prob=0.0, random_gray_scale=0.0, gaussian_blur=(0, 0, 0), solarization=(0, 0, 0),
    )  # fmt: skip
    torch.manual_seed(0)
    pil = torch.stack([views(Image.fromarray(pixels))[1] for _ in range(1500)])
    batch = torch.from_numpy(pixels).permute(2, 0, 1).expand(1500, -1, -1, -1).contiguous()
    batched = views.batch(batch, torch.Generator().manual_seed(0))[1]
    torch.testing.assert_close(batched.mean(0), pil.mean(0), atol=0.2, rtol=0)
    # A local crop is mostly zoomed in: its average is far from the whole image's.
    whole = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert (
        batched.mean(0) - torch.nn.functional.interpolate(whole[None], 12)[0]
    ).abs().mean() > 0.1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"global_crops": 0}, "global_crops >= 1"),
        ({"local_crops": -1}, "local_crops >= 0"),
        ({"local_size": 40}, "local_size"),
        ({"local_scale": (0.5, 0.2)}, "local_scale"),
        ({"global_scale": (0.0, 1.0)}, "global_scale"),
        ({"gaussian_blur": (1.0, 0.1)}, "gaussian_blur holds three"),
    ],
)
def test_bad_settings_stop_with_a_message(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        multicrop_views(image_size=28, **RGB, **settings)


def test_the_option_composes_with_its_keys() -> None:
    cfg = compose_config(
        "train", ["augment=multicrop", "augment.local_crops=4", "augment.local_size=14"]
    )
    assert cfg.augment.local_crops == 4 and cfg.augment.global_scale == [0.4, 1.0]
    assert "min_scale" not in cfg.augment
