"""Monitoring while pretraining: the kNN monitor, per-epoch curves in checkpoints, run plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.eval import KNNProtocol
from sslkit.eval.monitor import KNNMonitor, MetricHistory
from sslkit.methods import SimCLR
from sslkit.models import ConvNet
from sslkit.train import train
from tests.conftest import TINY


def assert_real_png(path: Path) -> None:
    """A readable PNG with more than one colour (something was drawn)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    assert min(pixels.shape) >= 100 and pixels.std() > 5


def test_metric_history_records_points_and_round_trips():
    history = MetricHistory()
    history.record("monitor/knn_top1@20", 2, torch.tensor(0.5))
    history.record("monitor/knn_top1@20", 2, 0.6)  # the same epoch again replaces it
    history.record("monitor/knn_top1@20", 4, 0.7)
    history.record("train/loss", 1, float("nan"))
    assert history.history == {"monitor/knn_top1@20": [[2, 0.6], [4, 0.7]]}
    restored = MetricHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.history == history.history


def test_knn_monitor_runs_every_n_epochs_with_the_first_k(monkeypatch):
    calls = []

    def protocols(features, datamodule, *, knn, linear):
        calls.append(knn.k)
        return SimpleNamespace(metrics={f"knn/top1@{k}": 0.5 for k in knn.k})

    features = SimpleNamespace(train_features=torch.eye(6)[:, :3], test_features=None)
    monkeypatch.setattr("sslkit.eval.monitor.extract_split_features", lambda *args: features)
    monkeypatch.setattr("sslkit.eval.monitor.run_protocols_on_splits", protocols)
    history = MetricHistory()
    monitor = KNNMonitor(2, knn=KNNProtocol(k=[10, 50]), encoder="student", history=history)
    logged = []
    module = SimpleNamespace(
        evaluation_encoders=lambda: {"student": None},
        device="cpu",
        log=lambda key, value, **kwargs: logged.append((key, value)),
    )
    datamodule = SimpleNamespace(multilabel=False)
    for epoch in range(4):  # 0-based: runs after the 2nd and the 4th epoch
        trainer = SimpleNamespace(current_epoch=epoch, is_global_zero=True, datamodule=datamodule)
        monitor.on_train_epoch_end(trainer, module)
    assert calls == [[10], [10]]
    rank = pytest.approx(3.0, rel=1e-5)  # RankMe of the train features: 3 orthonormal columns
    assert logged == [("monitor/knn_top1@10", 0.5), ("monitor/rankme", rank)] * 2
    assert history.history == {
        "monitor/knn_top1@10": [[2, 0.5], [4, 0.5]],
        "monitor/rankme": [[2, rank], [4, rank]],
    }


def test_knn_monitor_logs_nan_rankme_for_diverged_features(monkeypatch):
    features = SimpleNamespace(train_features=torch.full((4, 3), float("nan")))
    monkeypatch.setattr("sslkit.eval.monitor.extract_split_features", lambda *args: features)
    monkeypatch.setattr(
        "sslkit.eval.monitor.run_protocols_on_splits",
        lambda *args, **kwargs: SimpleNamespace(metrics={"knn/top1@5": 0.25}),
    )
    history = MetricHistory()
    monitor = KNNMonitor(1, knn=KNNProtocol(k=[5]), encoder="student", history=history)
    logged = {}
    module = SimpleNamespace(
        evaluation_encoders=lambda: {"student": None},
        device="cpu",
        log=lambda key, value, **kwargs: logged.update({key: value}),
    )
    trainer = SimpleNamespace(
        current_epoch=0, is_global_zero=True, datamodule=SimpleNamespace(multilabel=False)
    )
    monitor.on_train_epoch_end(trainer, module)
    assert logged["monitor/knn_top1@5"] == 0.25 and math.isnan(logged["monitor/rankme"])
    assert history.history == {"monitor/knn_top1@5": [[1, 0.25]]}


def test_knn_monitor_encodes_what_the_methods_evaluation_hook_names():
    monitor = KNNMonitor(1, knn=KNNProtocol(k=[5]), encoder="teacher")
    method = SimCLR(ConvNet(in_channels=3, widths=[4, 8]), optimizer=torch.optim.SGD)
    trainer = SimpleNamespace(current_epoch=0, is_global_zero=True, datamodule=None)
    with pytest.raises(ValueError, match=r"eval.encoder='teacher' is not offered by SimCLR"):
        monitor.on_train_epoch_end(trainer, method)


def test_training_monitors_knn_keeps_curves_and_writes_plots(hydra_run, tmp_path):
    overrides = [*TINY, "trainer.max_epochs=2", "eval.monitor_every=1", "eval.plots=true"]
    results = train(hydra_run("train", [*overrides, "baselines=[]"]))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("MetricHistory")]
    history = state["history"]
    assert [epoch for epoch, _ in history["monitor/knn_top1@5"]] == [1, 2]
    assert [epoch for epoch, _ in history["train/loss"]] == [1, 2]
    assert [epoch for epoch, _ in history["val/online_top1"]] == [1, 2]
    # The monitor at the last epoch is the final kNN protocol on the same weights.
    assert history["monitor/knn_top1@5"][-1][1] == results["metrics"]["knn/top1@5"]
    assert [epoch for epoch, _ in history["monitor/rankme"]] == [1, 2]
    assert history["monitor/rankme"][-1][1] == pytest.approx(results["metrics"]["rankme"])
    logged = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "monitor/knn_top1@5" in logged and "monitor/rankme" in logged

    plots = tmp_path / "plots"
    names = {"curves.png", "confusion_linear.png", "embedding_tsne.png", "retrieval.png"}
    assert {p.name for p in plots.iterdir()} == names
    for name in names:
        assert_real_png(plots / name)
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == results["metrics"]
