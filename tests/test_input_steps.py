"""The data steps every backbone gets: the input size and per-sample standardisation.

Both are data settings (``data.input_size``, ``data.standardize``), applied alike to the training
views and to the evaluation batches, so any 2-D backbone runs with any image preset; a backbone
whose dimensionality is not the data's stops with one message naming both.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from sslkit.build import build_datamodule, build_method, stored_config
from sslkit.config import config_dir
from sslkit.data.datamodule import standardize_samples
from tests.conftest import compose_config

CONF = Path(config_dir())
TINY = [
    "data.source.num_train=64",
    "data.source.num_test=32",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.num_workers=0",
]


@functools.cache
def _spatial_dims_of_backbone(option: str) -> int:
    cfg = compose_config("train", [f"backbone={option}"])
    return instantiate(cfg.backbone, in_channels=1).spatial_dims


def _preset_dims(preset: str) -> int:
    source = compose_config("train", [f"experiment={preset}"]).data.source._target_
    return getattr(get_object(source), "spatial_dims", 2)


BACKBONES = sorted(path.stem for path in (CONF / "backbone").glob("*.yaml"))
PRESETS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))


def _own_backbone_keys(preset: str) -> list[str]:
    """The ``backbone.*`` keys a preset sets (a ViT preset's depth): its backbone's, not
    another's."""
    node = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml").get("backbone") or {}
    return [f"backbone.{key}" for key in node]


@pytest.mark.integration  # about 60 compositions
@pytest.mark.parametrize("preset", PRESETS)
def test_every_image_preset_composes_with_the_convnet_and_the_resnet(preset: str) -> None:
    if _preset_dims(preset) != 2:
        pytest.skip("a preset of volumes or clips")
    if _own_backbone_keys(preset):
        pytest.skip(f"sets keys of its own backbone: {', '.join(_own_backbone_keys(preset))}")
    for backbone in ("convnet", "resnet18"):
        cfg = compose_config("train", [f"experiment={preset}", f"backbone={backbone}"])
        assert OmegaConf.select(cfg, "backbone._target_")


@pytest.mark.parametrize(
    "backbone", [name for name in BACKBONES if _spatial_dims_of_backbone(name) == 2]
)
def test_every_2d_backbone_composes_with_an_image_preset(backbone: str) -> None:
    cfg = compose_config("train", ["experiment=simclr_convnet_synthetic", f"backbone={backbone}"])
    assert OmegaConf.select(cfg, "backbone._target_")


@pytest.mark.parametrize(
    "overrides, wrong",
    [
        (["experiment=simclr_conv3d_synthetic_volumes", "backbone=convnet"], "ConvNet is a 2-D"),
        (["experiment=simclr_convnet_synthetic", "backbone=conv3d"], "ConvNet3d is a 3-D"),
    ],
)
def test_a_backbone_of_the_wrong_dimensionality_names_both(overrides, wrong) -> None:
    cfg = compose_config("train", [*overrides, *TINY])
    datamodule = build_datamodule(cfg)
    with pytest.raises(ValueError, match=wrong) as stop:
        build_method(cfg, datamodule)
    assert cfg.data.source._target_ in str(stop.value)


def _first_batches(overrides: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
    cfg = compose_config("train", ["experiment=simclr_convnet_synthetic", *TINY, *overrides])
    datamodule = build_datamodule(cfg)
    images, labels = next(iter(datamodule.train_dataloader()))
    views, _ = datamodule.on_after_batch_transfer((images, labels), 0)
    evaluation, _ = next(iter(datamodule.eval_dataloader("test")))
    return views, evaluation


@pytest.mark.parametrize("backend", ["batched", "pil"])
def test_input_size_resizes_training_views_and_evaluation_images(backend: str) -> None:
    views, evaluation = _first_batches(["data.input_size=32", f"augment.backend={backend}"])
    assert all(view.shape[-2:] == (32, 32) for view in views)
    assert evaluation.shape[-2:] == (32, 32)
    native, native_eval = _first_batches([f"augment.backend={backend}"])
    assert native[0].shape[-2:] == native_eval.shape[-2:] == (24, 24)  # the preset's shapes


def test_input_size_is_for_images_only() -> None:
    cfg = compose_config(
        "train", ["experiment=simclr_conv3d_synthetic_volumes", "data.input_size=16"]
    )
    with pytest.raises(Exception, match="data.source.image_size"):  # Hydra wraps it
        build_datamodule(cfg)


def _per_sample_moments(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = batch.flatten(1)
    return flat.mean(1), flat.std(1)


def test_standardize_z_scores_every_sample_in_training_and_evaluation() -> None:
    views, evaluation = _first_batches(["data.standardize=true"])
    for batch in (*views, evaluation):
        mean, std = _per_sample_moments(batch)
        assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
        assert torch.allclose(std, torch.ones_like(std), atol=1e-3)
    plain_views, plain_eval = _first_batches([])
    assert not torch.allclose(_per_sample_moments(plain_eval)[1], torch.ones(len(plain_eval)))


def test_the_raw_pixel_baseline_reads_pixels_without_standardize() -> None:
    cfg = compose_config("train", ["experiment=byol_convnet_synthetic", *TINY])
    assert cfg.data.standardize  # the preset's
    datamodule = build_datamodule(cfg)
    with datamodule.without_standardize():
        pixels, _ = next(iter(datamodule.eval_dataloader("test")))
    standardized, _ = next(iter(datamodule.eval_dataloader("test")))
    assert torch.allclose(standardize_samples(pixels), standardized, atol=1e-5)
    assert not torch.allclose(pixels, standardized)


def test_standardize_takes_intensity_level_and_contrast_away() -> None:
    x = torch.rand(4, 1, 6, 8, 8)
    assert torch.allclose(standardize_samples(x), standardize_samples(3 * x + 0.5), atol=1e-4)


def test_a_checkpoint_config_with_the_old_backbone_key_reads_as_data_standardize() -> None:
    old = {
        "backbone": {"_target_": "sslkit.models.ConvNet", "standardize_input": True},
        "data": {"_target_": "sslkit.data.SSLDataModule", "batch_size": 8},
        "logger": {"_target_": "sslkit.loggers.ResumableCSVLogger"},
    }
    config = stored_config({"sslkit_config": old})
    assert "standardize_input" not in config.backbone
    assert config.data.standardize is True
    assert config.logger._target_ == "sslkit.run.loggers.ResumableCSVLogger"  # the module moved
