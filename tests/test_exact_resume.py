"""A run killed with SIGKILL and launched again ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import csv
import json
import signal
import sys
from pathlib import Path

import pytest
import torch

from sslkit.data.sampling import EpochSampler
from tests.conftest import TINY, run_cli

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
