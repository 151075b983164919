"""Exporting an encoder: the state dict loads into torchvision's ResNet and timm's ViT of the
same architecture (with the changes the description lists) and gives the same features; the
command writes it from a checkpoint, with a clear message for an encoder the method lacks."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer

from sslkit.build import load_checkpoint, restore_method, stored_config
from sslkit.export import main
from sslkit.models import ConvNet, ResNet
from sslkit.models.vit import ViT


@pytest.mark.parametrize(
    "settings",
    [{"small_input": False}, {"small_input": True, "in_channels": 1}, {"last_stride": 1}],
    ids=["imagenet-stem", "small-stem-gray", "last-stride-1"],
)
def test_a_resnet_loads_into_torchvisions_model(settings: dict) -> None:
    torch.manual_seed(0)
    backbone = ResNet(depth=18, **settings).eval()
    state, description = backbone.export()
    assert description["constructor"] == "torchvision.models.resnet18"
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    changes = " ".join(description["changes"])
    if "conv1 = " in changes:  # the listed stem, built as the description says
        model.conv1 = torch.nn.Conv2d(backbone.in_channels, 64, 3, 1, 1, bias=False)
    if "maxpool" in changes:
        model.maxpool = torch.nn.Identity()
    if "layer4[0]" in changes:
        model.layer4[0].conv1.stride = model.layer4[0].downsample[0].stride = (1, 1)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.randn(2, backbone.in_channels, 32, 32)
    torch.testing.assert_close(model(x), backbone(x))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_a_vit_loads_strictly_into_timms_model(pool: str) -> None:
    torch.manual_seed(0)
    backbone = ViT(image_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=3, pool=pool)
    state, description = backbone.eval().export()
    model = VisionTransformer(**description["kwargs"])
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x), backbone(x))


def test_the_command_exports_a_checkpoints_encoder(tiny_run, tmp_path, capsys) -> None:
    ckpt = tiny_run.dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "encoder.pt"
    assert main([str(ckpt), "--out", str(out)]) == 0
    description = json.loads(out.with_suffix(".json").read_text())
    assert description["library"] == "sslkit" and description["method"] == "SimCLR"
    checkpoint = load_checkpoint(ckpt)
    method, _ = restore_method(stored_config(checkpoint), checkpoint, ckpt)
    encoder = ConvNet(**description["kwargs"])
    encoder.load_state_dict(torch.load(out), strict=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(encoder.eval()(x), method.backbone.eval()(x))

    assert main([str(ckpt), "--encoder", "teacher", "--out", str(out)]) == 2
    assert "SimCLR has no encoder 'teacher'; it has student" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.ckpt")]) == 2
