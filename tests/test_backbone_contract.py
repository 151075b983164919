"""Every backbone option keeps the ``Backbone`` contract, discovered from ``conf/backbone/``.

A new backbone (its module and its ``conf/backbone/<name>.yaml``) is tested here without a test
edit: built from its YAML for 1 and 3 input channels, it maps inputs of its dimensionality to a
feature map ``(B, feature_dim, size / output_stride, ...)`` and pooled features
``(B, feature_dim)``, every trainable weight gets a gradient, and a method trains a step on it.
"""

from __future__ import annotations

import functools
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from sslkit.config import config_dir
from sslkit.methods import SimCLR
from sslkit.models import Backbone
from tests.conftest import compose_config

BACKBONES = sorted(path.stem for path in (Path(config_dir()) / "backbone").glob("*.yaml"))
#: Input side (and depth of volumes and clips) of the shape check and of the training step: the
#: smallest multiple of the backbone's output stride from these (a ViT takes no other sizes).
SIZE, STEP_SIZE = 32, 16


def side(backbone: Backbone, at_least: int) -> int:
    return -(-at_least // backbone.output_stride) * backbone.output_stride


@functools.cache
def backbone_config(name: str):
    return compose_config("train", [f"backbone={name}"]).backbone


def build(name: str, in_channels: int) -> Backbone:
    torch.manual_seed(0)
    return instantiate(backbone_config(name), in_channels=in_channels)


def inputs(backbone: Backbone, batch: int = 2, at_least: int = SIZE) -> torch.Tensor:
    size = side(backbone, at_least)
    depth = (size // 2,) if backbone.spatial_dims == 3 else ()
    return torch.rand(batch, backbone.in_channels, *depth, size, size)


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_backbone_option_gives_the_map_and_features_it_declares(name: str, in_channels: int):
    with torch.device("meta"):  # shapes only, at no compute cost
        backbone = build(name, in_channels)
        assert isinstance(backbone, Backbone), f"{name}: {type(backbone)} is not a Backbone"
        assert backbone.in_channels == in_channels
        assert backbone.spatial_dims in (2, 3)
        images = inputs(backbone)
        feature_map = backbone.forward_spatial(images)
        assert feature_map.ndim == images.ndim
        assert feature_map.shape[:2] == (2, backbone.feature_dim)
        size = images.shape[-1]
        assert feature_map.shape[-2:] == (size // backbone.output_stride,) * 2, (
            f"{name}: a {size} px input gives a {tuple(feature_map.shape[-2:])} map, not "
            f"{size} / output_stride={backbone.output_stride}"
        )
        assert backbone(images).shape == (2, backbone.feature_dim)


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_weight_learns_through_a_method_step(name: str):
    backbone = build(name, 3)
    method = SimCLR(
        backbone,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        projection_dim=8,
        hidden_dim=16,
        batch_size=3,
    )
    views = [inputs(backbone, 3, STEP_SIZE), inputs(backbone, 3, STEP_SIZE)]  # small: real compute
    loss = method.training_step((views, torch.zeros(3, dtype=torch.long)), 0)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [
        n
        for n, p in backbone.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not missing, f"{name}: no gradient reaches {missing}"
