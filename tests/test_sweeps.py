"""Sweeps as a user runs them: local multiruns, failed jobs, Optuna, SLURM presets, submitit."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from sslkit.config import config_dir
from sslkit.report import main as report_main
from sslkit.run.failures import FAILED_FILE
from sslkit.run.jobs import run_and_report
from tests.conftest import BIN, TINY, compose_config, run_cli

FAST = [*TINY, "baselines=[]"]


def test_local_2x2_multirun_gives_4_run_folders_and_a_4_row_report(
    tiny_sweep: Path, tmp_path: Path, capsys
) -> None:
    jobs = sorted(p for p in tiny_sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    points = set()
    for job in jobs:
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        results = json.loads((job / "results.json").read_text())
        assert results["config"]["method"]["temperature"] == config["method"]["temperature"]
        points.add((config["method"]["temperature"], config["optim"]["lr"]))
    assert points == {(0.1, 0.1), (0.1, 0.3), (0.5, 0.1), (0.5, 0.3)}

    status = report_main([str(tiny_sweep), "--out", str(tmp_path), "--plot", "knn/top1@20"])
    assert status == 0
    markdown = capsys.readouterr().out
    assert markdown.splitlines()[0].startswith("| method.temperature | optim.lr | seeds |")
    expected = {}
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        point = (results["config"]["method"]["temperature"], results["config"]["optim"]["lr"])
        expected[point] = results["metrics"]["knn/top1@20"]
    with (tmp_path / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    for row in rows:
        point = (float(row["method.temperature"]), float(row["optim.lr"]))
        assert float(row["knn/top1@20_mean"]) == pytest.approx(expected[point])
        assert row["seeds"] == "0" and row["runs"] == "1" and row["knn/top1@20_std"] == ""
    assert (tmp_path / "report_knn_top1_20_vs_method.temperature.png").stat().st_size > 0


def test_report_module_runs_as_a_command(tiny_sweep: Path, tmp_path: Path) -> None:
    done = run_cli(
        [sys.executable, "-m", "sslkit.report", tiny_sweep, "--out", tmp_path], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n| 0.") == 4


@pytest.fixture
def multirun_job(tmp_path: Path) -> Iterator[Callable[[list[str]], DictConfig]]:
    """Compose a train config as job 0 of a multirun writing into tmp_path."""

    def make(overrides: list[str]) -> DictConfig:
        cfg = compose_config("train", overrides, tmp_path)
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN
            cfg.hydra.overrides.task = overrides
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg.hydra
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_failed_job_in_a_multirun_is_recorded_and_returns_no_objective(
    multirun_job, tmp_path: Path
) -> None:
    cfg = multirun_job(["method.temperature=0.3"])

    def job(_):
        raise RuntimeError("out of memory")

    assert run_and_report(cfg, job) is None
    failed = json.loads((tmp_path / FAILED_FILE).read_text())
    assert failed["error"] == "RuntimeError: out of memory"
    assert "raise RuntimeError" in failed["traceback"]
    assert failed["overrides"] == ["method.temperature=0.3"]
    assert failed["config"]["method"]["temperature"] == 0.3

    assert run_and_report(cfg, lambda _: {"metrics": {}}) == {"metrics": {}}
    assert not (tmp_path / FAILED_FILE).exists(), "a job that succeeds on retry is not failed"


def test_single_run_errors_still_stop_with_one_message(hydra_run) -> None:
    cfg = hydra_run("train", [])

    def job(_):
        raise ValueError("data.batch_size too large")

    with pytest.raises(SystemExit, match="error: data.batch_size too large"):
        run_and_report(cfg, job)


@pytest.mark.slow
def test_failing_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    done = run_cli(
        [
            BIN / "sslkit-train",
            "-m",
            *FAST,
            "eval.encoder=teacher,student",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "eval.encoder='teacher' is not offered by SimCLR" in log
    assert f"1 job(s) of {sweep} failed (the others ran): {sweep / '0'}" in log
    failed = json.loads((sweep / "0" / FAILED_FILE).read_text())
    assert failed["error"].startswith("ValueError: eval.encoder='teacher'")
    assert (sweep / "1" / "results.json").is_file()

    report = run_cli([sys.executable, "-m", "sslkit.report", sweep], cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Failed jobs (1):" in report.stdout
    assert f"`{sweep / '0'}`: ValueError: eval.encoder='teacher'" in report.stdout


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(config_dir()) / "sweep").glob("*")))
def test_sweep_presets_compose_as_multiruns(preset: str) -> None:
    cfg = compose_config("train", [f"sweep={preset}"])
    assert cfg.hydra.mode == RunMode.MULTIRUN
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params and all(isinstance(v, str) for v in params.values())
    if preset == "optuna":
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
        assert cfg.hydra.sweeper.direction == "maximize"
        assert cfg.hydra.sweeper.sampler.seed == cfg.seed
    else:
        assert "seed" in params


@pytest.mark.slow
def test_optuna_preset_runs_two_trials_on_the_final_metric(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    done = run_cli(
        [
            BIN / "sslkit-train",
            "sweep=optuna",
            "hydra.sweeper.n_trials=2",
            "optim.lr=tag(log,interval(0.05,0.5))",
            *FAST,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = [json.loads((sweep / str(i) / "results.json").read_text()) for i in (0, 1)]
    for trial in trials:
        assert 0.05 <= trial["config"]["optim"]["lr"] <= 0.5
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # The default objective: kNN top-1 at the first eval.knn.k (TINY's k=[5,20]).
    assert best["best_value"] == max(t["metrics"]["knn/top1@5"] for t in trials)


def test_slurm_presets_compose_with_local_cluster_settings(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / "default.yaml").write_text(
        "slurm:\n  partition: gpu-long\n  account: vision\n  timeout_min: 600\n"
    )
    search = f"hydra.searchpath=[file://{tmp_path}]"
    one_gpu = compose_config("train", ["hydra/launcher=slurm_1gpu", "trainer=gpu", search])
    launcher = OmegaConf.to_container(one_gpu.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == launcher["tasks_per_node"] == one_gpu.trainer.devices == 1
    assert (launcher["partition"], launcher["account"], launcher["timeout_min"]) == (
        "gpu-long",
        "vision",
        600,
    )
    assert launcher["max_num_timeout"] > 0, "a timed-out job is requeued and resumes"

    node = compose_config(
        "train", ["hydra/launcher=slurm_1node", "trainer=ddp", "trainer.devices=8", search]
    )
    launcher = OmegaConf.to_container(node.hydra.launcher, resolve=True)
    assert launcher["gpus_per_node"] == launcher["tasks_per_node"] == 8
    assert launcher["nodes"] == 1 and launcher["partition"] == "gpu-long"

    without_local = compose_config("train", ["hydra/launcher=slurm_1gpu"])
    launcher = OmegaConf.to_container(without_local.hydra.launcher, resolve=True)
    assert launcher["partition"] is None and launcher["timeout_min"] == 240


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    done = run_cli(
        [
            BIN / "sslkit-train",
            "-m",
            "hydra/launcher=submitit_local",
            *FAST,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert results["config"]["method"]["_target_"] == "sslkit.methods.SimCLR"
    assert {"knn/top1@5", "knn/top1@20", "linear/top1"} <= set(results["metrics"])
    assert list((sweep / ".submitit").rglob("*_result.pkl"))
