"""Fine-tuning: the pretrained encoder and a linear head trained end to end with labels.

Masked-modelling methods (MAE) are judged by it: their frozen features are far behind their
fine-tuned accuracy. Like the linear probe it runs on 100 % of the training labels and on
seeded, class-balanced subsets (the low-shot columns), single- and multi-label, and reports the
same metrics, under ``finetune/<metric>[@<p>%]``. Every fine-tuning starts from a fresh copy of
the encoder. It costs a training run per label fraction, so it is off unless asked for
(``eval=[knn,linear,finetune]``).

The labelled training images of a subset are held in memory as the evaluation's un-augmented,
normalised loader gives them, and augmented per batch on the training device with a random
resized crop and a horizontal flip (:mod:`sslkit.augment.batched`).
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.augment.batched import ViewSpec, render_view, sample_view
from sslkit.data.subsets import label_fraction_subset
from sslkit.eval.metrics import classification_metrics, multilabel_metrics
from sslkit.run.results import fraction_label

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class FinetuneProtocol:
    """The fine-tuning protocol's settings, all written to ``results.json``.

    Args:
        epochs: passes over each label subset, at least ``min_steps`` optimiser steps (a 1 %
            subset would otherwise be fit in a handful of steps).
        min_steps: the fewest optimiser steps of a fine-tuning, whatever the subset's size.
        batch_size: images per step.
        optimizer: ``adamw`` (ViTs, MAE's recipe) or ``sgd`` (momentum 0.9).
        lr: learning rate of the head (and of the last layer group), per 256 images.
        weight_decay: decoupled weight decay of weights (not of norms, biases, position
            embeddings and class tokens).
        layer_decay: for a ViT, each block's rate is ``layer_decay`` times the next one's
            (BEiT/MAE's layer-wise decay); 1 keeps one rate everywhere. Other encoders take one
            rate.
        warmup_epochs: linear warmup of the rate, then cosine decay to 0.
        min_scale: smallest crop of the random resized crop, as a fraction of the image area.
        label_fractions: fractions of the training labels, one fine-tuning each (1 %, 10 %:
            the low-shot columns; class-balanced, nested subsets fixed by ``seed``).
        seed: seed of the subsets, the head's initialisation, the order and the crops.
    """

    epochs: int = 10
    min_steps: int = 200
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    warmup_epochs: int = 1
    min_scale: float = 0.5
    label_fractions: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.01])
    seed: int = 0

    def __post_init__(self) -> None:
        self.label_fractions = [float(f) for f in self.label_fractions]
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"eval.finetune.optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.warmup_epochs < 0 or self.min_steps < 0:
            raise ValueError(
                "eval.finetune needs epochs >= 1, batch_size >= 1 and warmup_epochs >= 0, got "
                f"{self.epochs}, {self.batch_size} and {self.warmup_epochs}."
            )
        if not self.lr > 0 or self.weight_decay < 0 or not 0 < self.layer_decay <= 1:
            raise ValueError(
                "eval.finetune needs lr > 0, weight_decay >= 0 and layer_decay in (0, 1], got "
                f"{self.lr}, {self.weight_decay} and {self.layer_decay}."
            )
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"eval.finetune.min_scale must lie in (0, 1], got {self.min_scale}.")
        fractions = self.label_fractions
        if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
            raise ValueError(
                "eval.finetune.label_fractions must be a non-empty list of fractions in (0, 1], "
                f"got {fractions}"
            )


class Classifier(nn.Module):
    """The encoder's pooled features through a linear head."""

    def __init__(self, encoder: nn.Module, dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.encoder(images))


_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_groups(model: Classifier, protocol: FinetuneProtocol, lr: float) -> list[dict]:
    """Parameter groups: layer-wise rates for a ViT encoder (``model.blocks``), one rate
    otherwise; no weight decay on 1-D parameters and on the names the encoder's
    ``no_weight_decay()`` gives (timm's convention)."""
    vit = getattr(model.encoder, "model", None)
    depth = len(vit.blocks) if vit is not None and hasattr(vit, "blocks") else None
    exempt = set()
    for module_name, module in model.named_modules():
        if hasattr(module, "no_weight_decay"):
            prefix = f"{module_name}." if module_name else ""
            exempt |= {prefix + name for name in module.no_weight_decay()}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        scale = 1.0
        if depth is not None and protocol.layer_decay < 1 and name.startswith("encoder."):
            match = _BLOCK.search(name)
            if match:
                layer = int(match.group(1)) + 1
            elif any(key in name for key in ("patch_embed", "cls_token", "pos_embed", "reg_token")):
                layer = 0
            else:  # the final norm
                layer = depth + 1
            scale = protocol.layer_decay ** (depth + 1 - layer)
        decay = 0.0 if parameter.ndim <= 1 or name in exempt else protocol.weight_decay
        groups.setdefault((scale, decay), []).append(parameter)
    return [
        {"params": params, "lr": lr * scale, "base_lr": lr * scale, "weight_decay": decay}
        for (scale, decay), params in groups.items()
    ]


def labelled_split(datamodule: Any, split: str) -> tuple[Tensor, Tensor]:
    """Every labelled image of ``split`` (un-augmented, normalised, as the evaluation sees
    them) and its label, in the evaluation's order."""
    images, labels = [], []
    for batch_images, batch_labels in datamodule.eval_dataloader(split):
        images.append(batch_images)
        labels.append(batch_labels)
    return torch.cat(images), torch.cat(labels)


def finetune(
    encoder: nn.Module,
    feature_dim: int,
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    multilabel: bool,
    protocol: FinetuneProtocol,
    device: torch.device,
) -> Classifier:
    """A copy of ``encoder`` with a linear head, trained end to end on ``images``/``labels``."""
    generator = torch.Generator().manual_seed(protocol.seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(protocol.seed)  # the head's initialisation
    model = Classifier(copy.deepcopy(encoder), feature_dim, num_classes).to(device)
    torch.set_rng_state(torch_state)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    lr = protocol.lr * protocol.batch_size / 256
    groups = layer_groups(model, protocol, lr)
    if protocol.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    steps_per_epoch = max(1, math.ceil(len(images) / protocol.batch_size))
    epochs = max(protocol.epochs, math.ceil(protocol.min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    warmup = min(protocol.warmup_epochs * steps_per_epoch, total - 1)
    spec = crop_and_flip(protocol.min_scale)
    height, width = images.shape[-2:]
    model.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), protocol.batch_size):
            index = order[start : start + protocol.batch_size]
            if len(index) < 2 and len(images) >= 2:
                continue  # BatchNorm needs two samples
            batch = images[index].to(device)
            params = sample_view(spec, len(index), height, width, generator)
            batch = render_view(batch, params, height)
            target = labels[index].to(device)
            factor = (
                (step + 1) / (warmup + 1)
                if step < warmup
                else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            )
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            logits = model(batch)
            if multilabel:
                loss = F.binary_cross_entropy_with_logits(logits, target.float())
            else:
                loss = F.cross_entropy(logits, target)
            if not torch.isfinite(loss):
                raise ValueError("fine-tuning diverged (non-finite loss): lower eval.finetune.lr.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return model.eval()


def crop_and_flip(min_scale: float) -> ViewSpec:
    """The fine-tuning augmentation: random resized crop from ``min_scale`` of the area and a
    horizontal flip, nothing else."""
    return ViewSpec(
        min_scale=min_scale, cj_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
        hue=0.0, gray_prob=0.0, blur_prob=0.0, sigmas=(0.1, 2.0), solarize_prob=0.0,
        hf_prob=0.5, vf_prob=0.0, rr_prob=0.0, rr_degrees=None,
    )  # fmt: skip


@torch.no_grad()
def predict(model: Classifier, images: Tensor, multilabel: bool, device: torch.device) -> Tensor:
    scores = []
    for start in range(0, len(images), 512):
        logits = model(images[start : start + 512].to(device)).float().cpu()
        scores.append(logits.sigmoid() if multilabel else logits.softmax(dim=1))
    return torch.cat(scores)


def run_finetune(
    encoder: nn.Module,
    datamodule: Any,
    protocol: FinetuneProtocol,
    device: torch.device,
    feature_dim: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``encoder`` on each label fraction of the train split and score it on the
    test split: ``{"metrics", "per_class", "settings", "seconds"}``, keyed as the linear
    probe's (``finetune/top1``, ``finetune/top1@10%``, ...)."""
    start = time.perf_counter()
    multilabel = bool(getattr(datamodule, "multilabel", False))
    num_classes = datamodule.num_classes
    train_images, train_labels = labelled_split(datamodule, "train")
    if train_images.ndim != 4:
        raise ValueError(
            "eval.finetune augments 2-D images (B, C, H, W); this data gives "
            f"{tuple(train_images.shape[1:])} samples (volumes or clips): leave finetune out of "
            "eval for them."
        )
    test_images, test_labels = labelled_split(datamodule, "test")
    if feature_dim is None:
        feature_dim = int(getattr(encoder, "feature_dim", 0)) or _output_dim(
            encoder, train_images[:2], device
        )
    out: dict[str, Any] = {"metrics": {}, "per_class": {}, "settings": {}}
    for fraction in protocol.label_fractions:
        subset = label_fraction_subset(train_labels, fraction, seed=protocol.seed)
        index = torch.as_tensor(subset, dtype=torch.long)
        model = finetune(
            encoder,
            feature_dim,
            train_images[index],
            train_labels[index],
            num_classes=num_classes,
            multilabel=multilabel,
            protocol=protocol,
            device=device,
        )
        scores = predict(model, test_images, multilabel, device)
        if multilabel:
            metrics = multilabel_metrics(scores, test_labels)
            metrics.pop("threshold", None)
        else:
            metrics = classification_metrics(scores, test_labels, num_classes)
        suffix = "" if fraction == 1.0 else f"@{fraction_label(fraction)}"
        out["per_class"][f"finetune{suffix}"] = metrics.pop("per_class")
        out["metrics"].update({f"finetune/{k}{suffix}": v for k, v in metrics.items()})
        out["settings"][f"finetune{suffix}"] = {
            "protocol": "finetune",
            **asdict(protocol),
            "label_fraction": fraction,
            "num_train": len(index),
        }
    out["seconds"] = time.perf_counter() - start
    return out


@torch.no_grad()
def _output_dim(encoder: nn.Module, images: Tensor, device: torch.device) -> int:
    was_training = encoder.training
    encoder.eval()
    dim = int(encoder(images.to(device)).shape[1])
    encoder.train(was_training)
    return dim
