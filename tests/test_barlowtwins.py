"""Barlow Twins: the loss against its formula computed term by term (one process and the
concatenated batch of two), and the method's settings and steps."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightly.loss import BarlowTwinsLoss
from lightly.utils.lars import LARS

from sslkit.losses.barlow_twins import barlow_twins_loss
from sslkit.methods.barlowtwins import BarlowTwins
from sslkit.models import ConvNet
from sslkit.optim import warmup_cosine
from tests.conftest import two_process_dir, two_process_worker

WORLD_SIZE = 2
N_PER_RANK = 5
DIM = 4
LAMBDA = 0.3
EPS = 1e-5


def reference_loss(z_a: torch.Tensor, z_b: torch.Tensor, lam: float, eps: float = EPS) -> float:
    """The paper's formula, one entry at a time, in Python floats."""
    rows_a, rows_b = z_a.tolist(), z_b.tolist()
    n, d = len(rows_a), len(rows_a[0])

    def standardised(rows: list[list[float]]) -> list[list[float]]:
        columns = []
        for j in range(d):
            column = [row[j] for row in rows]
            mean = sum(column) / n
            var = sum((x - mean) ** 2 for x in column) / n
            columns.append([(x - mean) / (var + eps) ** 0.5 for x in column])
        return columns  # columns[j][n]

    a, b = standardised(rows_a), standardised(rows_b)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[i][k] * b[j][k] for k in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lam * c_ij**2
    return loss


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(WORLD_SIZE * N_PER_RANK, DIM, generator=generator, dtype=torch.float64)
    z_b = z_a + 0.7 * torch.randn(z_a.shape, generator=generator, dtype=torch.float64)
    return z_a * 3.0 + 1.0, z_b  # scale and shift a view: standardisation removes them


def test_loss_equals_the_formula_term_by_term() -> None:
    z_a, z_b = global_batch()
    loss = barlow_twins_loss(z_a, z_b, LAMBDA)
    assert loss.item() == pytest.approx(reference_loss(z_a, z_b, LAMBDA), rel=1e-10)


def test_loss_matches_lightly_in_one_process() -> None:
    z_a, z_b = global_batch()
    lightly = BarlowTwinsLoss(lambda_param=LAMBDA)(z_a, z_b)
    torch.testing.assert_close(barlow_twins_loss(z_a, z_b, LAMBDA), lightly)


def test_loss_is_zero_for_identical_decorrelated_views_and_ignores_scale() -> None:
    # Two orthogonal +-1 columns: standardised, C is the identity (up to eps).
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert barlow_twins_loss(z, z).item() == pytest.approx(0.0, abs=1e-8)
    # Swapping the columns of one view moves the correlation off the diagonal.
    assert barlow_twins_loss(z, z.flip(1), lambda_offdiag=1.0).item() == pytest.approx(4.0, 1e-4)
    z_a, z_b = global_batch()
    scaled = z_b * torch.tensor([2.0, 0.5, 10.0, 1.0], dtype=torch.float64) - 4.0
    # (up to eps, which the scaled variances weigh differently)
    torch.testing.assert_close(
        barlow_twins_loss(z_a, scaled), barlow_twins_loss(z_a, z_b), rtol=1e-4, atol=0
    )


