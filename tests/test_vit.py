"""The ViT backbone: timm's architecture as built by its own constructor, inputs of any size
its patches divide, class-token or mean pooling, no weight decay on position embeddings and
class token, and one clear message for a patch size that does not fit the input."""

from __future__ import annotations

from functools import partial

import pytest
import timm
import torch

from sslkit.methods import SimCLR
from sslkit.methods.mae import MAE
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
        ({"init": "jax"}, "backbone.init must be one of"),
        ({"pos_embed": "rope"}, "backbone.pos_embed must be one of"),
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


def mae_sincos(row: int, column: int, dim: int) -> torch.Tensor:
    """MAE's 2-D sine-cosine embedding of the patch at ``(row, column)``: the first half of the
    channels encode the column, the second the row, each as sines then cosines of the
    coordinate at frequencies ``1 / 10000 ** (k / (dim / 4))``."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)

    def code(x: int) -> torch.Tensor:
        return torch.cat([torch.sin(x * omega), torch.cos(x * omega)])

    return torch.cat([code(column), code(row)]).float()


def test_sincos_position_embeddings_are_maes_formula_and_never_trained() -> None:
    backbone = tiny_vit(pos_embed="sincos").train()
    pos_embed = backbone.model.pos_embed
    assert not pos_embed.requires_grad
    torch.testing.assert_close(pos_embed[0, 0], torch.zeros(24))  # the class token's
    for index in range(16):
        row, column = divmod(index, 4)
        torch.testing.assert_close(pos_embed[0, 1 + index], mae_sincos(row, column, 24))
    before = pos_embed.detach().clone()
    method = SimCLR(backbone, optimizer=partial(torch.optim.SGD, lr=0.1), batch_size=4)
    views = [torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)]
    loss = method.training_step((views, torch.zeros(4, dtype=torch.long)), 0)
    (loss + backbone(torch.rand(2, 3, 8, 8)).sum()).backward()  # a resampled grid too
    assert pos_embed.grad is None
    optimised = {id(p) for group in parameter_groups([backbone], 0.05) for p in group["params"]}
    assert id(pos_embed) not in optimised
    torch.testing.assert_close(pos_embed.detach(), before)


def test_mae_init_is_xavier_uniform_with_zero_biases() -> None:
    backbone = tiny_vit(init="mae")
    linears = [m for m in backbone.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    for layer in [*linears, backbone.model.patch_embed.proj]:
        fan_out, fan_in = layer.weight.shape[0], layer.weight[0].numel()
        bound = (6.0 / (fan_in + fan_out)) ** 0.5  # Xavier-uniform's bound
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # uniform over the whole range
    for linear in linears:  # the patch projection keeps its default bias, as in MAE
        torch.testing.assert_close(linear.bias, torch.zeros_like(linear.bias))
    # timm's own initialisation is a truncated normal of std 0.02; Xavier's here is ~0.14
    assert tiny_vit().model.blocks[0].attn.qkv.weight.std() < 0.03
    assert backbone.model.blocks[0].attn.qkv.weight.std() > 0.1
    assert backbone.model.pos_embed.requires_grad  # the position embeddings are apart


def test_maes_decoder_with_maes_init_keeps_sincos_position_embeddings_fixed() -> None:
    torch.manual_seed(0)
    method = MAE(
        tiny_vit(init="mae", pos_embed="sincos").train(),
        decoder_width=16,
        decoder_depth=1,
        decoder_heads=2,
        decoder_init="mae",
        optimizer=partial(torch.optim.SGD, lr=0.1),
        batch_size=4,
    )
    decoder = method.decoder
    assert not decoder.pos_embed.requires_grad
    for index in range(16):
        row, column = divmod(index, 4)
        torch.testing.assert_close(decoder.pos_embed[0, 1 + index], mae_sincos(row, column, 16))
    views = [torch.rand(4, 3, 16, 16)]
    method.training_step((views, torch.zeros(4, dtype=torch.long)), 0).backward()
    assert decoder.pos_embed.grad is None and method.backbone.model.pos_embed.grad is None
    assert decoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    torch.testing.assert_close(decoder.predict.bias, torch.zeros_like(decoder.predict.bias))
    with pytest.raises(ValueError, match="method.decoder_init must be one of"):
        MAE(
            tiny_vit(),
            decoder_width=16,
            decoder_heads=2,
            decoder_init="xavier",
            optimizer=partial(torch.optim.SGD, lr=0.1),
            batch_size=4,
        )


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
