"""Linear probe: a linear classifier trained on frozen, cached features.

The probe is ``BatchNorm1d(affine=False)`` followed by ``Linear``: the parameter-free
normalisation puts features of every encoder on the same scale, so one optimiser setting
serves all methods and the probe measures linear separability rather than feature scale
(MAE's linear-probing recipe). Training runs on feature tensors held in memory and never
calls the backbone, so a 100-epoch probe costs seconds, not a pass over the images per epoch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.data.subsets import holdout_split
from sslkit.eval.metrics import check_labels, classification_metrics, multilabel_metrics


class LinearProbe(nn.Module):
    """``BatchNorm1d(dim, affine=False)`` + ``Linear(dim, num_classes)``; returns logits.

    The linear layer starts from weights drawn from N(0, 0.01^2) and zero bias (the DINO
    and MAE probes' initialisation), drawn from ``generator`` when one is given so that
    building a probe does not consume the global random stream.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        multilabel: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.multilabel = multilabel
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.linear = nn.utils.skip_init(nn.Linear, dim, num_classes)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 0.01, generator=generator)
            self.linear.bias.zero_()

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.norm(features))

    def scores(self, features: Tensor, *, batch_size: int = 8192) -> Tensor:
        """Class probabilities ``(N, num_classes)`` on the CPU, computed in eval mode.

        Softmax for a single-label probe, per-class sigmoid for a multi-label one, so that
        :func:`~sslkit.eval.metrics.multilabel_metrics` can threshold them. The module's
        train/eval mode is restored afterwards.
        """
        was_training = self.training
        device = self.linear.weight.device
        self.eval()
        try:
            with torch.inference_mode():
                logits = torch.cat(
                    [
                        self(chunk.to(device, torch.float32)).cpu()
                        for chunk in features.split(batch_size)
                    ]
                    or [torch.zeros(0, self.linear.out_features)]
                )
        finally:
            self.train(was_training)
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=1)


def fit_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    *,
    num_classes: int,
    multilabel: bool = False,
    epochs: int = 100,
    batch_size: int = 512,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Train a :class:`LinearProbe` on cached features and return it in eval mode.

    Cross-entropy on class ids ``(N,)`` for single-label problems, BCE-with-logits on
    multi-hot ``(N, num_classes)`` targets for multi-label ones. SGD with momentum 0.9 and a
    per-step cosine decay of ``lr`` to 0 over all epochs; batches are near-equal slices of one random
    permutation per epoch, none smaller than 2 samples (BatchNorm needs 2). Initialisation and shuffling draw from a generator seeded with
    ``seed`` and never touch the global random stream, so the same inputs and seed give the same probe.

    These defaults are the linear-probe protocol's (:class:`~sslkit.eval.LinearProtocol` takes
    them from here): ``lr=0.1`` (batch 512) converges within 100 epochs on BatchNorm-normalised
    features, to within a fraction of a point of an exactly solved logistic regression.
    """
    if train_features.ndim != 2:
        raise ValueError(
            f"train_features must be 2-D (N, D), got shape {tuple(train_features.shape)}"
        )
    num_samples, dim = train_features.shape
    if num_samples < 2:
        raise ValueError(f"the linear probe needs at least 2 training samples, got {num_samples}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (BatchNorm statistics), got {batch_size}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    targets = check_labels(
        train_labels,
        num_samples=num_samples,
        num_classes=num_classes,
        multilabel=multilabel,
        name="train_labels",
    )

    generator = torch.Generator().manual_seed(seed)
    probe = LinearProbe(dim, num_classes, multilabel=multilabel, generator=generator)
    probe.to(device).train()
    features = train_features.detach().to(device, torch.float32)
    targets = targets.to(device)

    num_batches = max(1, min(math.ceil(num_samples / batch_size), num_samples // 2))
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * num_batches)
    loss_fn = F.binary_cross_entropy_with_logits if multilabel else F.cross_entropy
    for _ in range(epochs):
        permutation = torch.randperm(num_samples, generator=generator).to(device)
        for batch in permutation.tensor_split(num_batches):
            loss = loss_fn(probe(features[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return probe.eval()


def select_probe_settings(
    train_features: Tensor,
    train_labels: Tensor,
    *,
    grid: Sequence[tuple[float, float]],
    val_fraction: float,
    num_classes: int,
    multilabel: bool = False,
    device: str | torch.device = "cpu",
    **settings: Any,
) -> dict:
    """Pick ``(lr, weight_decay)`` from ``grid`` on a validation split carved from the train set.

    A class-balanced ``val_fraction`` of the training samples is held out (see
    :func:`~sslkit.data.subsets.holdout_split`), a probe is trained on the rest for every grid
    point, and the point with the best validation top-1 (mAP for multi-label) wins, the first
    one on ties. Only the training data is used: the test split never influences the choice.
    ``settings`` are the other :func:`fit_linear_probe` arguments (``epochs``, ``batch_size``,
    ``seed``); ``seed`` also fixes the validation split.

    Returns ``{"lr", "weight_decay", "val_fraction", "num_val", "metric", "val_scores"}`` where
    ``val_scores`` lists ``{"lr", "weight_decay", <metric>}`` for every grid point.
    """
    if not grid:
        raise ValueError("the hyper-parameter grid is empty")
    seed = settings.get("seed", inspect.signature(fit_linear_probe).parameters["seed"].default)
    fit_index, val_index = holdout_split(train_labels, val_fraction, seed=seed)
    if len(fit_index) < 2:
        raise ValueError(
            f"holding out eval.linear.val_fraction={val_fraction} of {len(train_labels)} "
            "training samples leaves fewer than 2 to fit the probe; use a larger label "
            "fraction or a smaller val_fraction, or drop the lr/weight_decay grid"
        )
    metric = "mAP" if multilabel else "top1"
    val_labels = train_labels[val_index]
    val_scores = []
    for lr, weight_decay in grid:
        probe = fit_linear_probe(
            train_features[fit_index],
            train_labels[fit_index],
            num_classes=num_classes,
            multilabel=multilabel,
            lr=lr,
            weight_decay=weight_decay,
            device=device,
            **settings,
        )
        scores = probe.scores(train_features[val_index])
        if multilabel:
            value = multilabel_metrics(scores, val_labels)[metric]
        else:
            value = classification_metrics(scores, val_labels, num_classes)[metric]
        val_scores.append({"lr": lr, "weight_decay": weight_decay, metric: value})
    ranked = [-math.inf if math.isnan(row[metric]) else row[metric] for row in val_scores]
    best = val_scores[ranked.index(max(ranked))]
    return {
        "lr": best["lr"],
        "weight_decay": best["weight_decay"],
        "val_fraction": val_fraction,
        "num_val": len(val_index),
        "metric": metric,
        "val_scores": val_scores,
    }