def test_gradient_matches_the_formula() -> None:
    z_a, z_b = (t.clone().requires_grad_(True) for t in global_batch())
    barlow_twins_loss(z_a, z_b, LAMBDA).backward()
    # Central differences of the reference on a few entries of each view.
    h = 1e-6
    for tensor, grad, other_first in ((z_a, z_a.grad, True), (z_b, z_b.grad, False)):
        for index in [(0, 0), (3, 2), (9, 3)]:
            plus, minus = tensor.detach().clone(), tensor.detach().clone()
            plus[index] += h
            minus[index] -= h
            other = z_b.detach() if other_first else z_a.detach()
            pair = (plus, other) if other_first else (other, plus)
            pair_minus = (minus, other) if other_first else (other, minus)
            numeric = (reference_loss(*pair, LAMBDA) - reference_loss(*pair_minus, LAMBDA)) / (
                2 * h
            )
            assert grad[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("z_a", "z_b", "kwargs", "message"),
    [
        (torch.randn(4, 3), torch.randn(4, 2), {}, "same shape"),
        (torch.randn(4), torch.randn(4), {}, "2-D"),
        (torch.randn(1, 3), torch.randn(1, 3), {}, "at least 2 samples"),
        (torch.randn(4, 3), torch.randn(4, 3), {"lambda_offdiag": -1.0}, "lambda_offdiag"),
        (torch.randn(4, 3), torch.randn(4, 3), {"eps": 0.0}, "eps must be > 0"),
    ],
)
def test_bad_inputs_give_clear_errors(z_a, z_b, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        barlow_twins_loss(z_a, z_b, **kwargs)


# ------------------------------------------------------------------------- two processes


@two_process_worker
def _worker(process_rank: int, out_dir: Path) -> None:
    local = slice(process_rank * N_PER_RANK, (process_rank + 1) * N_PER_RANK)
    z_a, z_b = (t[local].clone().requires_grad_(True) for t in global_batch())
    loss = barlow_twins_loss(z_a, z_b, LAMBDA)
    loss.backward()
    local_only = barlow_twins_loss(z_a.detach(), z_b.detach(), LAMBDA, gather_distributed=False)
    lightly = BarlowTwinsLoss(lambda_param=LAMBDA, gather_distributed=True)
    torch.save(
        {
            "loss": loss.detach(),
            "grad_a": z_a.grad,
            "grad_b": z_b.grad,
            "local_only": local_only,
            "lightly": lightly(z_a.detach(), z_b.detach()),
        },
        out_dir / f"rank{process_rank}.pt",
    )


@pytest.fixture(scope="module")
def ranks(two_process_runs: Path) -> list[dict]:
    out_dir = two_process_dir(two_process_runs, _worker)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


def test_every_process_computes_the_loss_of_the_concatenated_batch(ranks) -> None:
    z_a, z_b = global_batch()
    expected = reference_loss(z_a, z_b, LAMBDA)
    for result in ranks:
        assert result["loss"].item() == pytest.approx(expected, rel=1e-10)


def test_averaged_gradients_equal_the_single_process_ones(ranks) -> None:
    # Every process holds the loss L of the global batch; the gather's backward sums the
    # gradients of the W copies into the rows' owner, so a process's rows receive W * dL/dz
    # and DDP's average over the processes gives exactly dL/dz of one process.
    z_a, z_b = (t.clone().requires_grad_(True) for t in global_batch())
    barlow_twins_loss(z_a, z_b, LAMBDA).backward()
    for r, result in enumerate(ranks):
        local = slice(r * N_PER_RANK, (r + 1) * N_PER_RANK)
        torch.testing.assert_close(result["grad_a"] / WORLD_SIZE, z_a.grad[local])
        torch.testing.assert_close(result["grad_b"] / WORLD_SIZE, z_b.grad[local])


def test_per_process_statistics_differ_from_the_global_ones(ranks) -> None:
    # Without gathering, and with lightly's BarlowTwinsLoss(gather_distributed=True) (which
    # standardises each process's batch and averages the matrices C), the loss is not that of
    # the concatenated batch: the reason this loss is not lightly's.
    z_a, z_b = global_batch()
    expected = reference_loss(z_a, z_b, LAMBDA)
    for r, result in enumerate(ranks):
        local = slice(r * N_PER_RANK, (r + 1) * N_PER_RANK)
        own = reference_loss(z_a[local], z_b[local], LAMBDA)
        assert result["local_only"].item() == pytest.approx(own, rel=1e-10)
        assert abs(result["local_only"].item() - expected) > 1e-3
        assert abs(result["lightly"].item() - expected) > 1e-3


# ------------------------------------------------------------------------------ the method


def build(**kwargs) -> BarlowTwins:
    torch.manual_seed(0)
    method = BarlowTwins(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        **{"projection_dim": 16, "hidden_dim": 32, **kwargs},
    )
    method.log = lambda *args, **kw: None
    return method


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lambda_offdiag": -0.1}, "lambda_offdiag"),
        ({"projection_dim": 0}, "projection_dim"),
        ({"hidden_dim": 0}, "hidden_dim"),
    ],
)
def test_bad_settings_give_clear_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build(**kwargs)


