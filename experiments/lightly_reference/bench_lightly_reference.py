"""sslkit's presets against minimal loops written from lightly's own examples, method by method.

For each method, on Fashion-MNIST (28 px grayscale; when it is not installed, the synthetic
grayscale shapes of ``experiments/throughput``), at equal epochs and batch, in one process:

- reference: a plain PyTorch loop written from lightly's example of the method
  (``examples/pytorch/<method>.py`` in lightly's repository: its heads, loss, memory bank and
  momentum helpers, its transform class with the example's settings at ``input_size=28``), PIL
  views in one DataLoader worker, fp32, on the preset's ResNet-18 (built from sslkit's backbone
  config, in torchvision's default contiguous weight layout as lightly's examples have it, where
  sslkit's is channels-last; ``--reference-channels-last`` gives it sslkit's) with the preset's optimiser, learning rate and schedule, so that only the
  implementation differs;
- sslkit: the preset ``<method>_resnet18_fashion_mnist`` through Lightning with
  ``trainer.max_epochs=<epochs>`` (supcon: ``simclr_resnet18_fashion_mnist method.positives=labels``;
  mae: ``mae_vit_fashion_mnist``, whose evaluation also fine-tunes on 10 % of the labels).

Every row starts from the same seed (``--seed``, 0 by default: a second seed tells a gap from
seed noise) and reports the images per second of its pretraining (the training
loop's wall time, evaluation excluded); then the pooled backbone features of both encoders go
through sslkit's own evaluation (``sslkit.evaluation.evaluate_encoder`` with the preset's eval
config: weighted kNN, k = 20 reported, and the linear probe) on the test images.

    python experiments/lightly_reference/bench_lightly_reference.py [--epochs 1] [--methods ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightly.loss import (
    BarlowTwinsLoss,
    DINOLoss,
    NegativeCosineSimilarity,
    NTXentLoss,
    VICRegLoss,
)
from lightly.models.modules import (
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    DINOProjectionHead,
    MaskedVisionTransformerDecoderTIMM,
    MaskedVisionTransformerTIMM,
    MoCoProjectionHead,
    NNCLRPredictionHead,
    NNCLRProjectionHead,
    NNMemoryBankModule,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
)
from lightly.models.modules.heads import VICRegProjectionHead
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from lightly.models.utils import (
    deactivate_requires_grad,
    get_at_index,
    patchify,
    random_token_mask,
    set_at_index,
    update_momentum,
)
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    DINOTransform,
    MAETransform,
    MoCoV2Transform,
    SimCLRTransform,
    SimSiamTransform,
    VICRegTransform,
)
from lightly.utils.scheduler import cosine_schedule
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from sslkit.build import build_backbone, build_datamodule, resolve_device
from sslkit.data import (
    SHAPE_NAMES,
    ArrayDataset,
    DatasetSource,
    LabelledDataset,
    TransformedDataset,
)
from sslkit.data.sources.base import channel_stats, check_split
from sslkit.eval.cache import evaluation_encoder
from sslkit.evaluation import add_finetune_result, evaluate_encoder
from sslkit.methods.base import NonFiniteLossError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "throughput"))
from bench_throughput import (  # noqa: E402
    Timer,
    compose_preset,
    cpu_name,
    fashion_mnist_or_synthetic,
    fit_preset,
)

METHODS = (
    "simclr",
    "byol",
    "mocov2",
    "mocov2_single",
    "simsiam",
    "barlowtwins",
    "vicreg",
    "nnclr",
    "supcon",
    "dino",
    "mae",
)
#: Presets that are not ``<method>_resnet18_fashion_mnist``, with the overrides they need.
PRESETS = {
    "supcon": ("simclr_resnet18_fashion_mnist", ("method.positives=labels",)),
    # MoCo v2 with the single-order loss of its own recipe and of lightly's example (one query
    # and one key pass per image) against the same reference loop.
    "mocov2_single": ("mocov2_resnet18_fashion_mnist", ("method.symmetric=false",)),
    # MAE on the ViT, judged as masked modelling is: fine-tuned on 10 % of the labels as well.
    "mae": (
        "mae_vit_fashion_mnist",
        ("eval=[knn,linear,finetune]", "eval.finetune.label_fractions=[0.1]"),
    ),
}
#: Method keys holding embeddings of past batches (MoCo's queue, NNCLR's support set).
BANK_KEYS = ("queue_size", "support_set_size")
#: Fashion-MNIST's split sizes, also those of the synthetic stand-in.
FULL_SIZES = {"train": 60_000, "test": 10_000}
KNN_KEY, LINEAR_KEY = "knn/top1@20", "linear/top1"
#: The fine-tuning metric compared where a preset's evaluation fine-tunes (MAE).
FINETUNE_KEY = "finetune/top1@10%"
INPUT_SIZE = 28


# ------------------------------------------------------------------------------------- data


class GrayShapes(DatasetSource):
    """The synthetic grayscale shapes that ``fashion_mnist_or_synthetic`` draws when
    Fashion-MNIST is not installed, split into train and test: one draw of both splits' sizes,
    whose first ``num_train`` images are the train split."""

    name = "synthetic grayscale shapes"
    num_classes = 10
    in_channels = 1
    image_size = INPUT_SIZE
    class_names = list(SHAPE_NAMES[:10])

    def __init__(self, images: ArrayDataset, num_train: int) -> None:
        targets = list(images.targets)
        self.splits = {
            "train": ArrayDataset(images.images[:num_train], targets[:num_train]),
            "test": ArrayDataset(images.images[num_train:], targets[num_train:]),
        }
        self.mean, self.std = channel_stats(images.images[:num_train, None])

    def build(self, split: str) -> LabelledDataset:
        return self.splits[check_split(split)]


def load_data(limit_train: int | None, limit_test: int | None) -> DatasetSource | None:
    """None when Fashion-MNIST is installed (the presets' own data), else the synthetic shapes
    of ``fashion_mnist_or_synthetic`` as a source of both splits (the limits' sizes or
    Fashion-MNIST's)."""
    num_train = limit_train or FULL_SIZES["train"]
    images, name = fashion_mnist_or_synthetic(num_train + (limit_test or FULL_SIZES["test"]))
    return None if name == "fashion_mnist" else GrayShapes(images, num_train)


def build_data(cfg: DictConfig, source: DatasetSource | None) -> pl.LightningDataModule:
    """The preset's data module, on ``source`` instead of its own dataset when one is given."""
    if source is None:
        return build_datamodule(cfg)
    settings = OmegaConf.to_container(cfg.data, resolve=True)  # without the schema of its source
    del settings["source"]
    return instantiate(settings, source=source, augment=instantiate(cfg.augment))


def fitted_size(size: int, train_size: int, batch: int) -> int:
    """A queue or support set of whole batches that holds no image twice: the largest multiple
    of ``batch`` that is at most ``size`` and the training set (at least one batch)."""
    return max(batch, min(size, train_size) // batch * batch)


# ------------------------------------------------------------------------ lightly's recipes


@dataclass
class Setting:
    """What every recipe takes from the run: the preset's backbone, the views' normalisation
    (the dataset's statistics, as sslkit's evaluation feeds the encoder), the number of
    optimiser steps, and the size a memory bank of the example gets on this training set."""

    backbone: nn.Module
    normalize: dict[str, list[float]]
    total_steps: int
    bank_size: Callable[[int], int]
    steps_per_epoch: int = 1
    method: dict[str, Any] = field(default_factory=dict)  # the preset's method settings

    @property
    def dim(self) -> int:
        return self.backbone.feature_dim


@dataclass
class Recipe:
    """One method's reference: its views of a PIL image, every module it trains or keeps (heads,
    momentum copies, memory banks), and the loss of a batch ``(views, labels, step)``."""

    transform: Callable[[Any], list[Tensor]]
    model: nn.Module
    loss: Callable[[list[Tensor], Tensor, int], Tensor]
    after_backward: Callable[[int], None] | None = None  # called with the step's index


def _momentum_copies(*modules: nn.Module) -> list[nn.Module]:
    copies = [copy.deepcopy(module) for module in modules]
    for module in copies:
        deactivate_requires_grad(module)
    return copies


def _momentum_step(pairs: Sequence[tuple[nn.Module, nn.Module]], step: int, total: int) -> None:
    """lightly's cosine rise of the momentum from 0.996 to 1, per step rather than per epoch (a
    per-epoch value is 1 throughout a one-epoch run, which would freeze the momentum copy)."""
    momentum = cosine_schedule(step, total, 0.996, 1.0)
    for online, target in pairs:
        update_momentum(online, target, m=momentum)


def _byol_views(s: Setting) -> BYOLTransform:
    """BYOL's two asymmetric views without blur, as lightly's BYOL and Barlow Twins examples."""
    return BYOLTransform(
        view_1_transform=BYOLView1Transform(
            input_size=INPUT_SIZE, gaussian_blur=0.0, normalize=s.normalize
        ),
        view_2_transform=BYOLView2Transform(
            input_size=INPUT_SIZE, gaussian_blur=0.0, normalize=s.normalize
        ),
    )


def _simclr_loop(s: Setting, contrast: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Recipe:
    """The SimCLR example's model and views; ``contrast(z0, z1, labels)`` is its loss."""
    head = SimCLRProjectionHead(s.dim, 512, 128)

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        z0, z1 = (head(s.backbone(x)) for x in views)
        return contrast(z0, z1, labels)

    transform = SimCLRTransform(input_size=INPUT_SIZE, gaussian_blur=0.0, normalize=s.normalize)
    return Recipe(transform, nn.ModuleList([s.backbone, head]), loss)


def simclr(s: Setting) -> Recipe:
    """examples/pytorch/simclr.py: SimCLRProjectionHead(512, 512, 128), NTXentLoss() (temperature
    0.5), SimCLRTransform without blur; each view through the model on its own."""
    criterion = NTXentLoss()
    return _simclr_loop(s, lambda z0, z1, labels: criterion(z0, z1))


def supervised_contrastive(z0: Tensor, z1: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """SupCon (Khosla et al. 2020, L_out) of two views: for each of the 2N anchors, minus the mean
    over its positives (every other view of its class) of the log-softmax of the cosine
    similarities / temperature over every other view, averaged over the anchors."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    classes = labels.repeat(2)
    itself = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = (z @ z.T / temperature).masked_fill(itself, float("-inf")).log_softmax(dim=1)
    positive = (classes[:, None] == classes[None, :]) & ~itself
    return -(torch.where(positive, log_prob, 0.0).sum(dim=1) / positive.sum(dim=1)).mean()


def supcon(s: Setting) -> Recipe:
    """The SimCLR example with NTXentLoss replaced by :func:`supervised_contrastive` at the same
    temperature, 0.5 (lightly has no SupCon loss)."""
    return _simclr_loop(s, lambda z0, z1, labels: supervised_contrastive(z0, z1, labels, 0.5))


def byol(s: Setting) -> Recipe:
    """examples/pytorch/byol.py: BYOLProjectionHead(512, 1024, 256), BYOLPredictionHead(256,
    1024, 256), momentum copies of backbone and projection head moved by update_momentum
    before each step, NegativeCosineSimilarity symmetrised, BYOLTransform without blur."""
    head, predictor = BYOLProjectionHead(s.dim, 1024, 256), BYOLPredictionHead(256, 1024, 256)
    backbone_m, head_m = _momentum_copies(s.backbone, head)
    criterion = NegativeCosineSimilarity()

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        _momentum_step([(s.backbone, backbone_m), (head, head_m)], step, s.total_steps)
        p0, p1 = (predictor(head(s.backbone(x))) for x in views)
        z0, z1 = (head_m(backbone_m(x)).detach() for x in views)
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

    model = nn.ModuleList([s.backbone, head, predictor, backbone_m, head_m])
    return Recipe(_byol_views(s), model, loss)


def mocov2(s: Setting) -> Recipe:
    """examples/pytorch/moco.py: MoCoProjectionHead(512, 512, 128), momentum copies moved by
    update_momentum before each step, NTXentLoss with a memory bank of 4096 keys (temperature
    0.5; the keys of the second view enter it), MoCoV2Transform with its default blur."""
    head = MoCoProjectionHead(s.dim, 512, 128)
    backbone_m, head_m = _momentum_copies(s.backbone, head)
    criterion = NTXentLoss(memory_bank_size=(s.bank_size(4096), 128))

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        _momentum_step([(s.backbone, backbone_m), (head, head_m)], step, s.total_steps)
        x_query, x_key = views
        return criterion(head(s.backbone(x_query)), head_m(backbone_m(x_key)).detach())

    model = nn.ModuleList([s.backbone, head, backbone_m, head_m, criterion])
    return Recipe(MoCoV2Transform(input_size=INPUT_SIZE, normalize=s.normalize), model, loss)


def simsiam(s: Setting) -> Recipe:
    """examples/pytorch/simsiam.py: SimSiamProjectionHead(512, 512, 128),
    SimSiamPredictionHead(128, 64, 128), NegativeCosineSimilarity against the other view's
    stop-gradient projection, symmetrised, SimSiamTransform with its default blur."""
    head, predictor = SimSiamProjectionHead(s.dim, 512, 128), SimSiamPredictionHead(128, 64, 128)
    criterion = NegativeCosineSimilarity()

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        z0, z1 = (head(s.backbone(x)) for x in views)
        p0, p1 = predictor(z0), predictor(z1)
        return 0.5 * (criterion(z0.detach(), p1) + criterion(z1.detach(), p0))

    transform = SimSiamTransform(input_size=INPUT_SIZE, normalize=s.normalize)
    return Recipe(transform, nn.ModuleList([s.backbone, head, predictor]), loss)


def barlowtwins(s: Setting) -> Recipe:
    """examples/pytorch/barlowtwins.py: BarlowTwinsProjectionHead(512, 2048, 2048),
    BarlowTwinsLoss() (lambda 5e-3), BYOLTransform without blur."""
    head = BarlowTwinsProjectionHead(s.dim, 2048, 2048)
    criterion = BarlowTwinsLoss()

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        return criterion(*(head(s.backbone(x)) for x in views))

    return Recipe(_byol_views(s), nn.ModuleList([s.backbone, head]), loss)


def vicreg(s: Setting) -> Recipe:
    """examples/pytorch/vicreg.py: VICRegProjectionHead(512, 2048, 2048, num_layers=2),
    VICRegLoss() (25 / 25 / 1), VICRegTransform with its default blur and solarisation."""
    head = VICRegProjectionHead(input_dim=s.dim, hidden_dim=2048, output_dim=2048, num_layers=2)
    criterion = VICRegLoss()

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        return criterion(*(head(s.backbone(x)) for x in views))

    transform = VICRegTransform(input_size=INPUT_SIZE, normalize=s.normalize)
    return Recipe(transform, nn.ModuleList([s.backbone, head]), loss)


def nnclr(s: Setting) -> Recipe:
    """examples/pytorch/nnclr.py: NNCLRProjectionHead(512, 512, 128), NNCLRPredictionHead(128,
    512, 128), NNMemoryBankModule of 4096 projections (the second view's enter it), NTXentLoss()
    (temperature 0.5) between neighbours and predictions, symmetrised, SimCLRTransform with its
    default blur."""
    head, predictor = NNCLRProjectionHead(s.dim, 512, 128), NNCLRPredictionHead(128, 512, 128)
    memory_bank = NNMemoryBankModule(size=(s.bank_size(4096), 128))
    criterion = NTXentLoss()

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        z0, z1 = (head(s.backbone(x)) for x in views)
        p0, p1 = predictor(z0), predictor(z1)
        n0 = memory_bank(z0.detach(), update=False)
        n1 = memory_bank(z1.detach(), update=True)
        return 0.5 * (criterion(n0, p1) + criterion(n1, p0))

    model = nn.ModuleList([s.backbone, head, predictor, memory_bank])
    return Recipe(SimCLRTransform(input_size=INPUT_SIZE, normalize=s.normalize), model, loss)


def dino(s: Setting) -> Recipe:
    """examples/pytorch/dino.py: DINOProjectionHead(512, 512, 64, 2048, freeze_last_layer=1) for
    the student, a fresh one for the teacher (as the example), momentum copies of the backbone,
    DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=5), the last layer's gradients cancelled
    in the first epoch, DINOTransform at 28 / 12 px (two global, six local crops; its blur and
    solarisation kept); the global crops to the teacher, every crop to the student."""
    head = DINOProjectionHead(s.dim, 512, 64, 2048, freeze_last_layer=1)
    teacher_backbone = _momentum_copies(s.backbone)[0]
    teacher_head = DINOProjectionHead(s.dim, 512, 64, 2048)
    deactivate_requires_grad(teacher_head)
    criterion = DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=5)

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        _momentum_step([(s.backbone, teacher_backbone), (head, teacher_head)], step, s.total_steps)
        with torch.no_grad():
            teacher_out = [teacher_head(teacher_backbone(x)) for x in views[:2]]
        student_out = [head(s.backbone(x)) for x in views]
        return criterion(teacher_out, student_out, epoch=step // s.steps_per_epoch)

    def after_backward(step: int) -> None:
        head.cancel_last_layer_gradients(current_epoch=step // s.steps_per_epoch)

    transform = DINOTransform(
        global_crop_size=INPUT_SIZE, local_crop_size=12, normalize=s.normalize
    )
    model = nn.ModuleList([s.backbone, head, teacher_backbone, teacher_head, criterion])
    return Recipe(transform, model, loss, after_backward)


def mae(s: Setting) -> Recipe:
    """examples/pytorch/mae.py: the ViT wrapped in ``MaskedVisionTransformerTIMM`` (its weight
    and fixed sine-cosine position-embedding initialisation), ``random_token_mask`` at the
    preset's ratio, the visible tokens through the encoder, a linear embedding into
    ``MaskedVisionTransformerDecoderTIMM``, a linear prediction of each hidden patch's pixels,
    ``nn.MSELoss`` against the patches of the view (``patchify``), ``MAETransform`` at 28 px. The
    decoder has the preset's width, depth and heads (the example's 512 wide, one block of 16
    heads would cost more than the 192-wide encoder on four visible tokens, and the speed
    comparison is of the implementations)."""
    vit = s.backbone.model
    width, patch = s.method["decoder_width"], s.backbone.patch_size
    encoder = MaskedVisionTransformerTIMM(vit=vit)
    decoder_embed = nn.Linear(vit.embed_dim, width)
    decoder = MaskedVisionTransformerDecoderTIMM(
        num_patches=vit.patch_embed.num_patches,
        embed_dim=width,
        depth=s.method["decoder_depth"],
        num_heads=s.method["decoder_heads"],
        num_prefix_tokens=vit.num_prefix_tokens,
    )
    prediction = nn.Linear(width, patch * patch * s.backbone.in_channels)
    decoder_embed.apply(init_weights)
    prediction.apply(init_weights)
    criterion = nn.MSELoss()

    def loss(views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        images = views[0]
        batch = images.shape[0]
        idx_keep, idx_mask = random_token_mask(
            size=(batch, encoder.sequence_length),
            mask_ratio=s.method["mask_ratio"],
            device=images.device,
        )
        tokens = decoder_embed(encoder.encode(images=images, idx_keep=idx_keep))
        full = tokens.new_zeros(batch, encoder.sequence_length, tokens.shape[-1])
        decoded = decoder(set_at_index(full, idx_keep, tokens), idx_mask=idx_mask)
        predicted = prediction(get_at_index(decoded, idx_mask))
        target = get_at_index(patchify(images, patch), idx_mask - 1)  # no class token there
        return criterion(predicted, target)

    transform = MAETransform(input_size=INPUT_SIZE, normalize=s.normalize)
    model = nn.ModuleList([s.backbone, encoder, decoder_embed, decoder, prediction])
    return Recipe(transform, model, loss)


RECIPES: dict[str, Callable[[Setting], Recipe]] = {
    "simclr": simclr,
    "byol": byol,
    "mocov2": mocov2,
    "mocov2_single": mocov2,
    "simsiam": simsiam,
    "barlowtwins": barlowtwins,
    "vicreg": vicreg,
    "nnclr": nnclr,
    "supcon": supcon,
    "dino": dino,
    "mae": mae,
}


# ---------------------------------------------------------------------------------- the runs


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (the DataLoader worker derives its own)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reference_backbone_config(cfg: DictConfig, channels_last: bool) -> DictConfig:
    """The preset's config with its backbone in the weight layout the reference runs in:
    torchvision's default (contiguous), as lightly's examples build their ResNets, unless
    ``channels_last`` (``--reference-channels-last``) gives it sslkit's channels-last layout."""
    if "channels_last" not in cfg.backbone:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.backbone.channels_last = channels_last
    return cfg


def train_reference(
    method: str,
    cfg: DictConfig,
    datamodule: Any,
    *,
    epochs: int,
    batch: int,
    device: torch.device,
    seed: int = 0,
    channels_last: bool = False,
) -> tuple[nn.Module, int, float]:
    """Train lightly's recipe of ``method`` from ``seed`` on the data module's train split in a
    plain loop (PIL views in one DataLoader worker, fp32) with the preset's optimiser, learning
    rate scaled by batch / 256 as sslkit scales it, and schedule stepped per optimiser step;
    returns the backbone, the images trained on and the loop's wall time."""
    seed_everything(seed)
    backbone = build_backbone(reference_backbone_config(cfg, channels_last), datamodule.in_channels)
    train = datamodule.dataset("train")
    steps_per_epoch = len(train) // batch
    setting = Setting(
        backbone=backbone,
        normalize={"mean": list(datamodule.mean), "std": list(datamodule.std)},
        total_steps=epochs * steps_per_epoch,
        bank_size=lambda size: fitted_size(size, len(train), batch),
        steps_per_epoch=steps_per_epoch,
        method=OmegaConf.to_container(cfg.method, resolve=True),
    )
    recipe = RECIPES[method](setting)
    model = recipe.model.to(device)
    views = TransformedDataset(train, recipe.transform)
    loader = DataLoader(views, batch_size=batch, shuffle=True, drop_last=True, num_workers=1)
    optimizer = instantiate(cfg.optim)(model.parameters(), lr=cfg.optim.lr * batch / 256)
    schedule = None
    if cfg.get("schedule"):
        schedule = instantiate(cfg.schedule)(
            optimizer, total_steps=setting.total_steps, steps_per_epoch=steps_per_epoch
        )
    step = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch_views, labels in loader:
            loss = recipe.loss([x.to(device) for x in batch_views], labels.to(device), step)
            loss.backward()
            if recipe.after_backward is not None:
                recipe.after_backward(step)
            optimizer.step()
            optimizer.zero_grad()
            if schedule is not None:
                schedule.step()
            step += 1
    return backbone, step * batch, time.perf_counter() - start


def train_sslkit(cfg: DictConfig, datamodule: Any, batch: int) -> tuple[nn.Module, int, float]:
    """Train the preset through Lightning from its ``seed`` (``fit_preset``, as the throughput
    benchmark does); returns its evaluation encoder (``eval.encoder``), the images trained on
    and the training's wall time."""
    timer = Timer(warmup=0)
    method, _ = fit_preset(cfg, [timer], datamodule=datamodule)
    encoder = evaluation_encoder(method, cfg.eval.encoder)
    return encoder, timer.steps * batch, timer.stop - timer.start


def evaluate(
    encoder: nn.Module, datamodule: Any, cfg: DictConfig, device: torch.device
) -> dict[str, float]:
    """The metrics of sslkit's evaluation of ``encoder`` with the preset's eval config (its kNN
    and linear-probe protocols on the data module's train and test splits, and its fine-tuning
    where the config has one); an encoder with non-finite features (a diverged run) gets NaN for
    every metric."""
    try:
        result = evaluate_encoder(encoder, datamodule, cfg.eval, device)
    except ValueError as error:
        if "NaN/inf features" not in str(error):
            raise
        print(f"  diverged: {error}")
        return dict.fromkeys(compared_keys(cfg), math.nan)
    add_finetune_result(result, encoder, datamodule, cfg.eval, device)
    return result.metrics


def compared_keys(cfg: DictConfig) -> list[str]:
    """The metrics the two rows are compared on: kNN@20, linear top-1, and fine-tuned top-1 on
    10 % of the labels where the preset's evaluation fine-tunes."""
    return [KNN_KEY, LINEAR_KEY, *([FINETUNE_KEY] if cfg.eval.get("finetune") else [])]


def run_method(method: str, args: argparse.Namespace, source: DatasetSource | None) -> list[dict]:
    """The reference and sslkit rows of ``method``: training speed and evaluation metrics."""
    preset, extra = PRESETS.get(method, (f"{method}_resnet18_fashion_mnist", ()))
    overrides = [f"trainer.max_epochs={args.epochs}", f"seed={args.seed}", *extra]
    overrides += [f"data.max_train={args.limit_train}"] if args.limit_train else []
    overrides += [f"data.max_test={args.limit_test}"] if args.limit_test else []
    cfg = compose_preset(preset, args.batch, overrides)
    # --eval settings of the protocols this preset runs (both rows share cfg.eval)
    evals = [o for o in args.eval if OmegaConf.select(cfg, o.split("=")[0].rsplit(".", 1)[0])]
    if evals:
        overrides += evals
        cfg = compose_preset(preset, args.batch, overrides)
    datamodule = build_data(cfg, source)
    datamodule.setup("fit")
    train_size = len(datamodule.dataset("train"))
    if train_size < args.batch:
        raise SystemExit(
            f"the train split has {train_size} images, fewer than one batch of {args.batch}: "
            "raise --limit-train or lower --batch"
        )
    sizes = {key: cfg.method[key] for key in BANK_KEYS if key in cfg.method}
    fits = {key: fitted_size(size, train_size, args.batch) for key, size in sizes.items()}
    fitted = [f"method.{key}={fits[key]}" for key in fits if fits[key] != sizes[key]]
    if fitted:
        print(f"{method}: {' '.join(fitted)} (fitted to {train_size} training images)")
        cfg = compose_preset(preset, args.batch, [*overrides, *fitted])
    train_device = torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") else "cpu")
    eval_device = resolve_device(cfg.eval.device, train_device)
    rows = []
    for implementation in ("reference", "sslkit"):
        print(f"{method} {implementation}: pretraining {args.epochs} epoch(s) ...", flush=True)
        try:
            if implementation == "reference":
                encoder, images, seconds = train_reference(
                    method,
                    cfg,
                    datamodule,
                    epochs=args.epochs,
                    batch=args.batch,
                    device=train_device,
                    seed=args.seed,
                    channels_last=args.reference_channels_last,
                )
            else:
                encoder, images, seconds = train_sslkit(cfg, datamodule, args.batch)
            metrics = evaluate(encoder, datamodule, cfg, eval_device)
        except NonFiniteLossError as error:
            print(f"  diverged: {error}")
            images, seconds = 0, math.nan
            metrics = dict.fromkeys(compared_keys(cfg), math.nan)
        row = {
            "method": method,
            "implementation": implementation,
            "preset": " ".join([preset, *extra, *fitted]),
            "seed": args.seed,
            "images": images,
            "train_s": seconds,
            "images_per_s": images / seconds if images else math.nan,
            "knn_top1@20": metrics[KNN_KEY],
            "linear_top1": metrics[LINEAR_KEY],
            "metrics": metrics,
        }
        finetune = ""
        if FINETUNE_KEY in compared_keys(cfg):
            row["finetune_top1@10%"] = metrics[FINETUNE_KEY]
            finetune = f", fine-tuned top-1 (10 % of labels) {_percent(metrics[FINETUNE_KEY])}"
        rows.append(row)
        print(
            f"  {images} images in {seconds:.1f} s; kNN@20 {_percent(metrics[KNN_KEY])}, "
            f"linear top-1 {_percent(metrics[LINEAR_KEY])}{finetune}",
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------- the report


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def comparison(rows: list[dict]) -> dict[str, dict]:
    """Per method: sslkit's images/s over the reference's, and whether sslkit's kNN@20 and
    linear top-1 (and fine-tuned top-1 on 10 % of the labels, where both rows have it) are at
    least the reference's."""
    by = {(row["method"], row["implementation"]): row for row in rows}
    result = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        reference, ours = by[(method, "reference")], by[(method, "sslkit")]
        result[method] = {
            "speed_ratio": ours["images_per_s"] / reference["images_per_s"],
            "knn_matches": bool(ours["knn_top1@20"] >= reference["knn_top1@20"]),
            "linear_matches": bool(ours["linear_top1"] >= reference["linear_top1"]),
        }
        if "finetune_top1@10%" in ours and "finetune_top1@10%" in reference:
            result[method]["finetune_matches"] = bool(
                ours["finetune_top1@10%"] >= reference["finetune_top1@10%"]
            )
    return result


def print_report(rows: list[dict], compared: dict[str, dict]) -> None:
    """The table of every row, then each method's comparison."""
    tuned = any("finetune_top1@10%" in row for row in rows)
    print(
        f"\n{'method':<12} {'implementation':<14} {'images/s':>8} {'kNN@20':>7} {'linear top-1':>12}"
        + (f" {'fine-tune@10%':>13}" if tuned else "")
    )
    for row in rows:
        speed = "-" if math.isnan(row["images_per_s"]) else f"{row['images_per_s']:.0f}"
        finetune = ""
        if "finetune_top1@10%" in row:
            finetune = f" {_percent(row['finetune_top1@10%']):>13}"
        print(
            f"{row['method']:<12} {row['implementation']:<14} {speed:>8} "
            f"{_percent(row['knn_top1@20']):>7} {_percent(row['linear_top1']):>12}{finetune}"
        )
    print("\nsslkit against the reference (kNN@20 and linear top-1: does sslkit match, >=?)")
    for method, verdict in compared.items():
        finetune = ""
        if "finetune_matches" in verdict:
            finetune = f"  fine-tune@10% {'yes' if verdict['finetune_matches'] else 'no'}"
        print(
            f"{method:<12} images/s {verdict['speed_ratio']:.2f}x  "
            f"kNN@20 {'yes' if verdict['knn_matches'] else 'no'}  "
            f"linear {'yes' if verdict['linear_matches'] else 'no'}{finetune}"
        )


def _finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=1, help="pretraining epochs of every row")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of both rows (initialisation, order, views)"
    )
    parser.add_argument(
        "--limit-train", type=int, help="a class-balanced subset of the train split"
    )
    parser.add_argument("--limit-test", type=int, help="a class-balanced subset of the test split")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--reference-channels-last",
        action="store_true",
        help="run the reference's ResNet in sslkit's channels-last weight layout rather than "
        "torchvision's default (contiguous), which lightly's examples use",
    )
    parser.add_argument(
        "--eval",
        nargs="+",
        default=[],
        metavar="eval.KEY=VALUE",
        help="evaluation settings of both rows, for the protocols a preset runs (e.g. "
        "eval.finetune.min_steps=20 for a quick check)",
    )
    args = parser.parse_args()
    for override in args.eval:
        if not override.startswith("eval.") or "=" not in override:
            parser.error(
                f"--eval takes evaluation overrides eval.KEY=VALUE, which both rows share; got "
                f"{override!r}"
            )
    for name in ("epochs", "batch", "limit_train", "limit_test"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    source = load_data(args.limit_train, args.limit_test)
    data = "fashion_mnist" if source is None else f"{source.name} (Fashion-MNIST not installed)"
    print(
        f"data: {data}; {args.epochs} epoch(s), batch {args.batch}, seed {args.seed}; "
        f"reference layout {'channels-last' if args.reference_channels_last else 'contiguous'}; "
        f"{cpu_name()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    rows = [row for method in args.methods for row in run_method(method, args, source)]
    compared = comparison(rows)
    print_report(rows, compared)
    if args.json:
        document = {
            "data": data,
            "epochs": args.epochs,
            "batch": args.batch,
            "limit_train": args.limit_train,
            "limit_test": args.limit_test,
            "cpu": cpu_name(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "reference_channels_last": args.reference_channels_last,
            "rows": rows,
            "comparison": compared,
        }
        Path(args.json).write_text(json.dumps(_finite_or_none(document), indent=2))


if __name__ == "__main__":
    main()
