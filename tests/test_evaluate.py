"""``sslkit-eval``: cached features, bare backbones, and checkpoints it must refuse."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import torchvision
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from sslkit.evaluate import evaluate
from sslkit.models import ConvNet, ResNet
from sslkit.models.backbones import load_torchvision_weights
from tests.conftest import TINY, compose_config

EVAL = ["eval.knn.k=[5,20]", "eval.linear.epochs=5", "eval.plots=false"]
DATA = [o for o in TINY if o.startswith("data")]


def _run(name: str, overrides: Sequence[str], output_dir: Path) -> dict:
    """``sslkit-eval`` (``name="eval"``) in this process, writing into ``output_dir``."""
    cfg = compose_config(name, overrides, output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    try:
        return evaluate(cfg)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of conftest's tiny run (the feature cache is written beside its checkpoint): its
    last checkpoint and results."""
    run_dir = tiny_run.copy(tmp_path_factory.mktemp("evaluate") / "run")
    results = json.loads((run_dir / "results.json").read_text())
    return run_dir / "checkpoints" / "last.ckpt", results


@pytest.fixture
def backbone_calls(monkeypatch) -> list[int]:
    """Counts the images the ConvNet backbone encodes."""
    calls: list[int] = []
    original = ConvNet.forward_spatial

    def counted(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(ConvNet, "forward_spatial", counted)
    return calls


def test_cached_features_are_reused_until_the_checkpoint_changes(trained, tmp_path, backbone_calls):
    checkpoint, training = trained
    args = [f"ckpt_path={checkpoint}", *EVAL]
    first = _run("eval", args, tmp_path / "first")
    assert sum(backbone_calls) == 128 + 64
    assert first["metrics"] == training["metrics"]
    cache = Path(first["feature_cache"]["file"])
    assert cache.parent == checkpoint.parent / "features" and cache.is_file()
    assert not first["feature_cache"]["reused"]

    backbone_calls.clear()
    second = _run("eval", [*args, "eval.linear.label_fractions=[0.5,1.0]"], tmp_path / "second")
    assert backbone_calls == []
    assert second["feature_cache"] == {"file": str(cache), "reused": True}
    assert {k: v for k, v in second["metrics"].items() if "@50%" not in k} == first["metrics"]
    assert "linear/top1@50%" in second["metrics"]

    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = _run("eval", args, tmp_path / "third")
    assert sum(backbone_calls) == 128 + 64
    assert third["feature_cache"]["file"] != str(cache) and not third["feature_cache"]["reused"]
    assert third["metrics"] == first["metrics"]

    backbone_calls.clear()
    other_data = _run("eval", [*args, *DATA, "data.source.num_test=32"], tmp_path / "data")
    assert sum(backbone_calls) == 128 + 32 and not other_data["feature_cache"]["reused"]

    uncached = _run("eval", [*args, "eval.cache=false"], tmp_path / "uncached")
    assert uncached["feature_cache"] is None


def test_bare_backbone_with_random_weights_is_the_random_init_baseline(trained, tmp_path):
    _, training = trained
    args = [*DATA, "backbone=convnet", "backbone.widths=[8,16]", "eval.weights=random", *EVAL]
    results = _run("eval", args, tmp_path)
    assert results["metrics"] == training["baselines"]["random_init"]
    assert results["method"] == "FrozenBackbone" and results["checkpoint"] is None
    assert results["protocol"]["features"] == "student backbone (random weights), pooled, frozen"
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == results["metrics"]


def test_nothing_to_evaluate_says_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="backbone=<name>, eval.weights=random"):
        _run("eval", [*DATA], tmp_path)


def test_checkpoint_of_another_backbone_is_refused(trained, tmp_path):
    checkpoint, _ = trained
    with pytest.raises(
        ValueError, match=r"holds a ConvNet \(16-d features.*configured backbone is a ResNet"
    ):
        _run("eval", [f"ckpt_path={checkpoint}", "backbone=resnet18", *EVAL], tmp_path)
    with pytest.raises(ValueError, match="eval.weights applies to backbone=<name> without"):
        _run("eval", [f"ckpt_path={checkpoint}", "eval.weights=random", *EVAL], tmp_path)


def test_torchvision_weights_are_copied_into_the_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18()
    file = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    file.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), file)

    rgb = load_torchvision_weights(ResNet(18, small_input=False), "ResNet18_Weights.IMAGENET1K_V1")
    torch.testing.assert_close(rgb.stem[0].weight, reference.conv1.weight)
    torch.testing.assert_close(rgb.stem[1].running_var, reference.bn1.running_var)
    torch.testing.assert_close(rgb.layers[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        reference.eval(), rgb.eval()
        pooled = reference.avgpool(
            reference.layer4(
                reference.layer3(
                    reference.layer2(
                        reference.layer1(
                            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
                        )
                    )
                )
            )
        ).flatten(1)
        torch.testing.assert_close(rgb(x), pooled)

    gray = load_torchvision_weights(
        ResNet(18, in_channels=1, small_input=False), "ResNet18_Weights.DEFAULT"
    )
    torch.testing.assert_close(gray.stem[0].weight, reference.conv1.weight.sum(1, keepdim=True))


@pytest.mark.parametrize(
    ("backbone", "name", "message"),
    [
        (
            lambda: ResNet(18, small_input=True),
            "ResNet18_Weights.IMAGENET1K_V1",
            "small_input=false",
        ),
        (lambda: ResNet(18, small_input=False), "ResNet50_Weights.IMAGENET1K_V1", "ResNet-18"),
        (lambda: ResNet(18, small_input=False), "ResNet18_Weights.NOPE", "unknown torchvision"),
        (lambda: ConvNet(widths=(8,)), "ResNet18_Weights.IMAGENET1K_V1", "ResNet backbones only"),
    ],
)
def test_unusable_torchvision_weights_are_refused(backbone, name, message):
    with pytest.raises(ValueError, match=message):
        load_torchvision_weights(backbone(), name)