def test_training_step_needs_two_views() -> None:
    with pytest.raises(ValueError, match="2 augmented view"):
        build().training_step(([torch.rand(8, 3, 8, 8)], torch.zeros(8, dtype=torch.long)), 0)


def test_training_step_is_the_loss_of_the_projections_of_both_views() -> None:
    method = build(lambda_offdiag=0.2)
    views = [torch.rand(8, 3, 8, 8), torch.rand(8, 3, 8, 8)]
    torch.manual_seed(1)
    loss = method.training_step((views, torch.full((8,), -1)), 0)
    z_a, z_b = method.projector(method.backbone(torch.cat(views))).chunk(2)
    torch.testing.assert_close(loss, barlow_twins_loss(z_a, z_b, 0.2))
    assert method.projector.layers[-1].out_features == 16


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


def _one_lars_step(scale: float) -> tuple[BarlowTwins, dict[int, float], dict[int, torch.Tensor]]:
    """A method with ``no_decay_lr_scale=scale`` under lightly's LARS (lr 0.2 per 256 images,
    batch 256) and its warmup-cosine schedule; returns it, each parameter's learning rate at the
    first step and each parameter's change over that step."""
    torch.manual_seed(0)
    method = BarlowTwins(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(LARS, lr=0.2, momentum=0.9, weight_decay=1e-3),
        schedule=partial(warmup_cosine, warmup_epochs=0),
        projection_dim=16,
        hidden_dim=32,
        num_classes=3,
        no_decay_lr_scale=scale,
    )
    method.log = lambda *args, **kw: None
    method._trainer = SimpleNamespace(world_size=1, estimated_stepping_batches=10, max_epochs=1)
    configured = method.configure_optimizers()
    optimizer = configured["optimizer"]
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    before = {id(p): p.detach().clone() for p in method.parameters()}
    views = [torch.rand(16, 3, 8, 8), torch.rand(16, 3, 8, 8)]
    method.training_step((views, torch.arange(16) % 3), 0).backward()
    optimizer.step()
    change = {id(p): p.detach() - before[id(p)] for p in method.parameters()}
    return method, rates, change


def test_no_decay_lr_scale_sets_the_rate_of_biases_and_norms_only() -> None:
    """Barlow Twins' recipe: biases and BatchNorm at 0.024 times the weights' rate, without
    LARS' trust ratio; the weights and the online probe keep the full rate."""
    method, rates, change = _one_lars_step(0.024)
    probe = {id(p) for p in method.online_probe.parameters()}
    for name, param in method.named_parameters():
        exempt = param.ndim <= 1 and id(param) not in probe
        expected = 0.2 * 0.024 if exempt else 0.2
        assert rates[id(param)] == pytest.approx(expected), name
        if exempt and param.grad is not None:
            # First step, empty momentum buffer, no decay, no trust ratio: lr times the gradient.
            torch.testing.assert_close(change[id(param)], -expected * param.grad)
    # The scale leaves every other parameter's step as it is without it.
    plain, plain_rates, plain_change = _one_lars_step(1.0)
    assert all(rate == pytest.approx(0.2) for rate in plain_rates.values())
    for (name, param), other in zip(method.named_parameters(), plain.parameters(), strict=True):
        if param.ndim > 1 or id(param) in probe:
            torch.testing.assert_close(change[id(param)], plain_change[id(other)], msg=name)
        elif param.grad is not None and param.grad.abs().sum() > 0:
            torch.testing.assert_close(change[id(param)], 0.024 * plain_change[id(other)])


@pytest.mark.parametrize("scale", [-0.1, float("inf"), float("nan")])
def test_a_bad_no_decay_lr_scale_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="no_decay_lr_scale"):
        build(no_decay_lr_scale=scale)
