"""Every method learning on 2 gloo processes equals one process on the global batch.

The methods are the options of ``conf/method/``, each built from its YAML with a tiny backbone
and small heads. Each process runs a few optimisation steps of the real method on its half of
every batch, drives the method's Lightning hooks as a trainer would (``on_fit_start``,
``on_train_start``, ``after_optimizer_step`` after each optimiser step, which moves a teacher)
and averages gradients over processes as DDP does. The losses, the averaged gradients and the
saved state (teachers and every buffer included) must equal those of one process on the
concatenated batch, so a statistic over the batch (negatives, mining) or a state carried from
step to step that a method computed per process would fail here.

BatchNorm layers are kept in eval mode: on the CPU there is no SyncBatchNorm, and per-process
batch statistics make no data-parallel run equal a single process, whatever the loss does.

Everything runs in float64: the test is about what is computed over which samples, and in
float32 a loss that standardises small batches (Barlow Twins) turns the different summation
order of a split batch into gradient differences of 1e-4, which would hide a real error of the
same size or fail on noise.
"""

from __future__ import annotations

import functools
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict
from torch import nn

from sslkit.methods.base import SSLMethod
from sslkit.models import ConvNet
from sslkit.models.vit import ViT
from tests.conftest import (
    compose_config,
    method_names,
    presets_of,
    tiny_overrides,
    two_process_dir,
    two_process_worker,
)

WORLD_SIZE = 2
PER_RANK = 6
STEPS = 3
NUM_CLASSES = 3
#: Sums over a batch split in two and over the whole batch differ in their last bits (float64).
CLOSE = {"rtol": 1e-9, "atol": 1e-9}
#: Head sizes set small where a method's config has them; every other key keeps its default.
SMALL_HEADS = {
    "projection_dim": 8,
    "hidden_dim": 16,
    "prediction_hidden_dim": 16,
    "decoder_width": 8,
}
METHODS = method_names()


def _method_keys(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.lstrip("+~").startswith("method.")]


@functools.cache
def method_config(name: str) -> DictConfig:
    """``conf/method/<name>.yaml`` as composed, with small heads and the ``method.`` settings of
    its presets' ``# tiny:`` lines (a queue that the small batches fill)."""
    tiny = [o for preset in presets_of(name) for o in tiny_overrides(preset)]
    cfg = compose_config("train", [f"method={name}", *_method_keys(tiny)]).method
    with open_dict(cfg):
        for key, value in SMALL_HEADS.items():
            if key in cfg:
                cfg[key] = value
    return cfg


def build(name: str, process_rank: int = 0, world_size: int = 1) -> SSLMethod:
    """The method around a tiny backbone, attached to a stand-in trainer that gives its hooks
    the process's rank and the run's length."""
    torch.manual_seed(0)
    backbone = ConvNet(in_channels=3, widths=[4, 8])
    if not isinstance(backbone, get_class(method_config(name)._target_).backbone_kind):
        backbone = ViT(image_size=8, patch_size=4, embed_dim=12, depth=1, num_heads=3)  # MAE
    method = instantiate(
        method_config(name),
        backbone=backbone,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=NUM_CLASSES,
        batch_size=PER_RANK,
    ).double()
    method._trainer = SimpleNamespace(
        global_step=0,
        global_rank=process_rank,
        local_rank=process_rank,
        world_size=world_size,
        current_epoch=0,
        estimated_stepping_batches=STEPS,
    )
    method.log = lambda *args, **kwargs: None
    for module in method.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return method


