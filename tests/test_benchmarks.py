"""The throughput scripts under experiments/ keep working (tiny step counts, on the CPU).

Each script runs as ``__main__`` in this process (``run_script`` in conftest.py), which spares
the 6 s of imports a new interpreter would spend before the first step."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.conftest import EXPERIMENTS

#: Every method of the GPU script (make test-slow); make test runs a few of each kind.
GPU_METHODS = ("simclr", "byol", "supcon", "mocov2", "mocov3", "simsiam", "barlowtwins")
GPU_METHODS += ("vicreg", "nnclr", "dino", "swav", "simclr_vit")


@pytest.mark.integration
@pytest.mark.parametrize(
    "methods",
    [
        pytest.param(("mocov2", "dino", "swav", "simclr_vit"), id="some"),
        pytest.param(GPU_METHODS, id="all", marks=pytest.mark.slow),
    ],
)
def test_gpu_script_runs_on_the_cpu(run_script, methods):
    status, out, err = run_script(
        "throughput/gpu_throughput.py",
        *("--cpu", "--steps", "1", "--warmup", "1", "--batch", "8", "--methods", *methods),
    )
    assert status == 0, err[-3000:]
    assert out.startswith("CPU; batch 8; 1 timed steps after 1; 32-true\n"), out[:200]
    for method in methods:
        assert re.search(rf"^{method} \(\S+_resnet18_\S+.*\): [\d,]+ pairs/s, CPU$", out, re.M), out
    assert "backbone=resnet18 method.queue_size=32)" in out
    assert re.search(r"^simclr_vit \(simclr_resnet18_cifar10 backbone=vit_tiny ", out, re.M)


def test_gpu_script_asks_for_cpu_without_a_gpu(run_script, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, err = run_script("throughput/gpu_throughput.py")
    assert status == 2 and "pass --cpu" in err


@pytest.mark.integration
def test_throughput_benchmark_prints_every_row(run_script, tmp_path):
    figures = tmp_path / "figures.json"
    status, out, err = run_script(
        "throughput/bench_throughput.py",
        *("--steps", "1", "--warmup", "1", "--batch", "8", "--aug-seconds", "0.05"),
        *("--rounds", "2"),
        *("--backends", "batched", "--precisions", "bf16-mixed", "--json", str(figures)),
    )
    assert status == 0, err[-3000:]
    assert "reference loop" in out and "model step alone, bf16-mixed" in out
    assert "model step alone, bf16-mixed, contiguous" in out
    assert "sslkit simclr_resnet18_fashion_mnist backend=batched precision=bf16-mixed" in out
    assert "batched / lightly PIL at 28px gray" in out
    assert "batched / lightly PIL at 32px rgb multi-crop" in out
    assert "round 2: " in out  # every pretraining row ran in both rounds
    assert all(len(v) == 2 for v in json.loads(figures.read_text())["rounds"].values())


def test_throughput_benchmark_model_step_only(run_script):
    """``--model-step-only``: the model step in both weight layouts, nothing else."""
    status, out, err = run_script(
        "throughput/bench_throughput.py",
        *("--model-step-only", "--steps", "1", "--warmup", "1", "--batch", "4"),
        *("--rounds", "1", "--precisions", "32-true"),
    )
    assert status == 0, err[-3000:]
    assert "reference loop" not in out and "batched / lightly PIL" not in out
    for name in ("model step alone, 32-true ", "model step alone, 32-true, contiguous "):
        assert re.search(re.escape(name) + r"\s+\d+\s+-\s+\d+%", out), out


def test_throughput_benchmark_augmentation_only(run_script):
    status, out, err = run_script(
        "throughput/bench_throughput.py",
        *("--augmentation-only", "--batch", "4", "--aug-seconds", "0.01", "--rounds", "1"),
    )
    assert status == 0, err[-3000:]
    assert "reference loop" not in out
    for key in ("28px gray", "32px rgb", "28px gray multi-crop", "32px rgb multi-crop"):
        assert f"batched / lightly PIL at {key}: " in out, out


@pytest.mark.integration
def test_fit_preset_starts_from_the_configs_seed(monkeypatch):
    """The benchmarks' Lightning fit follows ``seed=`` (``bench_lightly_reference.py --seed``
    once trained sslkit's row from seed 0 whatever the seed, and only its reference moved)."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS / "throughput"))
    from bench_throughput import compose_preset, fit_preset

    def first_weights(seed: int) -> torch.Tensor:
        cfg = compose_preset(
            "simclr_convnet_synthetic",
            16,
            [f"seed={seed}", "data.source.num_train=32", "data.source.num_test=16",
             "data.num_workers=0", "backbone.widths=[8,16]"],
        )  # fmt: skip
        method, _ = fit_preset(cfg, max_steps=1)
        return next(method.backbone.parameters()).detach().clone()

    assert torch.equal(first_weights(1), first_weights(1))
    assert not torch.equal(first_weights(0), first_weights(1))
