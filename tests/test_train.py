"""SimCLR takes a training step, and a tiny run (conftest's ``tiny_run``) writes a complete
results.json, its checkpoints and its CSV log."""

from __future__ import annotations

import json
import math

import torch

from sslkit.build import build_datamodule, build_method
from sslkit.methods import SimCLR
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


NAMES = ("top1", "top5", "macro_precision", "macro_recall", "macro_f1")
METRICS = {f"knn/{m}@{k}" for m in NAMES for k in (5, 20)} | {f"linear/{m}" for m in NAMES}
METRICS |= {"rankme"}


def test_train_writes_results_and_checkpoint(tiny_run) -> None:
    on_disk = json.loads((tiny_run.dir / "results.json").read_text())
    assert on_disk["method"] == "SimCLR" and on_disk["dataset"] == "synthetic"
    assert set(on_disk["metrics"]) == METRICS
    for baseline in ("raw_pixels", "random_init"):
        assert set(on_disk["baselines"][baseline]) == METRICS
    assert on_disk["metrics"] != on_disk["baselines"]["random_init"], "the trained encoder"
    assert on_disk["protocol"]["knn"]["k"] == [5, 20]
    assert on_disk["config"]["seed"] == 0
    assert {"pretrain_s", "eval_s", "total_s"} <= set(on_disk["timings"])
    checkpoints = tiny_run.dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch001.ckpt", "last.ckpt"]
    checkpoint = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert checkpoint["sslkit_config"]["method"]["_target_"] == "sslkit.methods.SimCLR"
    assert checkpoint["epoch"] == 1 and on_disk["checkpoint"] == str(checkpoints / "last.ckpt")
    metrics_csv = (tiny_run.dir / "csv" / "metrics.csv").read_text()
    assert "train/loss" in metrics_csv and "final/knn/top1@5" in metrics_csv
