"""SwAV (Caron et al. 2020): online clustering; each crop predicts the cluster codes that
Sinkhorn-Knopp assigns to another crop of the same image, over the global batch."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules.heads import SwaVProjectionHead
from lightly.models.utils import concat_all_gather
from torch import Tensor, nn

from sslkit.distributed import is_distributed, rank, world_size
from sslkit.methods.base import SSLMethod
from sslkit.methods.dino import crops_by_size
from sslkit.models.backbones import Backbone


class Prototypes(nn.Module):
    """``count`` prototypes of width ``dim``, unit vectors (:meth:`normalize` before each step),
    scoring a batch of L2-normalised embeddings by their cosine similarity to each.

    lightly's ``SwaVPrototypes`` is a linear layer with a bias, so its scores are not cosine
    similarities, and it freezes itself by switching ``requires_grad``, which data-parallel
    training does not allow after its start; here the layer has no bias (as in SwAV) and the
    method drops the prototypes' gradient while they are frozen.
    """

    def __init__(self, dim: int, count: int) -> None:
        super().__init__()
        self.layer = nn.Linear(dim, count, bias=False)

    @torch.no_grad()
    def normalize(self) -> None:
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1))

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.layer(embeddings)


class FeatureQueue(nn.Module):
    """The embeddings of the global crops of the last ``size`` images, one queue per global
    crop, gathered from every process in rank order so that every process holds the same queue
    (and a checkpoint, written by one process, holds everyone's). ``filled`` counts the rows
    written, up to ``size``. Process ``r`` of ``W`` scores its slice ``r`` of ``W`` of the queue,
    so the codes' columns over all processes are the global batch and the whole queue, as on
    one process."""

    def __init__(self, size: int, crops: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("embeddings", torch.zeros(crops, size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def is_full(self) -> bool:
        return int(self.filled) >= self.size

    def local_slice(self) -> Tensor:
        """``(crops, size / W, dim)``: this process's share of the queue."""
        per_process = self.size // world_size()
        start = rank() * per_process
        return self.embeddings[:, start : start + per_process]

    @torch.no_grad()
    def push(self, embeddings: list[Tensor]) -> None:
        """Put the newest embeddings of each global crop (gathered) in front, dropping the
        oldest."""
        new = torch.stack([e.detach() for e in embeddings]).to(self.embeddings.dtype)
        if is_distributed():
            new = torch.stack([concat_all_gather(e.contiguous()) for e in new.unbind(0)])
        count = new.shape[1]
        if count > self.size:
            raise ValueError(
                f"{count} embeddings per crop cannot enter a queue of {self.size}: set "
                f"method.queue_size to a multiple of the global batch ({count}) or 0."
            )
        self.embeddings[:, count:] = self.embeddings[:, :-count].clone()
        self.embeddings[:, :count] = new
        self.filled.fill_(min(self.size, int(self.filled) + count))


class SwAV(SSLMethod):
    """Backbone + projection MLP + prototypes, trained by swapped prediction across crops.

    The views come grouped by size (multi-crop: the first ``global_crops`` are global, the rest
    local). Each crop's embedding (L2-normalised output of the projection MLP, lightly's
    ``SwaVProjectionHead``) is scored against ``n_prototypes`` unit-norm prototypes. For every
    global crop, Sinkhorn-Knopp (``sinkhorn_iterations`` steps at ``sinkhorn_epsilon``, over the
    global batch: the row sums are all-reduced across processes) turns its scores into soft
    cluster codes, which every other crop predicts with a softmax at ``temperature``; the loss
    is the mean cross-entropy (lightly's ``SwaVLoss``).

    The prototypes are renormalised before every step and get no update in the first
    ``freeze_prototypes_steps`` optimiser steps (SwAV freezes them for the first epoch). With
    ``queue_size`` > 0, the global crops' embeddings of the last ``queue_size`` images join the
    batch in the Sinkhorn step (not in the loss) once the queue is full and the epoch reaches
    ``queue_start_epoch``: more samples for the equipartition when the batch is small.

    Args:
        backbone: the encoder.
        projection_dim: width of the embeddings (128 in SwAV).
        hidden_dim: hidden width of the projection MLP (2048 in SwAV).
        n_prototypes: number of prototypes (3000 in SwAV for ImageNet).
        temperature: softmax temperature of the predictions (0.1 in SwAV).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3 in SwAV).
        sinkhorn_epsilon: the codes' entropy regularisation (0.05 in SwAV).
        global_crops: how many of the views are global crops (2 in SwAV).
        freeze_prototypes_steps: optimiser steps at the start without a prototype update.
        queue_size: images whose embeddings the queue holds (0: no queue); a multiple of the
            global batch and of the number of processes.
        queue_start_epoch: the first epoch in which a full queue is used.
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        projection_dim: int = 128,
        hidden_dim: int = 2048,
        n_prototypes: int = 3000,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        global_crops: int = 2,
        freeze_prototypes_steps: int = 313,
        queue_size: int = 0,
        queue_start_epoch: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        for name, value in (
            ("projection_dim", projection_dim),
            ("hidden_dim", hidden_dim),
            ("n_prototypes", n_prototypes),
            ("sinkhorn_iterations", sinkhorn_iterations),
            ("global_crops", global_crops),
        ):
            if value < 1:
                raise ValueError(f"method.{name} must be >= 1, got {value}.")
        for name, value in (("temperature", temperature), ("sinkhorn_epsilon", sinkhorn_epsilon)):
            if not value > 0:
                raise ValueError(f"method.{name} must be > 0, got {value}.")
        for name, value in (
            ("freeze_prototypes_steps", freeze_prototypes_steps),
            ("queue_size", queue_size),
            ("queue_start_epoch", queue_start_epoch),
        ):
            if value < 0:
                raise ValueError(f"method.{name} must be >= 0, got {value}.")
        self.global_crops = global_crops
        self.freeze_prototypes_steps = freeze_prototypes_steps
        self.queue_start_epoch = queue_start_epoch
        self.projector = SwaVProjectionHead(backbone.feature_dim, hidden_dim, projection_dim)
        self.prototypes = Prototypes(projection_dim, n_prototypes)
        self.criterion = SwaVLoss(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            sinkhorn_epsilon=sinkhorn_epsilon,
            sinkhorn_gather_distributed=True,
        )
        self.queue = FeatureQueue(queue_size, global_crops, projection_dim) if queue_size else None

    def on_fit_start(self) -> None:
        self.check_queue_size()

    def check_queue_size(self) -> None:
        """Stop before training when the queue does not hold whole global batches or cannot be
        split evenly over the processes."""
        if self.queue is None:
            return
        per_step = self.batch_size * self.trainer.world_size
        if self.queue.size % per_step:
            fits = max(per_step, self.queue.size // per_step * per_step)
            raise ValueError(
                f"method.queue_size={self.queue.size} is not a multiple of the {per_step} images "
                f"of a global batch (data.batch_size={self.batch_size} x "
                f"{self.trainer.world_size} process(es)); set method.queue_size={fits}."
            )

    def embed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled features and L2-normalised embeddings of a batch of crops of one size."""
        features = self.backbone(images)
        return features, F.normalize(self.projector(features), dim=1)

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        global_views, local_views = crops_by_size(views, self.global_crops, "SwAV")
        count = len(global_views[0])
        self.prototypes.normalize()
        features, global_embeddings = self.embed(torch.cat(global_views))
        high = self.prototypes(global_embeddings).split(count)
        low = []
        if local_views:
            _, local_embeddings = self.embed(torch.cat(local_views))
            low = list(self.prototypes(local_embeddings).split(count))
        queued = None
        if (
            self.queue is not None
            and self.queue.is_full()
            and self.current_epoch >= self.queue_start_epoch
        ):
            with torch.no_grad():
                queued = [self.prototypes(q) for q in self.queue.local_slice()]
        loss = self.criterion(list(high), low, queued).squeeze(0)  # lightly's is of shape (1,)
        if self.queue is not None:
            self.queue.push(list(global_embeddings.split(count)))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[:count], targets)

    def on_after_backward(self) -> None:
        """No prototype update in the first ``freeze_prototypes_steps`` optimiser steps."""
        if self.global_step < self.freeze_prototypes_steps:
            for parameter in self.prototypes.parameters():
                parameter.grad = None
