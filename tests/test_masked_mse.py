"""masked_mse: hand-computed values, visible pixels ignored, MAE's norm_pix loss as reference."""

from __future__ import annotations

import pytest
import torch

from sslkit.losses import masked_mse


def _batch(seed: int = 0, shape=(3, 2, 8, 8)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pred = torch.randn(*shape, generator=generator, dtype=torch.float64)
    target = torch.randn(*shape, generator=generator, dtype=torch.float64)
    mask = (torch.rand(shape[0], 1, *shape[2:], generator=generator) < 0.4).double()
    return pred, target, mask


def test_equals_hand_computation():
    # One image, 2 channels, 2x2 pixels; hidden: top-left and bottom-right.
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    target = torch.tensor([[[[0.0, 9.0], [9.0, 1.0]], [[1.0, 9.0], [9.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # Hidden squared errors: channel 0: 1, 9; channel 1: 1, 4 -> 15 over 2 pixels x 2 channels.
    assert masked_mse(pred, target, mask).item() == pytest.approx(15 / 4)


def test_equals_mean_over_hidden_pixels_of_channel_mean_error():
    pred, target, mask = _batch()
    per_pixel = ((pred - target) ** 2).mean(dim=1)
    expected = per_pixel[mask[:, 0].bool()].mean()
    torch.testing.assert_close(masked_mse(pred, target, mask), expected)


def test_visible_pixels_neither_count_nor_get_gradient():
    pred, target, mask = _batch(1)
    pred.requires_grad_(True)
    loss = masked_mse(pred, target, mask)
    loss.backward()
    visible = (mask == 0).expand_as(pred)
    assert torch.all(pred.grad[visible] == 0)
    assert torch.all(pred.grad[~visible] != 0)
    changed = pred.detach() + 100.0 * visible
    torch.testing.assert_close(masked_mse(changed, target, mask), loss.detach())


def test_reduction_none_gives_each_image_its_own_loss():
    pred, target, mask = _batch(2)
    per_image = masked_mse(pred, target, mask, reduction="none")
    expected = torch.stack(
        [masked_mse(pred[i : i + 1], target[i : i + 1], mask[i : i + 1]) for i in range(3)]
    )
    torch.testing.assert_close(per_image, expected)


def test_nothing_hidden_gives_zero():
    pred, target, mask = _batch(3)
    assert masked_mse(pred, target, torch.zeros_like(mask)).item() == 0.0


def _mae_norm_pix_loss(pred, target, patch_mask, p):
    """MAE's forward_loss (He et al. 2021) on patchified images, patch mask (B, L), 1 = hidden."""

    def patchify(images):
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)

    target = patchify(target)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((patchify(pred) - target) ** 2).mean(dim=-1)
    return (loss * patch_mask).sum() / patch_mask.sum()


def test_norm_pix_matches_mae_on_patch_masks():
    pred, target, _ = _batch(4, shape=(2, 3, 8, 8))
    p = 4
    patch_mask = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    pixel_mask = patch_mask.view(2, 1, 2, 2).repeat_interleave(p, 2).repeat_interleave(p, 3)
    ours = masked_mse(pred, target, pixel_mask, norm_pix=True, patch_size=p)
    torch.testing.assert_close(ours, _mae_norm_pix_loss(pred, target, patch_mask, p))


@pytest.mark.parametrize(
    ("kwargs", "mask_shape", "message"),
    [
        ({}, (3, 2, 8, 8), r"mask of shape \(3, 1, 8, 8\)"),
        ({"norm_pix": True}, (3, 1, 8, 8), "needs the patch_size"),
        ({"norm_pix": True, "patch_size": 3}, (3, 1, 8, 8), "cannot be cut into 3x3 patches"),
        ({"reduction": "sum"}, (3, 1, 8, 8), "reduction must be one of"),
    ],
)
def test_misuse_is_refused_with_a_clear_message(kwargs, mask_shape, message):
    pred, target, _ = _batch()
    with pytest.raises(ValueError, match=message):
        masked_mse(pred, target, torch.ones(mask_shape, dtype=pred.dtype), **kwargs)
