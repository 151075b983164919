"""MaskedInpainting: learns to fill holes, evaluates masked-region error, writes the image grid."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from pytorch_lightning.loggers import WandbLogger
from torch import nn

from sslkit.augment import MaskGenerator
from sslkit.build import build_datamodule, build_method
from sslkit.eval.inpainting import evaluate_inpainting
from sslkit.evaluate import evaluate
from sslkit.methods import MaskedInpainting
from sslkit.models import ConvNet, ConvNet3d
from sslkit.train import train
from tests.conftest import TINY, compose_config

INPAINTING = ["method=inpainting", "augment=inpainting", "optim=adamw", "baselines=[]"]


def _method(mode: str = "patches", mask_token: str = "learned", **kwargs) -> MaskedInpainting:
    torch.manual_seed(0)
    return MaskedInpainting(
        ConvNet(3, widths=[8, 16]),
        mask=MaskGenerator(mode, ratio=0.5, patch_size=4, seed=0),
        mask_token=mask_token,
        decoder_width=32,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        num_classes=0,
        **kwargs,
    )


@pytest.mark.parametrize("mode", ["patches", "block"])
def test_reconstruction_loss_drops_on_a_fixed_batch(mode):
    method = _method(mode)
    generator = torch.Generator().manual_seed(0)
    # Smooth images (upsampled noise), so hidden pixels are predictable from their context.
    images = nn.functional.interpolate(
        torch.randn(8, 3, 4, 4, generator=generator), size=(16, 16), mode="bilinear"
    )
    mask = method.mask_generator(images)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        prediction, _ = method.reconstruct(images, mask)
        loss = method.reconstruction_loss(prediction, images, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


def test_hidden_pixels_get_the_mask_value_and_a_learned_value_is_trained():
    images, mask = torch.randn(2, 3, 16, 16), MaskGenerator(seed=0)(torch.zeros(2, 3, 16, 16))
    learned, zero = _method(mask_token="learned"), _method(mask_token="zero")
    with torch.no_grad():
        learned.mask_token.value.copy_(torch.tensor([1.0, 2.0, 3.0]))
    filled = learned.mask_token(images, mask)
    hidden = mask.bool().expand_as(images)
    assert torch.equal(filled[~hidden], images[~hidden])
    assert torch.equal(filled[:, 2][hidden[:, 2]].unique(), torch.tensor([3.0]))
    assert torch.all(zero.mask_token(images, mask)[hidden] == 0)
    optimised = {
        id(p) for g in learned.configure_optimizers()["optimizer"].param_groups for p in g["params"]
    }
    assert id(learned.mask_token.value) in optimised
    assert not any(p is zero.mask_token.value for p in zero.parameters())


def test_training_step_needs_one_view():
    method = _method()
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    with pytest.raises(ValueError, match="needs 1 augmented view"):
        method.training_step((views, torch.zeros(4, dtype=torch.long)), 0)


def test_unknown_mask_token_is_refused():
    with pytest.raises(ValueError, match="mask_token must be one of"):
        _method(mask_token="noise")


class _PredictZero(nn.Module):
    """A decoder that predicts 0 (the dataset mean after normalisation) everywhere."""

    def forward(self, feature_map: torch.Tensor, size) -> torch.Tensor:
        return feature_map.new_zeros(feature_map.shape[0], 3, *size)


def test_inpainting_metrics_match_an_independent_computation(hydra_run, tmp_path: Path):
    cfg = hydra_run("train", [*TINY, *INPAINTING, "data.eval_batch_size=24"])
    datamodule = build_datamodule(cfg)
    method = build_method(cfg, datamodule)
    method.decoder = _PredictZero()
    metrics = evaluate_inpainting(method, datamodule, tmp_path, torch.device("cpu"))

    # Reference: every hidden pixel becomes the dataset mean; errors in [0, 1] pixel space.
    mean = np.asarray(datamodule.mean).reshape(-1, 1, 1)
    std = np.asarray(datamodule.std).reshape(-1, 1, 1)
    masks = MaskGenerator("patches", ratio=cfg.method.mask.ratio, patch_size=4, seed=0)
    errors, counts = [], []
    for images, _ in datamodule.eval_dataloader("test"):
        for image, mask in zip(images.numpy(), masks(images).numpy(), strict=True):
            pixels = np.clip(image * std + mean, 0, 1)
            hidden = np.broadcast_to(mask.astype(bool), pixels.shape)
            squared = (np.clip(mean, 0, 1) - pixels) ** 2
            errors.append(squared[hidden].sum())
            counts.append(hidden.sum())
    errors, counts = np.asarray(errors), np.asarray(counts)
    assert metrics["inpainting/masked_mse"] == pytest.approx(errors.sum() / counts.sum(), rel=1e-5)
    assert metrics["inpainting/psnr"] == pytest.approx(
        np.mean(10 * np.log10(counts / errors)), rel=1e-5
    )
    again = evaluate_inpainting(method, datamodule, tmp_path / "again", torch.device("cpu"))
    assert again == metrics


def test_smoke_fit_writes_metrics_and_grid_and_checkpoint_evaluates_alike(
    hydra_run, tmp_path, monkeypatch
):
    logged = []
    monkeypatch.setattr(WandbLogger, "log_image", lambda self, **kw: logged.append(kw))
    cfg = hydra_run(
        "train",
        [*TINY, *INPAINTING, "method.mask.mode=block", "logger=wandb", "logger.mode=disabled"],
    )
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == "MaskedInpainting"
    metrics = results["metrics"]
    assert {"inpainting/masked_mse", "inpainting/psnr", "knn/top1@5", "linear/top1"} <= set(metrics)
    assert math.isfinite(metrics["inpainting/masked_mse"]) and math.isfinite(
        metrics["inpainting/psnr"]
    )
    grid = Image.open(tmp_path / "reconstructions.png")
    # 8 columns x 3 rows of 16 px images enlarged to 64 px, 2 px padding.
    assert grid.size == (8 * 66 + 2, 3 * 66 + 2)
    assert logged == [
        {"key": "media/reconstructions", "images": [str(tmp_path / "reconstructions.png")]}
    ]

    (tmp_path / "reconstructions.png").unlink()
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    evaluated = evaluate(
        hydra_run("eval", [f"ckpt_path={checkpoint}", "eval.knn.k=[5,20]", "eval.linear.epochs=5"])
    )
    assert evaluated["metrics"] == results["metrics"]
    assert (tmp_path / "reconstructions.png").is_file()


def test_presets_compose_and_block_mode_is_one_override():
    for preset, backbone in [
        ("inpainting_convnet_synthetic", "ConvNet"),
        ("inpainting_resnet18_fashion_mnist", "ResNet"),
    ]:
        cfg = compose_config("train", [f"experiment={preset}", "method.mask.mode=block"])
        assert cfg.method._target_ == "sslkit.methods.MaskedInpainting"
        assert cfg.backbone._target_.endswith(backbone)
        assert instantiate(cfg.method.mask).mode == "block"
        views = instantiate(cfg.augment)(image_size=28, mean=(0.5,), std=(0.25,), in_channels=1)
        assert [v.shape for v in views(Image.new("L", (28, 28)))] == [(1, 28, 28)]
    cfg = compose_config("train", ["experiment=inpainting_resnet18_fashion_mnist"])
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.seed) == (256, 10, 0)
    assert cfg.method.mask.mode == "patches"


def test_hog_target_trains_on_cells_predicts_no_pixels_and_skips_the_pixel_evaluation():
    method = _method(target="hog", hog_bins=6)
    generator = torch.Generator().manual_seed(0)
    images = nn.functional.interpolate(
        torch.randn(8, 3, 4, 4, generator=generator), size=(16, 16), mode="bilinear"
    )
    mask = method.mask_generator(images)
    prediction, _ = method.reconstruct(images, mask)
    assert prediction.shape == (8, 6, 16, 16)
    loss = method.reconstruction_loss(prediction, images, mask)
    loss.backward()
    assert loss.item() > 0 and all(p.grad is not None for p in method.backbone.parameters())
    assert not method.reconstructs_pixels and _method().reconstructs_pixels
    with pytest.raises(ValueError, match="predicts no pixels"):
        method.inpaint(images, mask)
    from sslkit.evaluation import model_measurements

    assert model_measurements(method, None, Path("unused"), torch.device("cpu")) == {}


def test_hog_target_refuses_norm_pix_and_unknown_targets():
    with pytest.raises(ValueError, match="target must be one of"):
        _method(target="edges")
    with pytest.raises(ValueError, match="norm_pix=false"):
        _method(target="hog", norm_pix=True)
    with pytest.raises(ValueError, match="for volumes and clips use method.target=pixels"):
        MaskedInpainting(
            ConvNet3d(1, widths=[8, 16]),
            target="hog",
            optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
            num_classes=0,
        )
