"""SimCLR pretrains end to end on tiny synthetic data and writes a complete results.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from sslkit.build import build_datamodule, build_method
from sslkit.methods import SimCLR
from sslkit.train import train
from tests.conftest import TINY


def test_simclr_step_updates_backbone_and_loss_is_finite(hydra_run) -> None:
    cfg = hydra_run("train", [*TINY, "method=simclr"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    method = build_method(cfg, datamodule)
    assert isinstance(method, SimCLR)
    views, labels = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    before = [p.detach().clone() for p in method.backbone.parameters()]
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    loss = method.training_step((views, labels), 0)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    optimizer.step()
    assert any(
        not torch.equal(a, b) for a, b in zip(before, method.backbone.parameters(), strict=True)
    )
    assert method.forward_features(views[0]).shape == (len(labels), method.backbone.feature_dim)


def test_train_writes_results_and_checkpoint(hydra_run, tmp_path: Path) -> None:
    cfg = hydra_run("train", [*TINY, "trainer.max_epochs=2"])
    results = train(cfg)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["metrics"] == results["metrics"]
    assert on_disk["method"] == "SimCLR" and on_disk["dataset"] == "synthetic"
    for key in ("knn/top1@5", "knn/top1@20", "linear/top1", "linear/macro_f1"):
        assert 0.0 <= on_disk["metrics"][key] <= 1.0
    for baseline in ("raw_pixels", "random_init"):
        assert set(on_disk["baselines"][baseline]) == set(on_disk["metrics"])
    assert on_disk["protocol"]["knn"]["k"] == [5, 20]
    assert on_disk["config"]["seed"] == 0
    assert {"pretrain_s", "eval_s", "total_s"} <= set(on_disk["timings"])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["sslkit_config"]["method"]["_target_"] == "sslkit.methods.SimCLR"
    metrics_csv = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "train/loss" in metrics_csv and "final/knn/top1@5" in metrics_csv
