from pathlib import Path

import pytest
import torch
from lightly.loss import NTXentLoss

from sslkit.distributed import gather_with_grad, is_distributed, rank, world_size
from sslkit.losses import info_nce
from tests.conftest import two_process_dir, two_process_worker

WORLD_SIZE = 2
N_PER_RANK = 6
DIM = 5
TEMPERATURE = 0.2


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(WORLD_SIZE * N_PER_RANK, DIM, generator=generator, dtype=torch.float64)
    z_b = z_a + 0.5 * torch.randn(z_a.shape, generator=generator, dtype=torch.float64)
    return z_a, z_b


@two_process_worker
def _worker(process_rank: int, out_dir: Path) -> None:
    local = slice(process_rank * N_PER_RANK, (process_rank + 1) * N_PER_RANK)
    z_a, z_b = (t[local].clone().requires_grad_(True) for t in _global_batch())
    loss = info_nce(z_a, z_b, TEMPERATURE)
    loss.backward()

    local_only = info_nce(z_a.detach(), z_b.detach(), TEMPERATURE, gather_distributed=False)
    lightly_loss = NTXentLoss(TEMPERATURE, gather_distributed=True)(z_a.detach(), z_b.detach())

    # Rank r holds rows filled with r + 1; the weights make each gathered row's
    # gradient identify which rank's loss it came from.
    probe = torch.full((2, 3), float(process_rank + 1), requires_grad=True)
    gathered = gather_with_grad(probe)
    weights = torch.arange(gathered.numel(), dtype=gathered.dtype).view_as(gathered)
    (gathered * weights * (process_rank + 1)).sum().backward()

    torch.save(
        {
            "layout": (world_size(), rank(), is_distributed()),
            "loss": loss.detach(),
            "grad_a": z_a.grad,
            "grad_b": z_b.grad,
            "local_only": local_only,
            "lightly": lightly_loss,
            "gathered": gathered.detach(),
            "probe_grad": probe.grad,
        },
        out_dir / f"rank{process_rank}.pt",
    )


@pytest.fixture(scope="module")
def rank_results(two_process_runs: Path) -> list[dict]:
    out_dir = two_process_dir(two_process_runs, _worker)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


def test_helpers_without_process_group_describe_a_single_process():
    tensor = torch.randn(3, 2)
    assert (world_size(), rank(), is_distributed()) == (1, 0, False)
    assert gather_with_grad(tensor) is tensor


def test_workers_see_the_process_group(rank_results):
    assert [r["layout"] for r in rank_results] == [(WORLD_SIZE, r, True) for r in range(WORLD_SIZE)]


def test_gather_concatenates_in_rank_order_and_sums_gradients_over_ranks(rank_results):
    expected = torch.cat([torch.full((2, 3), float(r + 1)) for r in range(WORLD_SIZE)])
    for result in rank_results:
        torch.testing.assert_close(result["gathered"], expected)
    # Rank q's loss is sum(gathered * weights * (q + 1)); the slice of rank r receives
    # weights[r-slice] * (q + 1) from every q, i.e. weights[r-slice] * sum_q (q + 1).
    weights = torch.arange(expected.numel(), dtype=expected.dtype).view_as(expected)
    factor = sum(q + 1 for q in range(WORLD_SIZE))
    for r, result in enumerate(rank_results):
        torch.testing.assert_close(result["probe_grad"], factor * weights[2 * r : 2 * r + 2])


def test_mean_of_rank_losses_equals_single_process_loss_on_global_batch(rank_results):
    z_a, z_b = _global_batch()
    single = info_nce(z_a, z_b, TEMPERATURE)
    mean_over_ranks = torch.stack([r["loss"] for r in rank_results]).mean()
    torch.testing.assert_close(mean_over_ranks, single, atol=1e-10, rtol=1e-10)


def test_rank_gradients_equal_single_process_gradients_times_world_size(rank_results):
    # The single-process loss L on the global batch is the mean of the rank losses L_q
    # (equal-sized ranks, and each anchor sees the same candidates either way). Rank r's
    # inputs x_r enter its own L_r as anchors and every L_q as gathered candidates; the
    # gather's backward sums the candidate gradients over ranks, so after rank r's
    # backward x_r.grad = d(sum_q L_q)/dx_r = world_size * dL/dx_r. DDP's averaging of
    # gradients over ranks divides by world_size again, giving exactly dL/dx_r.
    z_a, z_b = (t.clone().requires_grad_(True) for t in _global_batch())
    info_nce(z_a, z_b, TEMPERATURE).backward()
    for r, result in enumerate(rank_results):
        local = slice(r * N_PER_RANK, (r + 1) * N_PER_RANK)
        torch.testing.assert_close(result["grad_a"] / WORLD_SIZE, z_a.grad[local])
        torch.testing.assert_close(result["grad_b"] / WORLD_SIZE, z_b.grad[local])


def test_distributed_loss_matches_lightly_with_gathering(rank_results):
    for result in rank_results:
        torch.testing.assert_close(result["loss"], result["lightly"])


def test_gathering_can_be_switched_off(rank_results):
    z_a, z_b = _global_batch()
    for r, result in enumerate(rank_results):
        local = slice(r * N_PER_RANK, (r + 1) * N_PER_RANK)
        expected = info_nce(z_a[local], z_b[local], TEMPERATURE)
        torch.testing.assert_close(result["local_only"], expected)
        assert not torch.allclose(result["loss"], expected)
