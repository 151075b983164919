import math

import pytest
import torch
from lightly.loss import NTXentLoss

from sslkit.losses import info_nce


def _views(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=generator, dtype=torch.float64)
    z_b = z_a + 0.5 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return z_a, z_b


def _value_and_grads(loss_fn, z_a, z_b):
    z_a = z_a.clone().requires_grad_(True)
    z_b = z_b.clone().requires_grad_(True)
    loss = loss_fn(z_a, z_b)
    loss.backward()
    return loss.detach(), z_a.grad, z_b.grad


@pytest.mark.parametrize(
    ("temperature", "n", "d"),
    [(0.5, 8, 16), (0.1, 32, 8), (1.0, 3, 5), (0.07, 64, 128), (2.0, 2, 4)],
)
def test_value_and_gradients_match_lightly_ntxent(temperature, n, d):
    z_a, z_b = _views(n, d, seed=n)
    ours = _value_and_grads(lambda a, b: info_nce(a, b, temperature), z_a, z_b)
    reference = _value_and_grads(NTXentLoss(temperature=temperature), z_a, z_b)
    for got, expected in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)


def test_value_matches_explicit_loop_over_anchors():
    z_a, z_b = _views(3, 4, seed=7)
    temperature = 0.3
    rows = torch.cat([z_a, z_b]).tolist()
    views = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in rows]
    n = len(z_a)

    def similarity(i: int, j: int) -> float:
        return sum(x * y for x, y in zip(views[i], views[j], strict=True)) / temperature

    terms = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(similarity(i, j)) for j in range(2 * n) if j != i)
        terms.append(-math.log(math.exp(similarity(i, positive)) / denominator))
    expected = sum(terms) / len(terms)

    assert info_nce(z_a, z_b, temperature).item() == pytest.approx(expected, rel=1e-12)


def test_identical_embeddings_give_log_of_candidate_count():
    # Every similarity is equal, so each anchor's softmax is uniform over its 2N-1 candidates.
    n = 5
    z = torch.ones(n, 3, dtype=torch.float64)
    assert info_nce(z, z, 0.2).item() == pytest.approx(math.log(2 * n - 1))


def test_orthogonal_samples_with_aligned_views_have_closed_form_loss():
    # Positive similarity 1/T, all 2N-2 negatives orthogonal (similarity 0).
    n, temperature = 4, 0.5
    z = torch.eye(n, dtype=torch.float64)
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2 * n - 2))
    assert info_nce(z, z, temperature).item() == pytest.approx(expected)


def test_swapping_views_gives_the_same_loss():
    z_a, z_b = _views(16, 8)
    torch.testing.assert_close(info_nce(z_a, z_b, 0.5), info_nce(z_b, z_a, 0.5))


def test_reordering_samples_consistently_gives_the_same_loss():
    z_a, z_b = _views(16, 8)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(info_nce(z_a, z_b, 0.5), info_nce(z_a[order], z_b[order], 0.5))


def test_scaling_embeddings_does_not_change_the_loss():
    z_a, z_b = _views(16, 8)
    scales = torch.linspace(0.01, 100.0, 16, dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(info_nce(z_a, z_b, 0.5), info_nce(3.0 * z_a, scales * z_b, 0.5))


def test_mismatched_pairs_give_a_higher_loss_than_matched_pairs():
    z_a, z_b = _views(16, 8)
    shuffled = z_b.roll(1, dims=0)
    assert info_nce(z_a, z_b, 0.5) < info_nce(z_a, shuffled, 0.5)


def test_lower_temperature_sharpens_the_loss_of_well_separated_pairs():
    z = torch.eye(6, dtype=torch.float64)
    assert info_nce(z, z, 0.1) < info_nce(z, z, 1.0)


def test_without_process_group_gathering_is_a_no_op():
    z_a, z_b = _views(8, 4)
    torch.testing.assert_close(
        info_nce(z_a, z_b, 0.5, gather_distributed=True),
        info_nce(z_a, z_b, 0.5, gather_distributed=False),
    )


def test_gradients_pass_numerical_gradcheck():
    z_a, z_b = _views(4, 3)
    z_a.requires_grad_(True)
    z_b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, 0.2), (z_a, z_b))


def test_float32_input_gives_float32_scalar():
    z_a, z_b = (t.float() for t in _views(8, 4))
    loss = info_nce(z_a, z_b, 0.5)
    assert loss.shape == ()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("z_a", "z_b", "temperature", "message"),
    [
        (torch.randn(4, 8), torch.randn(5, 8), 0.5, "same shape"),
        (torch.randn(4, 8), torch.randn(4, 7), 0.5, "same shape"),
        (torch.randn(4, 8, 2), torch.randn(4, 8, 2), 0.5, "2-D"),
        (torch.randn(8), torch.randn(8), 0.5, "2-D"),
        (torch.randn(0, 8), torch.randn(0, 8), 0.5, "empty batch"),
        (torch.randn(4, 8), torch.randn(4, 8), 0.0, "temperature must be > 0"),
        (torch.randn(4, 8), torch.randn(4, 8), -0.1, "temperature must be > 0"),
        (torch.randn(4, 8), torch.randn(4, 8), float("nan"), "temperature must be > 0"),
    ],
)
def test_invalid_inputs_raise_clear_errors(z_a, z_b, temperature, message):
    with pytest.raises(ValueError, match=message):
        info_nce(z_a, z_b, temperature)
