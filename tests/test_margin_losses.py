"""The pairwise and triplet margin losses against hand-computed values and torch's reference."""

import math

import pytest
import torch

from sslkit.losses import pairwise_contrastive, triplet


def test_pairwise_matches_formula_on_hand_computed_pairs():
    # Pair 0: positive at distance 5 (3-4-5) -> 0.5 * 25 = 12.5.
    # Pair 1: negative at distance 1 with margin 2 -> 0.5 * (2 - 1)^2 = 0.5.
    # Pair 2: negative at distance 5 beyond the margin -> 0.
    # Pair 3: positive at distance 0 -> 0.
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, -1.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 2.0], [3.0, 4.0], [2.0, -1.0]])
    same = torch.tensor([1, 0, 0, 1])
    loss = pairwise_contrastive(a, b, same, margin=2.0)
    assert loss.item() == pytest.approx((12.5 + 0.5 + 0.0 + 0.0) / 4)


def test_pairwise_accepts_bool_flags_and_matches_a_loop():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    b = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    same = torch.rand(12, generator=generator) < 0.5
    margin = 3.0
    terms = []
    for x, y, s in zip(a.tolist(), b.tolist(), same.tolist(), strict=True):
        d = math.dist(x, y)
        terms.append(0.5 * d * d if s else 0.5 * max(0.0, margin - d) ** 2)
    expected = sum(terms) / len(terms)
    assert pairwise_contrastive(a, b, same, margin).item() == pytest.approx(expected, rel=1e-12)


def test_pairwise_gradient_pulls_positives_and_pushes_close_negatives():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    b = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    pairwise_contrastive(a, b, torch.tensor([1, 0]), margin=1.0).backward()
    assert a.grad[0, 0] < 0  # descending moves a[0] towards b[0] (+x)
    assert a.grad[1, 0] > 0  # descending moves a[1] away from b[1] (-x)


def test_pairwise_positive_margin_matches_a_loop_and_stops_pulling_close_positives():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(16, 4, generator=generator, dtype=torch.float64)
    b = a + 0.4 * torch.randn(16, 4, generator=generator, dtype=torch.float64)
    same = torch.arange(16) % 2 == 0
    margin, positive_margin = 2.0, 0.6
    terms = []
    for x, y, s in zip(a.tolist(), b.tolist(), same.tolist(), strict=True):
        d = math.dist(x, y)
        terms.append(
            0.5 * max(0.0, d - positive_margin) ** 2 if s else 0.5 * max(0.0, margin - d) ** 2
        )
    expected = sum(terms) / len(terms)
    got = pairwise_contrastive(a, b, same, margin, positive_margin)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # The margin matters on these pairs: some positives lie inside it, some outside.
    distance = (a - b).norm(dim=1)[same]
    assert (distance < positive_margin).any() and (distance > positive_margin).any()
    # A positive pair closer than the positive margin costs nothing and gets no gradient.
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    y = torch.tensor([[0.3, 0.0], [0.9, 0.0]])
    loss = pairwise_contrastive(x, y, torch.tensor([1, 1]), margin=1.5, positive_margin=0.5)
    loss.backward()
    assert loss.item() == pytest.approx(0.5 * 0.4**2 / 2)
    assert x.grad[0].abs().sum() == 0 and x.grad[1, 0] < 0


@pytest.mark.parametrize(("margin", "n", "d"), [(0.2, 16, 8), (1.0, 5, 3), (0.05, 7, 32)])
def test_triplet_value_and_gradients_match_torch(margin, n, d):
    generator = torch.Generator().manual_seed(n)
    inputs = [torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(3)]
    ours = [x.clone().requires_grad_(True) for x in inputs]
    reference = [x.clone().requires_grad_(True) for x in inputs]
    loss = triplet(*ours, margin=margin)
    expected = torch.nn.TripletMarginLoss(margin=margin, p=2)(*reference)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-5, rtol=1e-4)


def test_triplet_hand_computed():
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    negative = torch.tensor([[0.0, 1.1], [0.0, 3.0]])
    # 1 - 1.1 + 0.5 = 0.4 ; 1 - 3 + 0.5 < 0 -> 0
    assert triplet(anchor, positive, negative, margin=0.5).item() == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: triplet(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2, 2), 0.2),
            "one shape",
        ),
        (lambda: triplet(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, 2), 0.2), "at least"),
        (lambda: triplet(*[torch.zeros(2, 2)] * 3, margin=-1.0), "margin"),
        (
            lambda: pairwise_contrastive(torch.zeros(3), torch.zeros(3), torch.ones(3), 1.0),
            "(N, D)",
        ),
        (
            lambda: pairwise_contrastive(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(2), 1.0),
            "one `same` flag",
        ),
        (
            lambda: pairwise_contrastive(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(3), 0.0),
            "margin",
        ),
        (
            lambda: pairwise_contrastive(
                torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(3), 1.0, 1.0
            ),
            "positive_margin",
        ),
    ],
)
def test_bad_inputs_fail_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
