"""Every method has a preset on generated data and trains through each of them.

The methods are the options of ``conf/method/``; their presets are the
``conf/experiment/<method>_*_synthetic*.yaml`` that compose them. Each preset, as shipped but on
the smallest data of its kind, takes two optimiser steps of the Lightning trainer it configures:
the losses are finite and every trainable weight of the backbone moved.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sslkit.build import StoreConfig, build_datamodule, build_method, build_trainer
from tests.conftest import (
    TINY_DATA,
    method_names,
    missing_preset_message,
    preset_choices,
    presets_of,
    tiny_overrides,
)

STEPS = 2
TWO_STEPS = [
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.num_workers=0",
    f"trainer.max_steps={STEPS}",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
    "eval.monitor_every=0",
]


@pytest.mark.parametrize("method", method_names())
def test_every_method_has_a_preset_on_generated_data(method: str) -> None:
    assert presets_of(method), missing_preset_message(method)


def train_two_steps(preset: str, cfg, output_dir: Path) -> None:
    datamodule = build_datamodule(cfg)
    method = build_method(cfg, datamodule)
    before = {name: p.detach().clone() for name, p in method.backbone.named_parameters()}
    losses = []
    training_step = method.training_step

    def recorded(batch, batch_idx):
        loss = training_step(batch, batch_idx)
        losses.append(loss.detach().clone())
        return loss

    method.training_step = recorded
    trainer, _ = build_trainer(cfg, output_dir, logger=None, store_config=StoreConfig(cfg))
    trainer.fit(method, datamodule=datamodule)

    assert trainer.global_step == STEPS, f"{preset}: {trainer.global_step} optimiser steps"
    assert len(losses) == STEPS
    assert all(math.isfinite(loss.item()) for loss in losses), f"{preset}: losses {losses}"
    unchanged = [
        name
        for name, p in method.backbone.named_parameters()
        if p.requires_grad and torch.equal(p.detach(), before[name])
    ]
    assert not unchanged, f"{preset}: {len(unchanged)} backbone weights did not move: {unchanged}"


@pytest.mark.integration
@pytest.mark.parametrize("method", method_names())
def test_method_trains_through_its_presets_on_generated_data(
    method: str, hydra_run, tmp_path: Path
) -> None:
    presets = presets_of(method)
    assert presets, missing_preset_message(method)
    for preset in presets:
        data = TINY_DATA[preset_choices(preset)["data"]]
        overrides = [f"experiment={preset}", *data, *TWO_STEPS, *tiny_overrides(preset)]
        cfg = hydra_run("train", overrides)
        train_two_steps(preset, cfg, tmp_path / preset)
