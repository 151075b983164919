"""byol_loss: equal to lightly's negative cosine similarity (shifted), targets get no gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity

from sslkit.losses import byol_loss


def _pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    p = torch.randn(n, d, generator=generator, dtype=torch.float64)
    z = p + torch.randn(n, d, generator=generator, dtype=torch.float64)
    return p, z


@pytest.mark.parametrize(("n", "d"), [(8, 16), (1, 3), (64, 256)])
def test_cosine_value_and_gradient_match_lightly(n, d):
    p, z = _pair(n, d, seed=n)
    ours_p = p.clone().requires_grad_(True)
    ours = byol_loss(ours_p, z)
    ours.backward()
    ref_p = p.clone().requires_grad_(True)
    reference = 2 + 2 * NegativeCosineSimilarity()(ref_p, z)
    reference.backward()
    torch.testing.assert_close(ours, reference.detach())
    torch.testing.assert_close(ours_p.grad, ref_p.grad)


def test_targets_are_constants():
    p, z = _pair(4, 8)
    p.requires_grad_(True)
    z.requires_grad_(True)
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_mse_is_the_mse_of_normalised_vectors_and_cosine_over_dim():
    p, z = _pair(16, 32)
    mse = byol_loss(p, z, kind="mse")
    torch.testing.assert_close(mse, F.mse_loss(F.normalize(p, dim=1), F.normalize(z, dim=1)))
    torch.testing.assert_close(mse, byol_loss(p, z) / 32)


def test_range_endpoints_and_scale_invariance():
    p, z = _pair(8, 4)
    assert byol_loss(p, 3.0 * p).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(p, -p).item() == pytest.approx(4.0)
    torch.testing.assert_close(byol_loss(p, z), byol_loss(5.0 * p, 0.1 * z))


@pytest.mark.parametrize(
    ("p", "z", "kind", "message"),
    [
        (torch.randn(4, 8), torch.randn(4, 8), "l2", "kind must be one of"),
        (torch.randn(4, 8), torch.randn(4, 7), "cosine", "same shape"),
        (torch.randn(8), torch.randn(8), "cosine", "2-D"),
        (torch.randn(0, 8), torch.randn(0, 8), "mse", "non-empty"),
    ],
)
def test_invalid_inputs_raise_clear_errors(p, z, kind, message):
    with pytest.raises(ValueError, match=message):
        byol_loss(p, z, kind=kind)
