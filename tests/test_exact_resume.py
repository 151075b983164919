"""A run killed with SIGKILL and launched again ends exactly where the uninterrupted run ends;
a run of every method stopped mid-epoch and launched again ends exactly like one never stopped."""

from __future__ import annotations

import csv
import json
import signal
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from sslkit.data.sampling import EpochSampler
from sslkit.run.resume import RandomState
from sslkit.train import train
from tests.conftest import (
    TINY,
    TINY_DATA,
    compose_config,
    method_names,
    missing_preset_message,
    preset_choices,
    presets_of,
    run_cli,
    tiny_overrides,
)

# 4 steps per epoch, a step checkpoint every 3 steps: checkpoints after steps 3 (mid-epoch 0),
# 4 (end of epoch 0), 6 (mid-epoch 1) and 8 (end).
RUN = [
    *TINY,
    "data.source.num_train=256",
    "data.batch_size=64",
    "trainer.max_epochs=2",
    "checkpoint_every_n_steps=3",
    "baselines=[]",
]

# sslkit-train whose process kills itself with SIGKILL when a given optimiser step has ended,
# before that step's checkpoint (Lightning runs checkpoint callbacks last).
KILLED_TRAIN = """
import os, signal, sys
import sslkit.train as train
from sslkit.run.resume import RandomState

kill_at = int(sys.argv.pop(1))

def kill(self, trainer, module, outputs, batch, batch_idx):
    if trainer.global_step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

RandomState.on_train_batch_end = kill
train.main()
"""


def train_into(run_dir: Path, kill_at: int | None = None) -> str:
    command = [sys.executable, "-m", "sslkit.train"]
    if kill_at is not None:
        command = [sys.executable, "-c", KILLED_TRAIN, str(kill_at)]
    done = run_cli([*command, *RUN, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    if kill_at is not None:
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    else:
        assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    train_into(run_dir)
    return run_dir


def trained_steps(run_dir: Path) -> list[int]:
    """The optimiser steps in the run's CSV log, which a resumed run continues."""
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return sorted(int(row["step"]) for row in csv.DictReader(handle) if row["train/loss_step"])


def final_state(run_dir: Path) -> tuple[dict, dict]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    results = json.loads((run_dir / "results.json").read_text())
    return checkpoint["state_dict"], results["metrics"]


@pytest.mark.parametrize(
    ("kill_at", "resumes_at"),
    [(7, "mid-epoch step 6"), (5, "end of epoch 0")],
)
def test_killed_run_relaunched_ends_like_the_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path, kill_at: int, resumes_at: str
) -> None:
    run_dir = tmp_path / "killed"
    train_into(run_dir, kill_at=kill_at)
    assert not (run_dir / "results.json").exists()
    resumed_step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed_step["global_step"] == kill_at - 1, resumes_at

    output = train_into(run_dir)
    assert "resuming from" in output
    assert not list(tmp_path.glob("killed/checkpoints.*")), "the checkpoints were not set aside"
    assert trained_steps(run_dir) == list(range(8)), "no step was trained twice"

    weights, metrics = final_state(run_dir)
    expected_weights, expected_metrics = final_state(uninterrupted)
    assert weights.keys() == expected_weights.keys()
    for name, value in expected_weights.items():
        assert torch.equal(weights[name], value), name
    assert metrics == expected_metrics


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    data = range(10)
    sampler = EpochSampler(data, seed=3)
    torch.manual_seed(123)
    first = list(sampler)
    torch.manual_seed(456)
    assert list(sampler) == first, "the global random state does not change the order"
    assert sorted(first) == list(data)
    sampler.set_epoch(1)
    assert list(sampler) != first
    other = EpochSampler(data, seed=3)
    other.resume_at(1, 4)
    assert list(other) == list(sampler)[4:], "a resumed epoch skips what was consumed"
    assert list(other) == list(sampler), "only the resumed epoch is shortened"


# ------------------------------------------------------------------- every method, in-process
#
# Each method's preset on 2-D generated data, on 64 images in batches of 16 (4 steps per epoch)
# for 2 epochs with a checkpoint after every step: trained straight through, and stopped by an
# error after step 6 (its checkpoint not written, so the run resumes from step 5, mid-epoch 1)
# and launched again. Both runs must end with the same weights, buffers and teacher, bit for bit.
METHOD_RUN = [
    *TINY_DATA["synthetic"],
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "checkpoint_every_n_steps=1",
    "logger=none",
    "eval=knn",
    "eval.knn.k=[5]",
    "eval.plots=false",
    "baselines=[]",
]
STEPS = 8
STOP_AT = 6


class Stopped(RuntimeError):
    """Raised inside a training run to interrupt it."""


def resume_preset(method: str) -> str:
    """The method's preset on 2-D generated data (its labelled variants aside: the shortest
    name), else its first on generated data."""
    presets = presets_of(method)
    if not presets:
        pytest.fail(missing_preset_message(method))
    images = [preset for preset in presets if preset_choices(preset)["data"] == "synthetic"]
    return min(images or presets, key=len)


def train_in(run_dir: Path, overrides: list[str]) -> dict:
    """``sslkit-train`` in this process with its run folder at ``run_dir``."""
    cfg = compose_config("train", overrides, run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return train(cfg)


def trained_to(run_dir: Path) -> int:
    """The optimiser steps in the run's ``last.ckpt``."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]


@pytest.mark.parametrize("method", method_names())
def test_every_method_resumed_mid_epoch_ends_like_the_uninterrupted_run(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = resume_preset(method)
    overrides = [f"experiment={preset}", *METHOD_RUN, *tiny_overrides(preset)]
    train_in(tmp_path / "straight", overrides)

    def stop(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == STOP_AT:
            raise Stopped(f"stopped after step {STOP_AT}")

    run_dir = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        # RandomState's hook runs before the step checkpoint (Lightning runs checkpoints last).
        patch.setattr(RandomState, "on_train_batch_end", stop, raising=False)
        with pytest.raises(Stopped):
            train_in(run_dir, overrides)
    assert trained_to(run_dir) == STOP_AT - 1
    train_in(run_dir, overrides)

    weights, metrics = final_state(run_dir)
    expected_weights, expected_metrics = final_state(tmp_path / "straight")
    assert trained_to(run_dir) == trained_to(tmp_path / "straight") == STEPS
    assert weights.keys() == expected_weights.keys()
    different = {
        name: (weights[name].double() - value.double()).abs().max().item()
        for name, value in expected_weights.items()
        if not torch.equal(weights[name], value)
    }
    if different:
        largest = max(different, key=different.get)
        pytest.fail(
            f"{method}: {len(different)} of {len(weights)} tensors differ after resuming, e.g. "
            f"{', '.join(list(different)[:3])}; the largest gap {different[largest]:.1e} in "
            f"{largest}"
        )
    assert metrics == expected_metrics
