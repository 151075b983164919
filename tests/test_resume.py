"""A run resumes only from a checkpoint written by the same config; other checkpoints are kept."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch

from sslkit.build import StoreConfig
from sslkit.run.resume import CONFIG_HASH_KEY, config_hash
from sslkit.train import train
from tests.conftest import TINY

RUN = [*TINY, "baselines=[]"]


def trained_epochs(run_dir: Path) -> list[int]:
    """Epoch of every logged training step in the run's CSV log (continued by a resumed run)."""
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return sorted(
            int(row["epoch"]) for row in csv.DictReader(handle) if row.get("train/loss_step")
        )


def test_config_hash_ignores_only_what_does_not_change_training(hydra_run) -> None:
    base = config_hash(hydra_run("train", TINY))
    same_training = [
        "resume=false",
        "logger=none",
        "eval.knn.k=[5]",
        "baselines=[]",
        "objective=linear/top1",
    ]
    assert config_hash(hydra_run("train", [*TINY, *same_training])) == base
    for override in ("seed=1", "method.temperature=0.2", "trainer.max_epochs=2", "optim.lr=0.1"):
        assert config_hash(hydra_run("train", [*TINY, override])) != base, override


def test_resumes_only_from_a_checkpoint_of_the_same_config(
    hydra_run, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sslkit.run.resume")
    checkpoints = tmp_path / "checkpoints"
    train(hydra_run("train", RUN))
    finished = torch.load(checkpoints / "last.ckpt", weights_only=False)
    steps_logged = trained_epochs(tmp_path)
    assert finished[CONFIG_HASH_KEY] == config_hash(hydra_run("train", RUN))

    # The same job launched again (a requeue) continues where it stopped: nothing to train.
    train(hydra_run("train", RUN))
    resumed = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert "resuming from" in caplog.text
    assert resumed["global_step"] == finished["global_step"] > 0
    assert trained_epochs(tmp_path) == steps_logged, "a finished run is not trained again"

    other = [*RUN, "method.temperature=0.2"]
    caplog.clear()
    train(hydra_run("train", other))
    assert "written by another config" in caplog.text
    kept = torch.load(
        tmp_path / f"checkpoints.{resumed[CONFIG_HASH_KEY]}" / "last.ckpt", weights_only=False
    )
    assert kept["global_step"] == resumed["global_step"]
    assert kept[CONFIG_HASH_KEY] == resumed[CONFIG_HASH_KEY]
    fresh = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert fresh[CONFIG_HASH_KEY] == config_hash(hydra_run("train", other))
    assert set(trained_epochs(tmp_path)) == {0}
    assert len(trained_epochs(tmp_path)) == len(steps_logged), "the fresh run has its own log"


def test_resume_false_starts_over_and_keeps_the_old_checkpoints(hydra_run, tmp_path: Path) -> None:
    train(hydra_run("train", RUN))
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    steps_logged = trained_epochs(tmp_path)
    train(hydra_run("train", [*RUN, "resume=false"]))
    kept = torch.load(
        tmp_path / f"checkpoints.{first[CONFIG_HASH_KEY]}" / "last.ckpt", weights_only=False
    )
    assert kept["state_dict"].keys() == first["state_dict"].keys()
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in first["state_dict"].items())
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert trained_epochs(tmp_path) == steps_logged, "the fresh run has its own log"
    assert (tmp_path / f"csv.{first[CONFIG_HASH_KEY]}" / "metrics.csv").is_file()


def test_interrupted_run_resumes_and_keeps_its_curves(
    hydra_run, tmp_path: Path, monkeypatch
) -> None:
    cfg = [*RUN, "trainer.max_epochs=2"]
    original = StoreConfig.on_train_epoch_start

    def crash_in_second_epoch(self, trainer, module) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("node lost")
        original(self, trainer, module)

    monkeypatch.setattr(StoreConfig, "on_train_epoch_start", crash_in_second_epoch, raising=False)
    with pytest.raises(RuntimeError, match="node lost"):
        train(hydra_run("train", cfg))
    interrupted = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert interrupted["epoch"] == 0
    monkeypatch.undo()

    train(hydra_run("train", cfg))
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * interrupted["global_step"]
    assert set(trained_epochs(tmp_path)) == {0, 1}, "the first part's curve survives the resume"
