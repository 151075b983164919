"""The console scripts as a user runs them: real processes, exit codes and messages. The catalogue
of bad inputs (test_bad_inputs.py) runs the same entry points in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import BIN
from tests.conftest import run_cli as run


def test_sslkit_train_then_eval_end_to_end(tiny_run, tmp_path: Path) -> None:
    assert "kNN@20" in tiny_run.stdout and "raw pixels" in tiny_run.stdout
    assert "random init" in tiny_run.stdout
    assert (tiny_run.dir / ".hydra" / "config.yaml").is_file()
    results = json.loads((tiny_run.dir / "results.json").read_text())

    run_dir = tiny_run.copy(tmp_path / "run")
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
    plots = {p.stem.split("_")[0] for p in (eval_dir / "plots").glob("*.png")}
    assert plots == {"confusion", "curves", "embedding", "retrieval"}


def test_module_entry_point_stops_with_one_clear_message(tmp_path: Path) -> None:
    done = run(
        [
            sys.executable,
            "-m",
            "sslkit.train",
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
