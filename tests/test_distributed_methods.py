"""BYOL and triplet learning on 2 gloo processes equal one process on the global batch.

Each process runs a few optimisation steps of the real method on its half of every batch and
averages gradients over processes as DDP does. BatchNorm layers are kept in eval mode: on the
CPU there is no SyncBatchNorm, and per-process batch statistics make no data-parallel run equal
a single process, whatever the loss does.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from sslkit.methods import BYOL, Triplet
from sslkit.models import ConvNet
from tests.conftest import spawn_ranks

WORLD_SIZE = 2
PER_RANK = 6
STEPS = 3
TIMEOUT_S = 120


def build(name: str) -> BYOL | Triplet:
    torch.manual_seed(0)
    backbone = ConvNet(in_channels=3, widths=[4, 8])
    optimizer = partial(torch.optim.SGD, lr=0.1)
    if name == "byol":
        method = BYOL(
            backbone,
            projection_dim=8,
            hidden_dim=16,
            prediction_hidden_dim=16,
            tau_base=0.9,
            optimizer=optimizer,
        )
    else:
        method = Triplet(
            backbone,
            positives="labels",
            mining="hard",
            projection_dim=8,
            hidden_dim=16,
            optimizer=optimizer,
        )
    for module in method.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return method


def global_batch(step: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    images = torch.rand(WORLD_SIZE * PER_RANK, 3, 8, 8, generator=generator)
    views = [images, images.flip(-1) + 0.1 * torch.rand(images.shape, generator=generator)]
    labels = torch.arange(WORLD_SIZE * PER_RANK) % 3
    return views, labels


def train_steps(name: str, process_rank: int | None = None) -> dict:
    """Losses and (process-averaged) gradients of every step, and the final weights; one process
    on the global batch when ``process_rank`` is None."""
    method = build(name)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    losses, gradients = [], []
    for step in range(STEPS):
        views, labels = global_batch(step)
        if process_rank is not None:
            local = slice(process_rank * PER_RANK, (process_rank + 1) * PER_RANK)
            views, labels = [v[local] for v in views], labels[local]
        optimizer.zero_grad()
        loss = method.training_step((views, labels), step)
        loss.backward()
        for parameter in method.parameters():
            if parameter.grad is not None and process_rank is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= WORLD_SIZE
        losses.append(loss.detach())
        gradients.append(
            {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
        )
        optimizer.step()
        if name == "byol":
            method.update_teacher(step, STEPS)
    return {"losses": losses, "gradients": gradients, "state": method.state_dict()}


def _worker(process_rank: int, out_dir: Path) -> None:
    results = {name: train_steps(name, process_rank) for name in ("byol", "triplet")}
    torch.save(results, out_dir / f"rank{process_rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("distributed_methods")
    spawn_ranks(_worker, WORLD_SIZE, out_dir, TIMEOUT_S)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("name", ["byol", "triplet"])
def test_loss_and_gradients_equal_one_process_on_the_global_batch(ranks, name: str) -> None:
    single = train_steps(name)
    for step in range(STEPS):
        mean_loss = torch.stack([r[name]["losses"][step] for r in ranks]).mean()
        torch.testing.assert_close(mean_loss, single["losses"][step])
        for result in ranks:
            gradients = result[name]["gradients"][step]
            assert gradients.keys() == single["gradients"][step].keys()
            for key, value in single["gradients"][step].items():
                torch.testing.assert_close(gradients[key], value, msg=f"step {step}: {key}")


@pytest.mark.parametrize("name", ["byol", "triplet"])
def test_weights_are_identical_on_every_process(ranks, name: str) -> None:
    first, second = (r[name]["state"] for r in ranks)
    if name == "byol":
        assert any(k.startswith("teacher_") for k in first), "the EMA teacher is compared too"
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def test_triplets_are_mined_in_the_global_batch(ranks) -> None:
    # Hard negatives from the other process's half: with per-process mining the loss of each
    # process, hence their mean, would differ from the single-process loss.
    views, labels = global_batch(0)
    single = build("triplet").training_step((views, labels), 0)
    per_process = [
        build("triplet").training_step(([v[s] for v in views], labels[s]), 0)
        for s in (slice(0, PER_RANK), slice(PER_RANK, None))
    ]
    assert not torch.allclose(torch.stack(per_process).mean(), single)
    torch.testing.assert_close(
        torch.stack([r["triplet"]["losses"][0] for r in ranks]).mean(), single
    )
