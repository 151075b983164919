"""W&B offline: each job's local run folder holds its config, curves, summary and images."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict
from PIL import Image

from sslkit.run.loggers import (
    finish_wandb,
    log_config,
    log_media,
    log_summary,
    wandb_logger,
    wandb_run_names,
)
from tests.conftest import BIN, TINY, compose_config, run_cli


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """W&B offline, with its settings and caches kept inside tmp_path."""
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(tmp_path / "wandb-home")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def no_hydra() -> Iterator[None]:
    HydraConfig.instance().cfg = None
    yield
    HydraConfig.instance().cfg = None


def wandb_records(run_dir: Path) -> dict[str, list[dict]]:
    """The records of the one offline W&B run below ``run_dir``, by record type."""
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    done = subprocess.run(
        [str(BIN / "wandb"), "leet", "inspect", "--json", str(run_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    records: dict[str, list[dict]] = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        records.setdefault(record["type"], []).append(record[record["type"]])
    return records


def merged(records: list[dict], field: str) -> dict:
    out: dict = {}
    for record in records:
        out.update(record[field])
    return out


def test_offline_run_holds_config_curves_summary_and_images(
    tmp_path: Path, offline, no_hydra
) -> None:
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "confusion.png")
    logger = wandb_logger(project="sslkit-test", save_dir=str(tmp_path), group="g", tags=["t"])
    log_config(logger, OmegaConf.create({"seed": 3, "method": {"temperature": 0.2}}))
    logger.log_metrics({"train/loss": 1.5}, step=0)
    log_summary(logger, {"knn/top1@20": 0.75})
    log_media(logger, tmp_path)
    finish_wandb()

    records = wandb_records(tmp_path)
    (run,) = records["run"]
    assert (run["run_group"], run["job_type"], run["tags"]) == ("g", "pretrain", ["t"])
    config = merged(records["config"], "update")
    assert config["seed"] == 3 and config["method"] == {"temperature": 0.2}
    history = [item["item"] for item in records["history"]]
    assert any(item.get("train/loss") == 1.5 for item in history)
    assert any(item.get("media/confusion.count") == 1 for item in history)
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/media/confusion_*.png"))
    assert merged(records["summary"], "update")["knn/top1@20"] == 0.75


def test_multirun_jobs_are_grouped_by_sweep_and_named_by_overrides(tmp_path: Path) -> None:
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "seed=1"], tmp_path)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(tmp_path / "multirun" / "2026-01-01_12-00-00")
        cfg.hydra.job.name = "evaluate"
        cfg.hydra.job.override_dirname = "seed=1"
    HydraConfig.instance().set_config(cfg)
    try:
        names = wandb_run_names("simclr_convnet_synthetic", None, None)
        assert names == ("simclr_convnet_synthetic/2026-01-01_12-00-00", "eval", "seed=1")
        assert wandb_run_names(None, "probe", "mine") == ("2026-01-01_12-00-00", "probe", "mine")
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.slow
def test_each_multirun_job_gets_its_own_offline_wandb_run(tmp_path: Path, offline) -> None:
    sweep = tmp_path / "multirun"
    done = run_cli(
        [
            BIN / "sslkit-train",
            "-m",
            *TINY,
            "logger=wandb",
            "baselines=[]",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=offline,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = set()
    for seed in (0, 1):
        records = wandb_records(sweep / str(seed))
        (run,) = records["run"]
        assert (run["run_group"], run["job_type"]) == ("pretrain/multirun", "pretrain")
        names.add(run["display_name"])
        config = merged(records["config"], "update")
        assert config["seed"] == seed and config["method"]["_target_"] == "sslkit.methods.SimCLR"
        assert any("train/loss_step" in item["item"] for item in records["history"])
        results = json.loads((sweep / str(seed) / "results.json").read_text())
        summary = merged(records["summary"], "update")
        assert summary["knn/top1@20"] == pytest.approx(results["metrics"]["knn/top1@20"])
    assert len(names) == 2 and all(f"seed={s}" in " ".join(names) for s in (0, 1))