def global_batch(step: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    shape = (WORLD_SIZE * PER_RANK, 3, 8, 8)
    images = torch.rand(shape, generator=generator, dtype=torch.float64)
    noise = torch.rand(shape, generator=generator, dtype=torch.float64)
    views = [images, images.flip(-1) + 0.1 * noise]
    labels = torch.arange(WORLD_SIZE * PER_RANK) % NUM_CLASSES
    return views, labels


def batch_for(step: int, views_wanted: int, process_rank: int | None):
    views, labels = global_batch(step)
    if process_rank is not None:
        local = slice(process_rank * PER_RANK, (process_rank + 1) * PER_RANK)
        views, labels = [v[local] for v in views], labels[local]
    return views[:views_wanted], labels


@functools.cache
def views_wanted(name: str) -> int:
    """How many views the method takes: 2, or 1 for a method that refuses a second."""
    views, labels = global_batch(0)
    try:
        build(name).training_step((views, labels), 0)
    except ValueError:
        return 1
    return 2


def draws_its_own_randomness(name: str) -> bool:
    """Whether the method's step draws random numbers of its own (inpainting's masks): then
    two calls on the same batch and weights give different losses, each process draws its own,
    and no single process reproduces them; only the processes' agreement can be checked."""
    method = build(name)
    batch = batch_for(0, views_wanted(name), None)
    torch.manual_seed(1)
    first = method.training_step(batch, 0)
    torch.manual_seed(1)
    return not torch.equal(first, method.training_step(batch, 0))


def train_steps(name: str, process_rank: int | None = None) -> dict:
    """Losses and (process-averaged) gradients of every step, and the final state; one process
    on the global batch when ``process_rank`` is None."""
    distributed = process_rank is not None
    wanted = views_wanted(name)
    method = build(name, process_rank or 0, WORLD_SIZE if distributed else 1)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    method.on_fit_start()
    method.on_train_start()
    losses, gradients = [], []
    for step in range(STEPS):
        batch = batch_for(step, wanted, process_rank)
        optimizer.zero_grad()
        torch.manual_seed(100 + step)  # the same random choices (mining) on every process
        loss = method.training_step(batch, step)
        loss.backward()
        for parameter in method.parameters():
            if parameter.grad is not None and distributed:
                dist.all_reduce(parameter.grad)
                parameter.grad /= WORLD_SIZE
        losses.append(loss.detach())
        gradients.append(
            {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
        )
        optimizer.step()
        method._trainer.global_step = step  # Lightning counts the step after optimizer_step
        method.after_optimizer_step()
        method._trainer.global_step = step + 1
    return {"losses": losses, "gradients": gradients, "state": method.state_dict()}


@two_process_worker
def _worker(process_rank: int, out_dir: Path) -> None:
    results = {name: train_steps(name, process_rank) for name in METHODS}
    torch.save(results, out_dir / f"rank{process_rank}.pt")


@pytest.fixture(scope="module")
def ranks(two_process_runs: Path) -> list[dict]:
    out_dir = two_process_dir(two_process_runs, _worker)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("name", METHODS)
def test_loss_gradients_and_state_equal_one_process_on_the_global_batch(ranks, name: str) -> None:
    if draws_its_own_randomness(name):
        pytest.skip(
            f"{name} draws its own random numbers on each process, which one process cannot "
            "reproduce; test_state_is_identical_on_every_process compares its processes"
        )
    single = train_steps(name)
    for step in range(STEPS):
        mean_loss = torch.stack([r[name]["losses"][step] for r in ranks]).mean()
        torch.testing.assert_close(
            mean_loss, single["losses"][step], **CLOSE, msg=lambda m, s=step: f"step {s}: loss\n{m}"
        )
        for result in ranks:
            gradients = result[name]["gradients"][step]
            assert gradients.keys() == single["gradients"][step].keys()
            for key, value in single["gradients"][step].items():
                torch.testing.assert_close(
                    gradients[key],
                    value,
                    **CLOSE,
                    msg=lambda m, s=step, k=key: f"step {s}: {k}\n{m}",
                )
    for result in ranks:
        assert result[name]["state"].keys() == single["state"].keys()
        for key, value in single["state"].items():
            torch.testing.assert_close(
                result[name]["state"][key], value, **CLOSE, msg=lambda m, k=key: f"{k}\n{m}"
            )


@pytest.mark.parametrize("name", METHODS)
def test_state_is_identical_on_every_process(ranks, name: str) -> None:
    first, second = (r[name]["state"] for r in ranks)
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


@two_process_worker
def _mask_resume_worker(process_rank: int, out_dir: Path) -> None:
    method = build("inpainting", process_rank, WORLD_SIZE)
    method.on_fit_start()
    images = torch.rand(PER_RANK, 3, 8, 8, dtype=torch.float64)
    method.mask_generator(images)
    checkpoint: dict = {}
    method.on_save_checkpoint(checkpoint)  # a collective: every process builds it
    continued = method.mask_generator(images)
    written = [checkpoint if process_rank == 0 else None]  # rank 0 writes the file
    dist.broadcast_object_list(written, src=0)
    resumed = build("inpainting", process_rank, WORLD_SIZE)
    resumed.on_load_checkpoint(written[0])
    resumed.on_fit_start()
    torch.save(
        {"continued": continued, "resumed": resumed.mask_generator(images)},
        out_dir / f"masks{process_rank}.pt",
    )


def test_resumed_inpainting_continues_the_masks_of_every_process(two_process_runs: Path) -> None:
    # The checkpoint rank 0 writes holds every process's mask sequence, so each process of a
    # resumed run draws the masks it would have drawn without the interruption.
    out_dir = two_process_dir(two_process_runs, _mask_resume_worker)
    masks = [torch.load(out_dir / f"masks{r}.pt") for r in range(WORLD_SIZE)]
    for rank_masks in masks:
        assert torch.equal(rank_masks["resumed"], rank_masks["continued"])
    assert not torch.equal(masks[0]["continued"], masks[1]["continued"])
