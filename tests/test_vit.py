"""The ViT backbone: timm's architecture as built by its own constructor, inputs of any size
its patches divide, class-token or mean pooling, no weight decay on position embeddings and
class token, and one clear message for a patch size that does not fit the input."""

from __future__ import annotations

from functools import partial

import pytest
import timm
import torch

from sslkit.methods import SimCLR
from sslkit.models.vit import ViT
from sslkit.optim import parameter_groups
from tests.conftest import compose_config


def tiny_vit(**kwargs) -> ViT:
    torch.manual_seed(0)
    settings = {"image_size": 16, "patch_size": 4, "embed_dim": 24, "depth": 2, "num_heads": 3}
    return ViT(**(settings | kwargs)).eval()


def test_the_weights_load_into_timms_own_model_and_give_the_same_features() -> None:
    # The options' architecture is timm's named model: its state dict loads strictly into
    # timm.create_model (random weights, no download), and both compute the same class token.
    from hydra.utils import instantiate

    backbone = instantiate(compose_config("train", ["backbone=vit_tiny"]).backbone, in_channels=3)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    reference.load_state_dict(backbone.model.state_dict(), strict=True)
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(images), reference.eval()(images))


def test_inputs_of_another_size_get_resampled_position_embeddings() -> None:
    backbone = tiny_vit()
    with torch.no_grad():
        for side in (8, 16, 28):
            images = torch.rand(2, 3, side, side)
            assert backbone.forward_spatial(images).shape == (2, 24, side // 4, side // 4)
            assert backbone(images).shape == (2, 24)
        # At the grid it was built for, the embeddings are used as they are.
        tokens = backbone.tokens(torch.rand(1, 3, 16, 16))
    assert tokens.shape == (1, 1 + 16, 24)


def test_pooling_is_the_class_token_or_the_mean_of_the_patch_tokens() -> None:
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        cls = tiny_vit(pool="cls")
        torch.testing.assert_close(cls(images), cls.tokens(images)[:, 0])
        mean = tiny_vit(pool="mean")
        torch.testing.assert_close(mean(images), mean.forward_spatial(images).mean(dim=(2, 3)))
        assert not torch.allclose(cls(images), mean(images))


def test_position_embeddings_class_token_norms_and_biases_get_no_weight_decay() -> None:
    backbone = tiny_vit()
    decayed, exempt = parameter_groups([backbone], weight_decay=0.05)
    names = {id(p): n for n, p in backbone.named_parameters()}
    exempt_names = {names[id(p)] for p in exempt["params"]}
    assert {"model.pos_embed", "model.cls_token"} <= exempt_names
    assert all(names[id(p)].endswith("weight") for p in decayed["params"])
    assert not any("norm" in names[id(p)] for p in decayed["params"])
    assert "model.patch_embed.proj.weight" in {names[id(p)] for p in decayed["params"]}
    assert decayed["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0


def test_a_method_trains_on_it_at_the_views_size() -> None:
    backbone = tiny_vit().train()
    method = SimCLR(backbone, optimizer=partial(torch.optim.SGD, lr=0.1), batch_size=4)
    views = [torch.rand(4, 3, 12, 12), torch.rand(4, 3, 12, 12)]
    loss = method.training_step((views, torch.zeros(4, dtype=torch.long)), 0)
    loss.backward()
    assert torch.isfinite(loss) and backbone.model.pos_embed.grad.abs().sum() > 0


@pytest.mark.parametrize("side", [10, 30])
def test_a_patch_size_that_does_not_divide_the_input_stops_with_a_message(side: int) -> None:
    with pytest.raises(ValueError, match=rf"patch_size=4 does not divide the {side}x{side} input"):
        tiny_vit()(torch.rand(1, 3, side, side))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch_size": 7}, "patch_size=7 does not divide backbone.image_size=16"),
        ({"num_heads": 5}, "num_heads=5 must divide backbone.embed_dim=24"),
        ({"pool": "max"}, "backbone.pool must be one of"),
        ({"in_channels": 0}, "in_channels must be >= 1"),
    ],
)
def test_bad_settings_stop_with_a_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_vit(**kwargs)


def test_a_frozen_patch_projection_gets_no_gradient_and_stays_out_of_the_optimiser() -> None:
    backbone = tiny_vit(freeze_patch_embed=True).train()
    before = backbone.model.patch_embed.proj.weight.clone()
    method = SimCLR(backbone, optimizer=partial(torch.optim.SGD, lr=0.1), batch_size=4)
    views = [torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)]
    method.training_step((views, torch.zeros(4, dtype=torch.long)), 0).backward()
    assert backbone.model.patch_embed.proj.weight.grad is None
    assert backbone.model.pos_embed.grad.abs().sum() > 0
    optimised = {id(p) for group in parameter_groups([backbone], 0.05) for p in group["params"]}
    assert id(backbone.model.patch_embed.proj.weight) not in optimised
    torch.testing.assert_close(backbone.model.patch_embed.proj.weight, before)


def test_attention_maps_are_the_last_blocks_class_token_attention() -> None:
    backbone = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    maps = backbone.attention_maps(x)
    assert maps.shape == (2, 3, 4, 4)
    # timm's own attention weights, caught after its softmax (the unfused path).
    last = backbone.model.blocks[-1].attn
    last.fused_attn = False
    caught = []
    handle = last.attn_drop.register_forward_hook(lambda m, i, o: caught.append(o))
    backbone(x)
    handle.remove()
    expected = caught[0][:, :, 0, 1:].reshape(2, 3, 4, 4)
    torch.testing.assert_close(maps, expected)
    assert (maps.sum(dim=(2, 3)) < 1).all()
