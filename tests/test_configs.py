"""Every preset composes, and mistakes in overrides fail while composing, with Hydra's message."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from sslkit.config import config_dir
from tests.conftest import compose_config

CONF = Path(config_dir())
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
GROUPS = ["data", "augment", "backbone", "method", "optim", "schedule", "trainer", "logger"]


def test_presets_exist() -> None:
    assert {
        "simclr_convnet_synthetic",
        "simclr_resnet18_fashion_mnist",
        "simclr_resnet18_cifar10",
    } <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset: str) -> None:
    cfg = compose_config("train", [f"experiment={preset}"])
    assert cfg.task_name == preset
    for group in GROUPS:
        assert group in cfg
    assert cfg.eval.knn.k == [20, 200]
    assert cfg.eval.knn.temperature == pytest.approx(0.07)
    assert cfg.eval.linear.epochs > 0


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(group: str) -> None:
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        compose_config("train", [f"{group}={option}"])


def test_eval_config_composes() -> None:
    cfg = compose_config("eval", ["ckpt_path=some.ckpt", "data=fashion_mnist"])
    assert cfg.ckpt_path == "some.ckpt"
    assert cfg.data.source._target_.endswith("FashionMNIST")


def test_eval_config_composes_a_bare_backbone() -> None:
    cfg = compose_config(
        "eval", ["backbone=resnet18", "data=cifar10", "eval.weights=ResNet18_Weights.DEFAULT"]
    )
    assert cfg.ckpt_path is None and cfg.backbone.depth == 18
    assert cfg.eval.weights == "ResNet18_Weights.DEFAULT" and cfg.eval.cache


def test_typo_in_override_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("train", ["method.temprature=0.1"])
    assert "temprature" in str(info.value)
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("train", ["eval.linear.label_fraction=[0.1]"])
    assert "label_fraction" in str(info.value)


@pytest.mark.parametrize(
    "override",
    [
        "data.batch_size=big",
        "trainer.max_epochs=ten",
        "optim.lr=fast",
        "eval.knn.temperature=warm",
        "seed=one",
        "eval.monitor_every=often",
        "eval.plots=maybe",
        "eval.linear.label_fractions=[some]",
        "eval.linear.lr_grid=fast",
    ],
)
def test_wrong_type_fails_at_compose_time(override: str) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigKeyError)) as info:
        compose_config("train", [override])
    assert override.split("=")[0].split(".")[-1] in str(info.value)


def test_unknown_group_option_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("train", ["method=simclrr"])
    assert "simclrr" in str(info.value)
