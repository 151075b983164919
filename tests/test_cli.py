"""The console scripts as a user runs them: real processes, exit codes and messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import BIN, TINY
from tests.conftest import run_cli as run


def test_sslkit_train_then_eval_end_to_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run([str(BIN / "sslkit-train"), *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert "kNN@20" in done.stdout and "raw pixels" in done.stdout and "random init" in done.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    eval_dir = tmp_path / "eval"
    done = run(
        [
            str(BIN / "sslkit-eval"),
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"hydra.run.dir={eval_dir}",
            "eval.knn.k=[5,20]",
            "eval.linear.epochs=5",
            "trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((eval_dir / "results.json").read_text())
    assert evaluated["metrics"] == results["metrics"]


def test_module_entry_point_reports_bad_override(tmp_path: Path) -> None:
    done = run([sys.executable, "-m", "sslkit.train", "method.temprature=0.1"], cwd=tmp_path)
    assert done.returncode != 0
    assert "temprature" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_dataset_is_one_clear_message(tmp_path: Path) -> None:
    done = run(
        [
            str(BIN / "sslkit-train"),
            "data=cifar10",
            f"data.source.root={tmp_path / 'nowhere'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert str(tmp_path / "nowhere") in done.stderr
    assert "download=true" in done.stderr
    assert "Traceback" not in done.stderr


def test_eval_refuses_missing_checkpoint(tmp_path: Path) -> None:
    done = run(
        [
            str(BIN / "sslkit-eval"),
            f"ckpt_path={tmp_path / 'none.ckpt'}",
            f"hydra.run.dir={tmp_path / 'e'}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "none.ckpt" in done.stderr and "does not exist" in done.stderr
