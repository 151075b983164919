"""VICReg: the loss (lightly's, with sslkit's covariance term) against the formula computed term
by term (one process and the concatenated batch of two) and the covariance term against
lightly's, and the method's settings and steps."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from lightly.loss.vicreg_loss import covariance_loss as lightly_covariance_loss

from sslkit.losses.vicreg import covariance_loss
from sslkit.methods.vicreg import VICReg
from sslkit.models import ConvNet
from tests.conftest import two_process_dir, two_process_worker

WORLD_SIZE = 2
N_PER_RANK = 5
DIM = 4
WEIGHTS = {"invariance_weight": 25.0, "variance_weight": 25.0, "covariance_weight": 1.0}
EPS = 1e-4


def reference_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    invariance_weight: float,
    variance_weight: float,
    covariance_weight: float,
    eps: float = EPS,
) -> float:
    """The VICReg formula, one entry at a time, in Python floats."""
    rows_a, rows_b = z_a.tolist(), z_b.tolist()
    n, d = len(rows_a), len(rows_a[0])
    invariance = sum(
        (a - b) ** 2
        for ra, rb in zip(rows_a, rows_b, strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    invariance /= n * d

    def variance_and_covariance(rows: list[list[float]]) -> tuple[float, float]:
        means = [sum(row[j] for row in rows) / n for j in range(d)]
        cov = [
            [sum((r[i] - means[i]) * (r[j] - means[j]) for r in rows) / (n - 1) for j in range(d)]
            for i in range(d)
        ]
        variance = sum(max(0.0, 1.0 - (cov[j][j] + eps) ** 0.5) for j in range(d)) / d
        covariance = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return variance, covariance

    v_a, c_a = variance_and_covariance(rows_a)
    v_b, c_b = variance_and_covariance(rows_b)
    return (
        invariance_weight * invariance
        + variance_weight * (v_a + v_b) / 2
        + covariance_weight * (c_a + c_b)
    )


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # Some dimensions with a std below 1 and some above, so the hinge is active for a part.
    scale = torch.tensor([0.3, 0.8, 1.5, 2.0], dtype=torch.float64)
    z_a = torch.randn(WORLD_SIZE * N_PER_RANK, DIM, generator=generator, dtype=torch.float64)
    z_a = z_a * scale
    z_a[:, 1] += 0.5 * z_a[:, 0]  # correlated dimensions
    z_b = z_a + 0.3 * torch.randn(z_a.shape, generator=generator, dtype=torch.float64)
    return z_a, z_b


def build(**kwargs) -> VICReg:
    torch.manual_seed(0)
    method = VICReg(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        **{"projection_dim": 16, "hidden_dim": 32, **kwargs},
    )
    method.log = lambda *args, **kw: None
    return method


@pytest.mark.parametrize(
    "weights",
    [WEIGHTS, {"invariance_weight": 1.0, "variance_weight": 0.0, "covariance_weight": 0.0},
     {"invariance_weight": 0.0, "variance_weight": 1.0, "covariance_weight": 0.0},
     {"invariance_weight": 0.0, "variance_weight": 0.0, "covariance_weight": 1.0}],
)  # fmt: skip
def test_loss_equals_the_formula_term_by_term(weights: dict) -> None:
    z_a, z_b = global_batch()
    loss = build(**weights).criterion(z_a, z_b)
    assert loss.item() == pytest.approx(reference_loss(z_a, z_b, **weights), rel=1e-10)


@pytest.mark.parametrize(
    ("n", "d"), [(6, 16), (16, 6), (8, 8)], ids=["gram", "covariance", "square"]
)
def test_covariance_term_equals_lightlys_value_and_gradient(n: int, d: int) -> None:
    # Both paths (the N x N Gram matrix when N < D, the D x D covariance otherwise) against
    # lightly's masked computation, and the whole loss against the formula at N < D.
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(n, d, generator=generator, dtype=torch.float64) * torch.linspace(0.2, 2, d)
    ours, theirs = (z.clone().requires_grad_(True) for _ in range(2))
    value = covariance_loss(ours)
    expected = lightly_covariance_loss(theirs)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    value.backward()
    expected.backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-9, atol=1e-12)
    z_b = z + 0.3 * torch.randn(z.shape, generator=generator, dtype=torch.float64)
    loss = build().criterion(z, z_b)
    assert loss.item() == pytest.approx(reference_loss(z, z_b, **WEIGHTS), rel=1e-10)


def test_covariance_term_refuses_other_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        covariance_loss(torch.zeros(4, 2, 3))
    with pytest.raises(ValueError, match="N >= 2"):
        build().criterion(torch.zeros(1, 3), torch.zeros(1, 3))


def test_each_term_is_what_it_says() -> None:
    criterion = build().criterion
    # Identical views with unit std and uncorrelated dimensions: every term is (almost) zero.
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    z = z * (3 / 4) ** 0.5  # unbiased variance 1
    assert criterion(z, z).item() == pytest.approx(0.0, abs=1e-3)
    # A collapsed view costs the variance weight times (1 - sqrt(eps)) / 2 over both views.
    constant = torch.zeros(4, 2, dtype=torch.float64)
    only_variance = build(invariance_weight=0.0, covariance_weight=0.0).criterion
    assert only_variance(constant, constant).item() == pytest.approx(25.0 * (1 - EPS**0.5))


def test_method_uses_the_paper_weights_by_default() -> None:
    criterion = build().criterion
    assert (criterion.lambda_param, criterion.mu_param, criterion.nu_param) == (25.0, 25.0, 1.0)
    assert criterion.gather_distributed


# ------------------------------------------------------------------------- two processes


@two_process_worker
def _worker(process_rank: int, out_dir: Path) -> None:
    local = slice(process_rank * N_PER_RANK, (process_rank + 1) * N_PER_RANK)
    z_a, z_b = (t[local].clone().requires_grad_(True) for t in global_batch())
    loss = build().criterion(z_a, z_b)
    loss.backward()
    torch.save(
        {"loss": loss.detach(), "grad_a": z_a.grad, "grad_b": z_b.grad},
        out_dir / f"rank{process_rank}.pt",
    )


@pytest.fixture(scope="module")
def ranks(two_process_runs: Path) -> list[dict]:
    out_dir = two_process_dir(two_process_runs, _worker)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


def test_mean_of_process_losses_is_the_loss_of_the_concatenated_batch(ranks) -> None:
    # The variance and covariance span the gathered batch on every process; the invariance
    # term is each process's mean over its own pairs, whose mean over processes is the global one.
    z_a, z_b = global_batch()
    mean = torch.stack([r["loss"] for r in ranks]).mean()
    assert mean.item() == pytest.approx(reference_loss(z_a, z_b, **WEIGHTS), rel=1e-10)
    local = [reference_loss(z_a[s], z_b[s], **WEIGHTS) for s in (slice(0, 5), slice(5, 10))]
    assert all(abs(r["loss"].item() - own) > 1e-3 for r, own in zip(ranks, local, strict=True))


def test_averaged_gradients_equal_the_single_process_ones(ranks) -> None:
    # A process's rows receive W * dL/dz (its own invariance term is W times its share of the
    # global mean; the gathered variance and covariance send back the gradients of all W
    # copies), so DDP's average over the processes gives dL/dz of one process.
    z_a, z_b = (t.clone().requires_grad_(True) for t in global_batch())
    build().criterion(z_a, z_b).backward()
    for r, result in enumerate(ranks):
        local = slice(r * N_PER_RANK, (r + 1) * N_PER_RANK)
        torch.testing.assert_close(result["grad_a"] / WORLD_SIZE, z_a.grad[local])
        torch.testing.assert_close(result["grad_b"] / WORLD_SIZE, z_b.grad[local])


# ------------------------------------------------------------------------------ the method


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"invariance_weight": -1.0}, "invariance_weight"),
        ({"variance_weight": -1.0}, "variance_weight"),
        ({"covariance_weight": -0.5}, "covariance_weight"),
        ({"invariance_weight": 0.0, "variance_weight": 0.0, "covariance_weight": 0.0}, "all 0"),
        ({"num_layers": 1}, "num_layers"),
        ({"projection_dim": 0}, "projection_dim"),
        ({"eps": 0.0}, "eps"),
    ],
)
def test_bad_settings_give_clear_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build(**kwargs)


def test_training_step_needs_two_views_and_two_images() -> None:
    method = build()
    with pytest.raises(ValueError, match="2 augmented view"):
        method.training_step(([torch.rand(8, 3, 8, 8)], torch.zeros(8, dtype=torch.long)), 0)
    one = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="at least 2 images"):
        method.training_step(([one, one], torch.zeros(1, dtype=torch.long)), 0)


def test_expander_has_the_configured_layers() -> None:
    linear = [m for m in build(num_layers=4).projector.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (8, 32),
        (32, 32),
        (32, 32),
        (32, 16),
    ]


def test_training_step_is_the_loss_of_the_projections_of_both_views() -> None:
    method = build()
    views = [torch.rand(8, 3, 8, 8), torch.rand(8, 3, 8, 8)]
    loss = method.training_step((views, torch.full((8,), -1)), 0)
    z_a, z_b = method.projector(method.backbone(torch.cat(views))).chunk(2)
    expected = reference_loss(z_a.detach().double(), z_b.detach().double(), **WEIGHTS)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_steps_on_a_fixed_batch_lower_the_loss() -> None:
    method = build()
    images = torch.rand(16, 3, 8, 8)
    views = [images, images.flip(-1)]
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    losses = []
    for step in range(15):
        optimizer.zero_grad()
        loss = method.training_step((views, torch.full((16,), -1)), step)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
