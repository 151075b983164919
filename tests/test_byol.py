"""BYOL: frozen EMA teacher outside the optimiser, one EMA update per optimiser step with the
cosine momentum (also after resuming), collapse monitor, end-to-end fit and teacher evaluation."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from sslkit.build import StoreConfig, build_datamodule, build_method
from sslkit.evaluate import evaluate
from sslkit.methods import BYOL
from sslkit.models import momentum_schedule
from sslkit.train import train
from tests.conftest import TINY, compose_config

BYOL_TINY = [
    *TINY,
    "method=byol",
    "augment=byol",
    "method.hidden_dim=32",
    "method.prediction_hidden_dim=32",
    "method.projection_dim=16",
]
EVAL_TINY = ["eval.knn.k=[5,20]", "eval.linear.epochs=5", "trainer.enable_progress_bar=false"]


def _build(cfg) -> tuple[BYOL, pl.LightningDataModule]:
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    method = build_method(cfg, datamodule)
    assert isinstance(method, BYOL)
    return method, datamodule


def _teacher_params(method: BYOL) -> list[torch.nn.Parameter]:
    teacher = method.teacher_ema
    return [*teacher.backbone.parameters(), *teacher.projector.parameters()]


def _student_params(method: BYOL) -> list[torch.nn.Parameter]:
    return [*method.backbone.parameters(), *method.projector.parameters()]


def test_teacher_is_frozen_and_left_out_of_the_optimiser(hydra_run) -> None:
    method, datamodule = _build(hydra_run("train", [*BYOL_TINY, "~schedule"]))
    optimizer = method.configure_optimizers()["optimizer"]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised.isdisjoint(id(p) for p in _teacher_params(method))
    assert {id(p) for p in [*_student_params(method), *method.predictor.parameters()]} <= optimised

    views, labels = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    teacher_before = [p.detach().clone() for p in _teacher_params(method)]
    student_before = [p.detach().clone() for p in method.backbone.parameters()]
    loss = method.training_step((views, labels), 0)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in _teacher_params(method))
    assert all(p.grad is not None for p in method.predictor.parameters())
    optimizer.step()
    for before, p in zip(teacher_before, _teacher_params(method), strict=True):
        assert torch.equal(before, p)
    assert any(
        not torch.equal(b, p)
        for b, p in zip(student_before, method.backbone.parameters(), strict=True)
    )


def test_checkpoints_with_the_former_teacher_keys_still_load(hydra_run) -> None:
    # Before the EMATeacher component, BYOL kept its teacher as two top-level modules.
    cfg = hydra_run("train", BYOL_TINY)
    trained, datamodule = _build(cfg)
    with torch.no_grad():
        for p in _teacher_params(trained):
            p.add_(torch.randn_like(p))
    legacy = {}
    for key, value in trained.state_dict().items():
        for old, new in BYOL.LEGACY_TEACHER_KEYS.items():
            key = key.replace(new, old, 1) if key.startswith(new) else key
        legacy[key] = value
    assert any(k.startswith("teacher_backbone.") for k in legacy)
    assert any(k.startswith("teacher_projector.") for k in legacy)
    assert not any(k.startswith("teacher_ema.") for k in legacy)

    restored, _ = _build(cfg)
    restored.load_state_dict(legacy)  # strict: no key missing, none unexpected
    for a, b in zip(_teacher_params(trained), _teacher_params(restored), strict=True):
        assert torch.equal(a, b)
    images = next(iter(datamodule.eval_dataloader("test")))[0]
    teacher, restored_teacher = (
        m.eval().evaluation_encoders()["teacher"] for m in (trained, restored)
    )
    torch.testing.assert_close(restored_teacher(images), teacher(images), rtol=0, atol=0)


class TeacherRecorder(Callback):
    """Checks, batch by batch, that the teacher moved by exactly one EMA step when the optimiser
    stepped (with the schedule's momentum for that step, towards the updated student) and stayed
    put when it did not, by the time the end-of-batch hooks (step checkpoints) run."""

    def __init__(self) -> None:
        self.updated: list[bool] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.step_before = trainer.global_step
        self.teachers_before = [p.detach().clone() for p in _teacher_params(module)]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        stepped = trainer.global_step > self.step_before
        self.updated.append(stepped)
        tau = momentum_schedule(self.step_before, int(trainer.estimated_stepping_batches), 0.99)
        if stepped:
            assert module.teacher_ema.momentum == pytest.approx(tau)
        students = [p.detach() for p in _student_params(module)]
        for s, old, new in zip(
            students, self.teachers_before, _teacher_params(module), strict=True
        ):
            expected = tau * old + (1 - tau) * s if stepped else old
            torch.testing.assert_close(new, expected)


@pytest.mark.parametrize(("accumulate", "updated"), [(1, [True] * 4), (2, [False, True] * 2)])
def test_teacher_takes_one_ema_step_per_optimiser_step(hydra_run, accumulate, updated) -> None:
    method, datamodule = _build(hydra_run("train", [*BYOL_TINY, "method.tau_base=0.99"]))
    recorder = TeacherRecorder()
    trainer = pl.Trainer(
        max_epochs=1,
        accumulate_grad_batches=accumulate,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(method, datamodule=datamodule)
    assert recorder.updated == updated
    images = next(iter(datamodule.eval_dataloader("test")))[0]
    encoders = method.evaluation_encoders()
    assert set(encoders) == {"student", "teacher"}
    assert not torch.allclose(encoders["teacher"](images), encoders["student"](images))


def test_collapse_monitor_warns_once_per_epoch(hydra_run, caplog) -> None:
    method, _ = _build(hydra_run("train", BYOL_TINY))
    generator = torch.Generator().manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="sslkit.methods.byol"):
        healthy = method.monitor_collapse(torch.randn(4096, 16, generator=generator))
        assert healthy == pytest.approx(1 / math.sqrt(16), rel=0.05)
        assert not caplog.records
        collapsed = torch.ones(64, 16) + 1e-4 * torch.randn(64, 16, generator=generator)
        assert method.monitor_collapse(collapsed) < 1e-3
        method.monitor_collapse(collapsed)
    assert len(caplog.records) == 1 and "collapsing" in caplog.records[0].getMessage()


def test_fit_then_evaluate_the_teacher(hydra_run, tmp_path: Path) -> None:
    results = train(hydra_run("train", [*BYOL_TINY, "baselines=[]"]))
    assert results["method"] == "BYOL" and results["encoder"] == "student"
    assert 0.0 <= results["metrics"]["knn/top1@20"] <= 1.0
    metrics_csv = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "train/tau" in metrics_csv and "train/projection_std_epoch" in metrics_csv
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)["state_dict"]
    assert any(key.startswith("teacher_ema.backbone.") for key in state)
    assert any(key.startswith("teacher_ema.projector.") for key in state)

    evaluate(hydra_run("eval", [f"ckpt_path={last}", "eval.encoder=teacher", *EVAL_TINY]))
    evaluated = json.loads((tmp_path / "results.json").read_text())
    assert evaluated["encoder"] == "teacher"
    assert evaluated["protocol"]["features"].startswith("teacher")


def _logged_taus(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return {
            int(r["step"]): float(r["train/tau"])
            for r in csv.DictReader(handle)
            if r.get("train/tau")
        }


def test_resumed_run_continues_the_momentum_schedule(
    hydra_run, tmp_path: Path, monkeypatch
) -> None:
    # 128 images in batches of 32: 4 optimiser steps per epoch, 8 in the 2-epoch run.
    quick = [*BYOL_TINY, "method.tau_base=0.9", "baselines=[]", "eval.linear.epochs=1"]
    original = StoreConfig.on_train_epoch_start

    def crash_in_second_epoch(self, trainer, module) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("preempted")
        original(self, trainer, module)

    monkeypatch.setattr(StoreConfig, "on_train_epoch_start", crash_in_second_epoch, raising=False)
    with pytest.raises(RuntimeError, match="preempted"):
        train(hydra_run("train", [*quick, "trainer.max_epochs=2"]))
    first = _logged_taus(tmp_path)
    assert first == pytest.approx({k: momentum_schedule(k, 8, 0.9) for k in range(4)}, abs=1e-6)
    monkeypatch.undo()

    train(hydra_run("train", [*quick, "trainer.max_epochs=2"]))
    resumed = {k: tau for k, tau in _logged_taus(tmp_path).items() if k >= 4}
    expected = {k: momentum_schedule(k, 8, 0.9) for k in range(4, 8)}
    assert resumed == pytest.approx(expected, abs=1e-6)


def test_presets_use_byol_and_the_study_budget() -> None:
    for data in ("synthetic", "fashion_mnist", "cifar10"):
        backbone = "convnet" if data == "synthetic" else "resnet18"
        cfg = compose_config("train", [f"experiment=byol_{backbone}_{data}"])
        assert cfg.method._target_ == "sslkit.methods.BYOL"
        # The synthetic shapes need views that take colour away (augment=shapes, symmetric).
        views = "simclr_views" if data == "synthetic" else "byol_views"
        assert cfg.augment._target_ == f"sslkit.augment.{views}"
    study = compose_config("train", ["experiment=byol_resnet18_fashion_mnist"])
    assert study.backbone.depth == 18 and study.data.batch_size == 256
    assert study.trainer.max_epochs == 10 and study.seed == 0
    assert study.method.tau_base == pytest.approx(0.99)
