"""The throughput scripts under experiments/ keep working (tiny step counts, on the CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "throughput"


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXPERIMENTS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_gpu_script_runs_on_the_cpu():
    out = _run("gpu_throughput.py", "--cpu", "--steps", "1", "--warmup", "1", "--batch", "8")
    for preset in ("simclr_resnet18_cifar10", "byol_resnet18_cifar10"):
        assert f"{preset}: " in out and "pairs/s" in out


def test_gpu_script_asks_for_cpu_without_a_gpu():
    result = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "gpu_throughput.py")],
        capture_output=True,
        text=True,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": ""},
    )
    assert result.returncode == 2 and "pass --cpu" in result.stderr


def test_throughput_benchmark_prints_every_row(tmp_path):
    figures = tmp_path / "figures.json"
    out = _run(
        "bench_throughput.py",
        *("--steps", "1", "--warmup", "1", "--batch", "8", "--aug-seconds", "0.05"),
        *("--rounds", "2"),
        *("--backends", "batched", "--precisions", "bf16-mixed", "--json", str(figures)),
    )
    assert "reference loop" in out and "model step alone, bf16-mixed" in out
    assert "sslkit simclr_resnet18_fashion_mnist backend=batched precision=bf16-mixed" in out
    assert "batched / lightly PIL at 28px gray" in out
    assert "round 2: " in out  # every pretraining row ran in both rounds
    assert all(len(v) == 2 for v in json.loads(figures.read_text())["rounds"].values())
