"""Histograms of oriented gradients, the colour-blind targets of masked inpainting (MaskFeat)."""

from __future__ import annotations

import math

import pytest
import torch

from sslkit.losses.hog import cell_histograms, hog, oriented_gradients


def _edge(angle_deg: float, size: int = 16, dark_side: float = 0.0, bright: float = 1.0):
    """One straight edge through the centre whose gradient points at ``angle_deg``."""
    ys, xs = torch.meshgrid(
        torch.arange(size) - size / 2 + 0.5, torch.arange(size) - size / 2 + 0.5, indexing="ij"
    )
    angle = math.radians(angle_deg)
    side = xs * math.cos(angle) + ys * math.sin(angle) > 0
    image = torch.where(side, bright, dark_side).float()
    return image.expand(1, 3, size, size).clone()


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 135.0])
def test_an_edge_falls_into_the_bin_of_its_gradient_orientation(angle):
    bins = 4  # centres at 22.5, 67.5, 112.5, 157.5 degrees: each test angle sits between two
    histogram = oriented_gradients(_edge(angle), bins).sum(dim=(0, 2, 3))
    centres = (torch.arange(bins) + 0.5) * 180 / bins
    offset = (centres - angle).abs()
    nearest = torch.argsort(torch.minimum(offset, 180 - offset))[:2]
    # The magnitude is shared linearly between the two nearest centres (equally: each is 22.5 away).
    assert histogram[nearest].sum().item() == pytest.approx(histogram.sum().item(), rel=1e-2)
    assert histogram[nearest[0]].item() == pytest.approx(histogram[nearest[1]].item(), rel=0.05)


def test_a_gradient_on_a_bin_centre_lands_there_and_the_total_is_its_magnitude():
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    angle = math.radians(10.0)  # bin 0 of 9 is centred on 10 degrees
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)).expand(1, 3, 16, 16)
    inside = oriented_gradients(ramp, bins=9)[0, :, 1:-1, 1:-1]  # borders are replicated
    # Sobel of a unit-slope ramp: gradient magnitude 8 at every inner pixel, all in bin 0.
    assert torch.allclose(inside[0], torch.full((14, 14), 8.0), atol=1e-4)
    assert inside[1:].abs().max().item() < 1e-4


def test_targets_ignore_colour_polarity_and_a_global_contrast_change():
    reference = hog(_edge(30.0), cell_size=4)
    assert torch.allclose(
        hog(_edge(30.0, dark_side=1.0, bright=0.0), cell_size=4), reference, atol=1e-5
    )
    assert torch.allclose(hog(3.0 * _edge(30.0) + 7.0, cell_size=4), reference, atol=1e-5)
    red, blue = torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    red[:, 0], blue[:, 2] = _edge(30.0)[:, 0], _edge(30.0)[:, 0]
    assert torch.allclose(hog(red, 4), hog(blue, 4), atol=1e-5)


def test_flat_cells_stay_near_zero_beside_an_edge():
    image = _edge(0.0, size=16) + 0.01 * torch.randn(
        1, 3, 16, 16, generator=torch.Generator().manual_seed(0)
    )
    cells = hog(image, cell_size=4).norm(dim=1)[0]  # (4, 4) cell norms
    assert cells.shape == (4, 4)
    assert cells.mean().item() == pytest.approx(1.0, rel=1e-4)
    assert cells[:, [0, 3]].max() < 0.1 * cells[:, [1, 2]].min()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="cannot be cut into 5x5 cells"):
        cell_histograms(torch.zeros(1, 9, 16, 16), 5)
    with pytest.raises(ValueError, match=r"expects images \(B, C, H, W\)"):
        oriented_gradients(torch.zeros(1, 1, 4, 8, 8))
    with pytest.raises(ValueError, match="at least 2 orientation bins"):
        oriented_gradients(torch.zeros(1, 1, 8, 8), bins=1)
